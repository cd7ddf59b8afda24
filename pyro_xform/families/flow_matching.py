"""Flow matching: a velocity field trained by regression on conditional paths, used as a
continuous normalizing flow with an exact density."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..core import event_shape_of
from ..nn import TimeMLP
from ..schedules import Schedule
from ..schedules import schedule as make_schedule
from ..transforms import ODESettings
from .continuous import ContinuousTimeXform, field_network, resolve_standardize
from .guidance import check_guidance, flagged, guided, with_guidance

__all__ = ["COUPLINGS", "PATHS", "TIME_SAMPLING", "FlowMatching", "gaussian_rate", "ot_pairing"]

#: Probability paths by name.
PATHS = ("condot", "cosine", "vp")
#: Couplings of noise and data within a minibatch.
COUPLINGS = ("independent", "ot")
#: Training-time distributions by name: ``"uniform"``, or ``"ramp"`` with density :math:`2t`.
TIME_SAMPLING = ("uniform", "ramp")


def gaussian_rate(schedule: Schedule, t: Tensor) -> Tensor:
    """The velocity of a path between two standard Gaussians is linear, :math:`r(t)\\,x`,
    with :math:`r = -\\tfrac12 \\tfrac{d}{ds}\\log(\\alpha_s^2 + \\sigma_s^2)` at
    :math:`s = 1 - t`: the marginal field :math:`\\mathbb E[\\dot x_t \\mid x_t]` when data
    and noise are independent :math:`\\mathcal N(0, I)` (zero for the variance-preserving
    ``"cosine"`` and ``"vp"`` paths; :math:`(2t - 1)/(t^2 + (1 - t)^2)` for ``"condot"``).

    Examples:
        >>> from pyro_xform.schedules import CondOT
        >>> gaussian_rate(CondOT(), torch.tensor([0.0, 0.25, 1.0]))
        tensor([-1.0000, -0.8000,  1.0000])
    """
    s = 1 - t
    a, sig = schedule.alpha(s), schedule.sigma(s)
    return -(a * schedule.d_alpha(s) + sig * schedule.d_sigma(s)) / (a**2 + sig**2)


def _column(r: Tensor) -> Tensor:
    """A rate per row (training) as a column; one rate for the batch (an ODE step) as is."""
    return r.unsqueeze(-1) if r.dim() else r


class Velocity(nn.Module):
    """:math:`v(x, t, c)` of a network trained with context dropout; ``guidance`` :math:`w`
    mixes the conditional and unconditional fields, :math:`v_\\varnothing + w (v_c - v_\\varnothing)`.
    With a ``skip`` schedule the field is :math:`r(t)\\,x + v_\\theta` (:func:`gaussian_rate`)."""

    def __init__(
        self,
        net: TimeMLP,
        context: int,
        null_token: bool,
        guidance: float = 1.0,
        skip: Schedule | None = None,
    ) -> None:
        super().__init__()
        self.net, self.context, self.null_token, self.guidance = net, context, null_token, guidance
        self.skip = skip

    def with_guidance(self, guidance: float) -> Velocity:
        """The same field (sharing the network) with guidance scale ``guidance``."""
        return Velocity(self.net, self.context, self.null_token, guidance, self.skip)

    @property
    def has_divergence(self) -> bool:
        return hasattr(self.net, "forward_and_divergence")

    def gaussian(self, x: Tensor, t: Tensor) -> Tensor | float:
        """The Gaussian part :math:`r(t)\\,x` of the field (0 without ``skip``)."""
        return 0.0 if self.skip is None else _column(gaussian_rate(self.skip, t)) * x

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        return self._guided(self.net, x, t, context) + self.gaussian(x, t)

    def forward_and_divergence(self, x: Tensor, t: Tensor, context: Tensor | None = None):
        """The field and its exact divergence (linear in the field, so guidance mixes both)."""
        v, div = self._guided(self.net.forward_and_divergence, x, t, context)
        if self.skip is None:
            return v, div
        rate = gaussian_rate(self.skip, t)
        return v + _column(rate) * x, div + rate * x.shape[-1]

    def _guided(self, net, x, t, context):
        if not self.null_token:
            return net(x, t, context)
        return guided(net, x, t, context, self.guidance)


def ot_pairing(noise: Tensor, data: Tensor) -> Tensor:
    """Reorder ``noise`` so that row ``i`` is paired with ``data[i]`` by the minibatch optimal
    transport plan for the squared Euclidean cost.

    Between two uniform empirical measures of equal size the optimal plan is a permutation
    (Birkhoff–von Neumann), found exactly by the assignment solver.

    Examples:
        >>> noise = torch.tensor([[5.0], [0.0]])
        >>> ot_pairing(noise, torch.tensor([[0.1], [4.9]]))
        tensor([[0.],
                [5.]])

    References:
        Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal
        Transport (Tong et al., 2023, arXiv:2302.00482).
    """
    cost = torch.cdist(noise.detach().flatten(1), data.detach().flatten(1)).pow(2).cpu().numpy()
    rows, cols = linear_sum_assignment(np.asarray(cost, dtype=np.float64))
    order = torch.empty(len(rows), dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return noise[order.to(noise.device)]


class FlowMatching(ContinuousTimeXform):
    """Flow matching: a continuous normalizing flow :math:`\\dot x = v_\\theta(x, t, c)` from
    :math:`x_0 \\sim \\mathcal N(0, I)` at :math:`t = 0` to the data at :math:`t = 1`,
    trained by conditional flow matching (objective ``"cfm"``),

    .. math:: \\mathcal L(\\theta) = \\mathbb E_{t, (x_0, x_1) \\sim \\pi}
        \\big\\| v_\\theta(x_t, t, c) - \\dot x_t \\big\\|^2, \\qquad
        x_t = \\alpha_{1-t} x_1 + \\sigma_{1-t} x_0,

    over a path (``"condot"``: :math:`x_t = t x_1 + (1 - t) x_0`; ``"cosine"``; ``"vp"``)
    and a coupling :math:`\\pi` of noise and data (``"independent"`` or minibatch ``"ot"``).
    Its density is exact (instantaneous change of variables), so it also trains by
    maximum likelihood (``"mle"``), serves as a Pyro prior, or as a guide.

    With ``guidance_dropout`` > 0 the context is dropped at that rate in training, and
    ``model(c, guidance=w)`` samples the classifier-free guided field.

    Args:
        features: event size.
        context: context size.
        hidden, activation, time_features: the velocity network (a :class:`~pyro_xform.nn.TimeMLP`;
            four hidden layers of 128 by default, which measured better than three on the
            2-D sets at equal time and equal on digits and as a posterior estimator,
            ``bench/MEASUREMENTS.md``).
        architecture, channels, attention: the network: ``"auto"`` (a
            :class:`~pyro_xform.nn.TimeUNet` of base width ``channels``, with self-attention
            at its lowest resolution if ``attention``, the default: it measured better on
            Fashion-MNIST, ``bench/MEASUREMENTS.md``; for images of at least 8 x 8; else the
            MLP), ``"mlp"`` or
            ``"image"`` (see :func:`~pyro_xform.families.continuous.field_network`).
        path: ``"condot"``, ``"cosine"`` or ``"vp"``.
        sigma_min: the CondOT path's noise at the data end.
        coupling: ``"independent"`` or ``"ot"``.
        guidance_dropout: probability of training on the null context (classifier-free guidance).
        guidance: default guidance scale :math:`w` (1: plain conditional model).
        ode: the default :class:`~pyro_xform.transforms.ODESettings`; each call may change them.
        **ode_changes: changes to ``ode`` by name (``solver="rk4", steps=8``, ``rtol=1e-6``).
        standardize: learn on standardized data (the density stays that of the data):
            ``True``/``"marginal"`` by the data's mean and standard deviation,
            ``"regression"`` (conditional models) by the least-squares regression of the data
            on the context and the residuals' covariance (see
            :class:`~pyro_xform.transforms.ConditionalStandardize`), ``"channel"`` (images:
            each channel's mean and standard deviation over all its pixels), ``False``, or ``"auto"``
            (default): ``"regression"`` for a conditional model (a plain ``fit`` then gives
            a posterior estimator as good as an NSF's, ``bench/conditional.py``); for an
            unconditional (or guided) one none on images (pixels in :math:`[0, 1]` on their
            own scale measured far better on Fashion-MNIST than standardized ones,
            ``bench/MEASUREMENTS.md``) and ``"marginal"`` on vectors.
        gaussian_skip: the field is :math:`r(t)\\,x + v_\\theta(x, t, c)`, with :math:`r(t)\\,x`
            the exact field from :math:`\\mathcal N(0, I)` to :math:`\\mathcal N(0, I)`
            (:func:`gaussian_rate`) and :math:`v_\\theta` starting at zero: the model starts as
            the Gaussian fit of the standardized data and learns only the departure from it.
            With ``standardize="regression"`` it starts as the linear-Gaussian fit of
            :math:`x \\mid c`, exact for a linear-Gaussian posterior. Off by default: at full
            budgets it lowers the test NLL, but on concentrated multi-modal data the network
            must cancel :math:`r(t)\\,x` near the data end, which slows short runs of small
            fields (``bench/MEASUREMENTS.md``).
        film: modulate every hidden layer of the MLP field by the time and context (see
            :class:`~pyro_xform.nn.TimeMLP`), so the field can change its shape with time
            at every depth. ``None`` (default): on for the MLP (vectors), off for the U-Net
            (which embeds the time in every block itself). It costs about a third more per
            step and measured better at equal steps on every 2-D set tried and equal on
            digits (``bench/MEASUREMENTS.md``).
        dropout: the probability of dropping each hidden unit of the field network in
            training (:class:`~pyro_xform.nn.TimeMLP`, or the U-Net's residual blocks). A
            regularizer for a large field on few data, which otherwise memorizes its
            training points (digits: ``bench/MEASUREMENTS.md``); 0 (default) on plentiful data.
        time_sampling: the training times: ``"uniform"``, or ``"ramp"`` with density
            :math:`2t`, twice the effort at the data end as at the noise end. Sharp
            low-dimensional data gains from it, high-dimensional data loses
            (``bench/MEASUREMENTS.md``), so it is an option.

    Examples:
        >>> import torch, pyro_xform
        >>> fm = pyro_xform.FlowMatching(features=2, hidden=(32, 32))
        >>> d = fm(solver="rk4", steps=4)
        >>> x = d.sample((3,))
        >>> d.log_prob(x).shape, d.log_prob_kind
        (torch.Size([3]), 'exact')

    References:
        Flow Matching for Generative Modeling (Lipman, Chen, Ben-Hamu, Nickel, Le, 2022,
        arXiv:2210.02747). Improving and Generalizing Flow-Based Generative Models with
        Minibatch Optimal Transport (Tong et al., 2023, arXiv:2302.00482). Classifier-Free
        Diffusion Guidance (Ho, Salimans, 2022, arXiv:2207.12598).
    """

    default_objective = "cfm"

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (128, 128, 128, 128),
        activation: str = "silu",
        time_features: int = 16,
        path: str = "condot",
        sigma_min: float = 0.0,
        coupling: str = "independent",
        guidance_dropout: float = 0.0,
        guidance: float = 1.0,
        ode: ODESettings | dict | None = None,
        standardize: bool | str = "auto",
        gaussian_skip: bool = False,
        film: bool | None = None,
        dropout: float = 0.0,
        time_sampling: str = "uniform",
        architecture: str = "auto",
        channels: int = 32,
        attention: bool = True,
        **ode_changes: Any,
    ) -> None:
        if time_sampling not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLING}, got {time_sampling!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        check_guidance(context, guidance_dropout, guidance, standardize)
        schedule = make_schedule(path, **({"sigma_min": sigma_min} if path == "condot" else {}))
        image = len(event_shape_of(features)) == 3
        standardize = resolve_standardize(standardize, context, guided=guidance_dropout > 0, image=image)
        null_token = guidance_dropout > 0
        net = field_network(
            features,
            context + int(null_token),
            architecture=architecture,
            hidden=hidden,
            activation=activation,
            time_features=time_features,
            zero_last=gaussian_skip,
            film=film,
            channels=channels,
            attention=attention,
            dropout=dropout,
        )
        super().__init__(
            features,
            context,
            field=Velocity(net, context, null_token, guidance, schedule if gaussian_skip else None),
            time=(0.0, 1.0 - schedule.eps),
            ode=ODESettings.of(ode).replace(**ode_changes),
            standardize=standardize,
        )
        self.schedule = schedule
        self.coupling = coupling
        self.guidance_dropout = guidance_dropout
        self.time_sampling = time_sampling

    @property
    def network(self) -> nn.Module:
        """The velocity network :math:`v_\\theta(x, t, c)`."""
        return self.ode.field.net

    def _field(self, guidance: float | None = None) -> nn.Module:
        return with_guidance(self.ode.field, guidance, self.guidance_dropout)

    def training_times(self, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``n`` times for the loss: uniform on :math:`[0, 1)`, or with density :math:`2t`
        (``"ramp"``), which spends twice the effort at the data end, where the field of
        sharp data is hardest, as at the noise end, where it is nearly linear."""
        u = torch.rand(n, dtype=dtype, device=device)
        return (u.sqrt() if self.time_sampling == "ramp" else u) * (1 - self.schedule.eps)

    def cfm_loss(self, batch: Tensor, context: Tensor | None = None) -> Tensor:
        """The conditional flow-matching loss summed over the batch (one draw of
        :math:`t` and :math:`x_0` per row)."""
        x1, _ = self.standardizer.inverse_and_ladj(self.flatten(batch), context)
        x0 = torch.randn_like(x1)
        if self.coupling == "ot":
            x0 = ot_pairing(x0, x1)
        t = self.training_times(x1.shape[0], x1.dtype, x1.device)
        s = (1 - t)[:, None]
        sched = self.schedule
        xt = sched.alpha(s) * x1 + sched.sigma(s) * x0
        target = -(sched.d_alpha(s) * x1 + sched.d_sigma(s) * x0)
        if self.ode.field.null_token:
            context = flagged(context, self.guidance_dropout)
        v = self.network(xt, t, context) + self.ode.field.gaussian(xt, t)
        return (v - target).pow(2).sum()
