"""Score-based diffusion: a noise predictor trained by denoising score matching, whose
probability-flow ODE gives an exact density and whose reverse SDE or DDIM give samples."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core import event_shape_of, is_count
from ..nn import TimeMLP
from ..schedules import Schedule
from ..schedules import schedule as make_schedule
from ..transforms import ODESettings
from . import diffusion_sampling
from .continuous import ContinuousTimeXform, field_network, resolve_standardize
from .guidance import check_guidance, flagged, guided, with_guidance

__all__ = ["SAMPLERS", "SDES", "TIME_SAMPLING", "Diffusion"]

#: Forward SDEs by name: Karras et al.'s (a VE path with their preconditioning and
#: training), variance preserving, variance exploding.
SDES = ("edm", "vp", "ve")
#: Samplers of :meth:`Diffusion.sample`.
SAMPLERS = ("ode", "heun", "stochastic", "dpm", "sde", "ddim")
#: How the DSM loss draws its times: uniformly, by likelihood weighting (importance
#: sampled), or with log-normal noise levels (Karras et al.).
TIME_SAMPLING = ("uniform", "likelihood", "lognormal")
#: Fixed-step samplers' default number of steps.
DEFAULT_STEPS = {"heun": 18, "stochastic": 18, "dpm": 20, "sde": 100, "ddim": 100}


class ProbabilityFlow(nn.Module):
    """The probability-flow drift :math:`\\dot x = f(s)x - \\tfrac12 g(s)^2 \\nabla\\log p_s(x)`
    with the score :math:`-\\varepsilon_\\theta(x, s, c) / \\sigma_s`. With ``gaussian_skip``
    the noise prediction is :math:`\\sigma_s c_{in}(s)\\,u + \\mathrm{net}(u, s, c)` at
    :math:`u = c_{in}(s)\\,x`: the first term is :math:`\\mathbb E[\\varepsilon \\mid x_s]`
    for standard Gaussian data, so the network learns the departure from it. With
    ``output_scale`` the network's output is multiplied by :math:`c_{out}(s) = \\alpha_s
    c_{in}(s) = 1/\\sqrt{1 + \\tilde\\sigma_s^2}`: together these are Karras et al.'s
    preconditioning (:math:`c_{skip}, c_{out}, c_{in}`, data of unit variance) written for
    a noise prediction, so the network's target has unit variance at every noise level."""

    def __init__(
        self,
        net: TimeMLP,
        schedule: Schedule,
        gaussian_skip: bool = False,
        output_scale: bool = False,
        null_token: bool = False,
        guidance: float = 1.0,
    ) -> None:
        super().__init__()
        self.net, self.schedule, self.gaussian_skip = net, schedule, gaussian_skip
        self.output_scale = output_scale
        # Classifier-free guidance (see families/guidance.py): the model's context is flagged
        # (and mixed with the null one at w != 1) on its way to the network.
        self.null_token, self.guidance = null_token, guidance

    def with_guidance(self, guidance: float) -> ProbabilityFlow:
        """The same drift (sharing the network) with guidance scale ``guidance``."""
        return ProbabilityFlow(
            self.net, self.schedule, self.gaussian_skip, self.output_scale, self.null_token, guidance
        )

    def _net(self, net, u: Tensor, s: Tensor, context: Tensor | None, as_is: bool = False):
        if not self.null_token or as_is:
            return net(u, s, context)
        return guided(net, u, s, context, self.guidance)

    def out_scale(self, s: Tensor) -> Tensor:
        """:math:`c_{out}(s) = \\alpha_s c_{in}(s)`, the scale of the network's output."""
        return self.schedule.alpha(s) * self.input_scale(s)

    def skip_gain(self, s: Tensor) -> Tensor:
        """:math:`\\sigma_s c_{in}(s)`, the Gaussian noise prediction per unit of :math:`u`."""
        return self.schedule.sigma(s) * self.input_scale(s)

    def input_scale(self, s: Tensor) -> Tensor:
        """:math:`c_{in}(s) = 1 / \\sqrt{\\alpha_s^2 + \\sigma_s^2}`, which keeps the network's
        input at unit scale."""
        return torch.rsqrt(self.schedule.alpha(s) ** 2 + self.schedule.sigma(s) ** 2)

    def noise(
        self, x: Tensor, s: Tensor, context: Tensor | None = None, *, network_context: bool = False
    ) -> Tensor:
        """:math:`\\varepsilon_\\theta(x, s, c)`; the network sees :math:`c_{in}(s)\\,x`.
        With ``network_context`` the context is already the network's own (a guided model's
        training context, flag appended) and is passed on as it is."""
        scale = self.input_scale(s)
        if s.dim():
            scale = scale[..., None]
        u = x * scale
        noise = self._net(self.net, u, s, context, network_context)
        if self.output_scale:
            out = self.out_scale(s)
            noise = noise * (out[..., None] if s.dim() else out)
        if self.gaussian_skip:
            gain = self.skip_gain(s)
            noise = noise + (gain[..., None] if s.dim() else gain) * u
        return noise

    def forward(self, x: Tensor, s: Tensor, context: Tensor | None = None) -> Tensor:
        sched = self.schedule
        return sched.drift(s) * x + 0.5 * sched.g2(s) / sched.sigma(s) * self.noise(x, s, context)

    @property
    def has_divergence(self) -> bool:
        return hasattr(self.net, "forward_and_divergence")

    def forward_and_divergence(self, x: Tensor, s: Tensor, context: Tensor | None = None):
        """The drift and its exact divergence, :math:`D f(s) + \\tfrac{g^2}{2\\sigma_s} c_{in}
        \\nabla_u \\cdot \\varepsilon_\\theta(u)` at :math:`u = c_{in} x` (one time for the batch)."""
        sched = self.schedule
        scale = self.input_scale(s)
        u = x * scale
        noise, div = self._net(self.net.forward_and_divergence, u, s, context)
        if self.output_scale:
            out = self.out_scale(s)
            noise, div = noise * out, div * out
        if self.gaussian_skip:
            gain = self.skip_gain(s)
            noise, div = noise + gain * u, div + gain * x.shape[-1]
        k = 0.5 * sched.g2(s) / sched.sigma(s)
        drift = sched.drift(s)
        return drift * x + k * noise, drift * x.shape[-1] + k * scale * div


class Diffusion(ContinuousTimeXform):
    """Score-based diffusion. The network predicts the noise of :math:`x_s = \\alpha_s x +
    \\sigma_s \\varepsilon` and is trained by denoising score matching (objective ``"dsm"``),

    .. math:: \\mathcal L(\\theta) = \\mathbb E_{s, \\varepsilon}\\, w(s)
        \\big\\| \\varepsilon_\\theta(\\alpha_s x + \\sigma_s \\varepsilon, s, c) - \\varepsilon \\big\\|^2 .

    As a distribution it is the probability-flow ODE
    :math:`\\dot x = f(s) x + \\tfrac12 g(s)^2 \\varepsilon_\\theta / \\sigma_s` from the
    Gaussian base at :math:`s = 1` to the data at :math:`s = \\epsilon`, with an exact
    density. :meth:`sample` offers fixed-step samplers: Karras et al.'s Heun and
    stochastic samplers, DPM-Solver++(2M), reverse-SDE Euler–Maruyama and DDIM.

    ``sde="edm"`` (the default) is Karras et al.'s design (EDM) on standardized data:
    a VE path :math:`x_s = x + \\sigma_s \\varepsilon` with :math:`\\sigma` from 0.002 to
    :math:`3\\sqrt{2D}` (about the largest distance between standardized points),
    geometric in :math:`s` (so the network's time is :math:`\\log\\sigma` up to an affine
    map, their :math:`c_{noise}`); the preconditioning :math:`c_{skip}, c_{out}, c_{in}`
    (``gaussian_skip`` and an output scale, see :class:`ProbabilityFlow`); noise levels
    drawn log-normally, :math:`\\log\\sigma \\sim \\mathcal N(-1, 1.6^2)` (wider and
    lower than their image setting :math:`\\mathcal N(-1.2, 1.2^2)` at data scale 0.5, so
    the fine levels that draw sharp edges get their share); and the loss weighted by
    :math:`w = 1 + \\sigma^2 = 1/c_{out}^2`, the network's own output error, so every noise
    level weighs alike. It fits low-dimensional data far better than VP and gives the
    Gaussian's density exactly from the start. On a small high-dimensional set (1437
    digits) a large field memorizes the training points unless ``dropout`` holds it back
    (with 0.1 its density generalizes best of all the diffusions measured). Its network
    is not FiLM-modulated by default: with the skip it learns only a small departure from
    the Gaussian, and FiLM's modulation, starting at zero, then drifts under Adam's noise
    at a high learning rate until the field stalls at the Gaussian (concentric rings at
    lr 5e-3; ``bench/MEASUREMENTS.md``).

    Args:
        features: event size.
        context: context size.
        hidden, activation, time_features: the noise network (a :class:`~pyro_xform.nn.TimeMLP`).
        architecture, channels, attention: the network: ``"auto"`` (a
            :class:`~pyro_xform.nn.TimeUNet` of base width ``channels``, with self-attention
            if ``attention``, for images of at least 8 x 8; else the MLP), ``"mlp"`` or
            ``"image"`` (see :func:`~pyro_xform.families.continuous.field_network`).
        sde: ``"edm"`` (default, above), ``"vp"`` (:math:`\\beta` linear from ``beta_min``
            to ``beta_max``; the default before 2026-12-08) or ``"ve"`` (:math:`\\sigma`
            geometric from ``sigma_min`` to ``sigma_max``; default 0.01 to
            :math:`3\\sqrt{2 D}`, about the largest distance between standardized points).
            VP and VE train the plain noise prediction (:math:`w = 1`, uniform times)
            unless told otherwise.
        sigma_min, sigma_max: the noise range of ``"edm"`` (0.002 to :math:`3\\sqrt{2D}`)
            and ``"ve"`` (0.01 to :math:`3\\sqrt{2D}`).
        eps: the data end of the time interval (default 1e-3 for VP, 0 for VE and EDM).
        ode: the default :class:`~pyro_xform.transforms.ODESettings` of the probability-flow
            ODE; each call may change them.
        **ode_changes: changes to ``ode`` by name (``solver="rk4", steps=8``, ``rtol=1e-6``).
        standardize: learn on standardized data (the density stays that of the data):
            ``True``/``"marginal"`` by the data's mean and standard deviation,
            ``"regression"`` (conditional models) by the least-squares regression of the data
            on the context and the residuals' covariance (see
            :class:`~pyro_xform.transforms.ConditionalStandardize`), ``"channel"`` (images:
            each channel's mean and standard deviation over all its pixels), ``False``, or ``"auto"``
            (default): ``"regression"`` for a conditional model (a plain ``fit`` then gives
            a posterior estimator as good as an NSF's, ``bench/conditional.py``); for an
            unconditional (or guided) one ``"channel"`` on images (the raw pixels gave a
            slightly better density but noise for many draws, per-pixel statistics a worse
            density, ``bench/MEASUREMENTS.md``) and ``"marginal"`` on vectors.
        gaussian_skip: predict the noise as :math:`\\sigma_s c_{in}(s)\\,u +
            \\varepsilon_\\theta(u, s, c)`, the exact prediction for standard Gaussian data
            plus a network that starts at zero (Karras et al.'s :math:`c_{skip}`): the
            model starts as the Gaussian fit of the standardized data, and with
            ``standardize="regression"`` as the linear-Gaussian fit of :math:`x \\mid c`.
            Default: on for ``"edm"`` and for a model standardized by its regression on the
            context (a conditional model's default: it then starts as the linear-Gaussian
            posterior, and a plain ``fit`` is a posterior estimator as good as an NSF's,
            ``bench/conditional.py``); off for an unconditional VP or VE model (there,
            without the output scale, DSM training with it can give a probability-flow
            density that diverges on held-out data in higher dimension,
            ``bench/MEASUREMENTS.md``).
        time_sampling: ``"uniform"`` times; ``"likelihood"``: times drawn with density
            :math:`\\propto g^2(s)/\\sigma_s^2`, which turns the noise-prediction loss into
            the likelihood-weighted score-matching loss, a bound on the negative
            log-likelihood (Song et al., 2021); ``"lognormal"``: noise levels
            :math:`\\tilde\\sigma = \\sigma_s/\\alpha_s` log-normal with ``lognormal`` =
            (mean, std) of :math:`\\log\\tilde\\sigma`, truncated to the path's range.
            Default: ``"lognormal"`` for ``"edm"``, ``"uniform"`` else.
        lognormal: (mean, std) of the log noise level for ``time_sampling="lognormal"``.
        film: modulate every hidden layer of the MLP network by the time and context (see
            :class:`~pyro_xform.nn.TimeMLP`). ``"auto"`` (default): on for the MLP of a VP
            or VE model (it measured better on the 2-D sets and on digits), off for EDM
            (above) and for the U-Net (which embeds the time in every block itself);
            ``None``, what files written before 2026-12-08 record: on for the MLP.
        dropout: the probability of dropping each hidden unit of the field network in
            training (:class:`~pyro_xform.nn.TimeMLP`, or the U-Net's residual blocks). A
            regularizer for a large field on few data, which otherwise memorizes its
            training points (digits: ``bench/MEASUREMENTS.md``); 0 (default) on plentiful data.
        guidance_dropout: probability of training on the null context (classifier-free
            guidance, :mod:`pyro_xform.families.guidance`); a guided model is standardized
            by statistics that do not depend on the context (marginal, or per channel on images),
            so its conditional and unconditional predictions share one space.
        guidance: default guidance scale :math:`w` of the noise prediction
            :math:`\\varepsilon_\\varnothing + w(\\varepsilon_c - \\varepsilon_\\varnothing)` (1: the
            plain conditional model); ``model(c, guidance=w)`` and ``sample(..., guidance=w)``
            change it.

    Examples:
        >>> import torch, pyro_xform
        >>> model = pyro_xform.Diffusion(features=2, hidden=(32, 32))
        >>> model.sample((4,), sampler="heun", steps=10).shape
        torch.Size([4, 2])
        >>> model(solver="rk4", steps=4).log_prob(torch.zeros(2)).shape
        torch.Size([])

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras, Aittala,
        Aila, Laine, 2022, arXiv:2206.00364). Score-Based Generative Modeling through
        Stochastic Differential Equations (Song, Sohl-Dickstein, Kingma, Kumar, Ermon,
        Poole, 2020, arXiv:2011.13456). Denoising Diffusion Probabilistic Models (Ho, Jain,
        Abbeel, 2020, arXiv:2006.11239). Maximum likelihood training of score-based
        diffusion models (Song, Durkan, Murray, Ermon, 2021, arXiv:2101.09258).
    """

    default_objective = "dsm"

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_features: int = 16,
        sde: str = "edm",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        eps: float | None = None,
        ode: ODESettings | dict | None = None,
        standardize: bool | str = "auto",
        time_sampling: str | None = None,
        architecture: str = "auto",
        channels: int = 32,
        attention: bool = False,
        gaussian_skip: bool | None = None,
        lognormal: tuple[float, float] = (-1.0, 1.6),
        film: bool | str | None = "auto",
        dropout: float = 0.0,
        guidance_dropout: float = 0.0,
        guidance: float = 1.0,
        **ode_changes: Any,
    ) -> None:
        if sde not in SDES:
            raise ValueError(f"sde must be one of {SDES}, got {sde!r}")
        edm = sde == "edm"
        time_sampling = ("lognormal" if edm else "uniform") if time_sampling is None else time_sampling
        if time_sampling not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLING}, got {time_sampling!r}")
        lognormal = tuple(float(v) for v in lognormal)
        if len(lognormal) != 2 or not lognormal[1] > 0:
            raise ValueError(f"lognormal must be (mean, std > 0), got {lognormal!r}")
        size = event_shape_of(features).numel()  # the flat size the network works on
        schedule = _schedule(sde, size, beta_min, beta_max, sigma_min, sigma_max)
        eps = schedule.eps if eps is None else eps
        if not 0 <= eps < 1 or (sde == "vp" and eps == 0):
            raise ValueError(f"eps must lie in [0, 1) (and be > 0 for VP), got {eps}")
        check_guidance(context, guidance_dropout, guidance, standardize)
        image = len(event_shape_of(features)) == 3
        # On images the draws of a model of the raw pixels were noise at the bench's budget,
        # though its density was good: per channel (bench/MEASUREMENTS.md).
        standardize = resolve_standardize(
            standardize, context, guided=guidance_dropout > 0, image=image, for_images="channel"
        )
        null_token = guidance_dropout > 0
        if gaussian_skip is None:
            gaussian_skip = edm or standardize == "regression"
        gaussian_skip = bool(gaussian_skip)
        if not (film is None or isinstance(film, bool) or film == "auto"):
            raise ValueError(f"film must be True, False, 'auto' or None, got {film!r}")
        if film == "auto":
            # EDM's skip leaves the network a small departure from the Gaussian to learn;
            # FiLM's modulation, starting at zero, then drifts under Adam's noise at a high
            # learning rate and the field stalls at the Gaussian (bench/MEASUREMENTS.md).
            film = False if edm else None
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
            field=ProbabilityFlow(net, schedule, gaussian_skip, edm, null_token, guidance),
            time=(1.0, eps),
            ode=ODESettings.of(ode).replace(**ode_changes),
            standardize=standardize,
        )
        self.schedule, self.eps, self.time_sampling = schedule, eps, time_sampling
        self.lognormal = lognormal
        self.guidance_dropout = guidance_dropout
        self.base_scale.fill_(schedule.prior_scale())
        self._time_cdfs: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    @property
    def network(self) -> nn.Module:
        """The noise network :math:`\\varepsilon_\\theta` (on scaled inputs, see :class:`Diffusion`)."""
        return self.ode.field.net

    def noise(self, x: Tensor, s: Tensor, context: Tensor | None = None) -> Tensor:
        """The predicted noise :math:`\\varepsilon_\\theta(x_s, s, c)` in standardized units
        (guided at the model's guidance scale)."""
        return self.ode.field.noise(x, s, context)

    def _field(self, guidance: float | None = None) -> nn.Module:
        return with_guidance(self.ode.field, guidance, self.guidance_dropout)

    def draw_times(self, n: int, dtype: torch.dtype, device=None) -> Tensor:
        """Times of the DSM loss: uniform on :math:`[\\epsilon, 1]`, drawn with density
        :math:`\\propto g(s)^2/\\sigma_s^2` by the inverse CDF of a tabulated density
        (``"likelihood"``), or at log-normal noise levels (``"lognormal"``)."""
        u = torch.rand(n, dtype=dtype, device=device)
        if self.time_sampling == "uniform":
            return self.eps + (1 - self.eps) * u
        if self.time_sampling == "lognormal":
            return self._lognormal_times(u)
        grid, cdf = self._time_cdf(dtype, torch.device("cpu") if device is None else torch.device(device))
        i = torch.searchsorted(cdf, u).clamp(1, grid.shape[0] - 1)
        share = (u - cdf[i - 1]) / (cdf[i] - cdf[i - 1]).clamp_min(torch.finfo(dtype).tiny)
        return grid[i - 1] + share * (grid[i] - grid[i - 1])

    def _lognormal_times(self, u: Tensor) -> Tensor:
        """The times of log-normal noise levels truncated to :math:`[\\tilde\\sigma(\\epsilon),
        \\tilde\\sigma(1)]`, by the inverse CDF of the truncated normal (its bounds are
        numbers, not tensors: nothing is copied to the device a step)."""
        mean, std = self.lognormal
        lo, hi = self._lognormal_bounds
        level = torch.exp(mean + std * torch.special.ndtri(lo + (hi - lo) * u))
        return self.schedule.time_of(level).clamp(self.eps, 1.0)

    @functools.cached_property
    def _lognormal_bounds(self) -> tuple[float, float]:
        mean, std = self.lognormal
        ends = torch.tensor([self.eps, 1.0], dtype=torch.float64)
        lo, hi = torch.special.ndtr((self.schedule.noise_level(ends).log() - mean) / std).tolist()
        return lo, hi

    def _time_cdf(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """The tabulated CDF of the likelihood weighting, built once in float64 on the CPU
        and kept per dtype and device: copying it to the device at every step would make
        each step wait for the copy."""
        key = (dtype, device)
        if key not in self._time_cdfs:
            grid = torch.linspace(self.eps, 1.0, 4097, dtype=torch.float64)
            weight = self.schedule.g2(grid) / self.schedule.sigma(grid) ** 2
            cdf = torch.cat([weight.new_zeros(1), torch.cumulative_trapezoid(weight, grid)])
            self._time_cdfs[key] = (
                grid.to(dtype=dtype, device=device),
                (cdf / cdf[-1]).to(dtype=dtype, device=device),
            )
        return self._time_cdfs[key]

    def dsm_loss(self, batch: Tensor, context: Tensor | None = None) -> Tensor:
        """The denoising score-matching loss summed over the batch: the noise prediction's
        error, in the network's output units when the output is scaled (EDM's weighting)."""
        x, _ = self.standardizer.inverse_and_ladj(self.flatten(batch), context)
        s = self.draw_times(x.shape[0], x.dtype, x.device)
        noise = torch.randn_like(x)
        col = s[:, None]
        xs = self.schedule.alpha(col) * x + self.schedule.sigma(col) * noise
        field = self.ode.field
        if field.null_token:
            context = flagged(context, self.guidance_dropout)
        error = field.noise(xs, s, context, network_context=field.null_token) - noise
        if field.output_scale:
            error = error / field.out_scale(col)
        return error.pow(2).sum()

    @torch.no_grad()
    def sample(
        self,
        sample_shape=(),
        context: Tensor | None = None,
        *,
        sampler: str = "ode",
        steps: int | None = None,
        eta: float = 0.0,
        churn: float = diffusion_sampling.SQRT2_LESS_1,
        grid: str = "log",
        guidance: float | None = None,
        **ode_settings,
    ) -> Tensor:
        """Draw samples with the probability-flow ODE or a fixed-step sampler.

        Args:
            sample_shape: leading shape of the draw.
            context: conditioning tensor ``(..., context)``.
            sampler: ``"ode"`` (the distribution's own sampler; ``steps`` and other
                settings as in calling the model); ``"heun"`` (Karras et al.'s
                deterministic second-order sampler, ``2 steps - 1`` network evaluations);
                ``"stochastic"`` (theirs with noise added before each step, ``churn``);
                ``"dpm"`` (DPM-Solver++(2M), one evaluation a step, the best at about 20);
                ``"sde"`` (Euler–Maruyama on the reverse SDE :math:`dx = [f x - g^2 \\nabla
                \\log p_s]ds + g\\,d\\bar W`) or ``"ddim"`` (stochasticity ``eta``; 0 is
                deterministic). See :mod:`pyro_xform.families.diffusion_sampling`.
            steps: number of steps (default 18 for ``heun`` and ``stochastic``, 20 for
                ``dpm``, 100 for ``sde`` and ``ddim``).
            eta: DDIM's noise scale :math:`\\eta \\in [0, 1]` (1 is ancestral sampling).
            churn: the stochastic sampler's :math:`\\gamma \\in [0, \\sqrt 2 - 1]`.
            grid: DPM-Solver++'s noise levels: ``"log"`` (equal steps of log noise level)
                or ``"karras"`` (see :func:`~pyro_xform.families.diffusion_sampling.dpm`).
            guidance: the classifier-free guidance scale :math:`w` of a model trained with
                ``guidance_dropout`` (default: the model's).

        Returns:
            Samples of shape ``sample_shape + batch_shape + event_shape``.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if sampler == "ode":
            if guidance is not None:
                ode_settings["guidance"] = guidance
            return super().sample(sample_shape, context, steps=steps, **ode_settings)
        field = self._field(guidance)
        if ode_settings:
            raise TypeError(f"{sorted(ode_settings)} apply to the ode sampler only")
        steps = DEFAULT_STEPS[sampler] if steps is None else steps
        if not is_count(steps):
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        context = self.check_context(context)
        batch_shape = context.shape[:-1] if context is not None else ()
        x = self.base(batch_shape).sample(torch.Size(sample_shape))
        if context is not None:
            context = context.expand(x.shape[:-1] + context.shape[-1:])

        def noise(xs: Tensor, s: Tensor) -> Tensor:
            return field.noise(xs, s, context)

        run = {
            "heun": lambda: diffusion_sampling.heun(noise, self.schedule, x, steps, self.eps),
            "stochastic": lambda: diffusion_sampling.stochastic(
                noise, self.schedule, x, steps, self.eps, churn=churn
            ),
            "dpm": lambda: diffusion_sampling.dpm(noise, self.schedule, x, steps, self.eps, grid),
            "sde": lambda: diffusion_sampling.reverse_sde(noise, self.schedule, x, steps, self.eps),
            "ddim": lambda: diffusion_sampling.ddim(noise, self.schedule, x, steps, self.eps, eta),
        }
        return self.unflatten(self.standardizer.forward_and_ladj(run[sampler](), context)[0])


def _schedule(sde, features, beta_min, beta_max, sigma_min, sigma_max) -> Schedule:
    if sde == "vp":
        return make_schedule("vp", beta_min, beta_max)
    # At the top, about the largest distance between standardized points (Song and Ermon's
    # rule): the marginal there is Gaussian to within what a density can tell.
    low, high = 0.002 if sde == "edm" else 0.01, 3 * math.sqrt(2 * features)
    return make_schedule(
        "ve", low if sigma_min is None else sigma_min, high if sigma_max is None else sigma_max
    )
