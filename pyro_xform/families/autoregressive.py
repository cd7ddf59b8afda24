"""Discrete autoregressive models: exact likelihood by the chain rule, sampling as the
inverse CDF of uniform base noise, position by position."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as pdist
import torch
from torch import Tensor
from torch.distributions import constraints

from ..core import GeneratedDistribution, Xform, is_count
from ..nn import MADE, PixelCNN, image_network
from ..transforms import LatentMap

__all__ = ["DiscreteAutoregressive"]


class DiscreteAutoregressive(Xform):
    """A distribution over sequences :math:`x \\in \\{0, \\dots, K-1\\}^D` factored by the
    chain rule, with the conditionals given by one masked network (MADE):

    .. math:: \\log p(x \\mid c) = \\sum_{i=1}^D \\log \\operatorname{softmax}
        \\big(f_\\theta(x_{<i}, c)\\big)_{x_i} \\quad (\\text{exact}).

    As a transform of a base distribution: :math:`u \\sim U[0, 1)^D` and
    :math:`x_i = F_i^{-1}(u_i \\mid x_{<i}, c)`, the inverse CDF of the :math:`i`-th
    conditional — a deterministic, non-invertible map computed position by position
    (:math:`D` network passes). Values are float tensors holding the integers (as Pyro's
    ``Bernoulli``), so binary data plug in directly; ``log_prob`` refuses other values.

    Args:
        features: sequence length :math:`D`, or an image shape ``(C, H, W)`` (the order is
            channel-major, then raster).
        context: conditioning size.
        categories: :math:`K` (2: binary, 256: 8-bit pixels).
        hidden: MADE hidden sizes.
        activation: activation name.
        architecture, channels, layers: the network: ``"auto"`` (for images of at least
            8 x 8 a :class:`~pyro_xform.nn.PixelCNN` of ``channels`` maps and ``layers``
            residual blocks; else MADE), ``"mlp"`` (MADE) or ``"image"``
            (:func:`~pyro_xform.nn.image_network`).

    Examples:
        >>> import torch, pyro_xform
        >>> model = pyro_xform.DiscreteAutoregressive(features=5, categories=3, hidden=(16,))
        >>> d = model()
        >>> x = d.sample((4,))
        >>> x.shape, bool(((x >= 0) & (x <= 2) & (x == x.round())).all()), d.log_prob(x).shape
        (torch.Size([4, 5]), True, torch.Size([4]))

    References:
        MADE: Masked autoencoder for distribution estimation (Germain et al., 2015,
        arXiv:1502.03509). Pixel Recurrent Neural Networks (van den Oord et al., 2016,
        arXiv:1601.06759). The neural autoregressive distribution estimator (Larochelle,
        Murray, 2011). Deep generative models as transforms of a base distribution (Bondar
        et al., 2025, arXiv:2506.17171).
    """

    log_prob_kind = "exact"
    default_objective = "mle"

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        categories: int = 2,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        architecture: str = "auto",
        channels: int = 64,
        layers: int = 4,
    ) -> None:
        super().__init__(features, context)
        features = self.features  # the flat number of positions
        if not is_count(categories, 2):
            raise ValueError(f"categories must be an int >= 2, got {categories!r}")
        self.categories = categories
        if image_network(self.event_shape, architecture):
            self.net = PixelCNN(self.event_shape, categories, channels, layers, context)
        else:
            self.net = MADE(features, categories, tuple(hidden), context, activation)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.categories - 1)

    def logits(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Logits of every conditional, shape ``(..., features, categories)``; row ``i``
        depends on ``x[..., :i]`` only."""
        # Centred inputs: the network sees the same scale whatever K is.
        return self.net(2 * x / (self.categories - 1) - 1, context)

    def exact_log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`\\log p(x \\mid c)` by the chain rule of data ``x`` of shape
        ``(..., *event_shape)``, shape ``(...)``."""
        x = self.flatten(x)
        logits = self.logits(x, context)
        if context is not None:
            x = x.expand(logits.shape[:-1])
        log_p = torch.log_softmax(logits, -1)
        inside = self.support.check(x)
        index = torch.where(inside, x, torch.zeros_like(x)).long()
        log_p = log_p.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)
        # Off the support the density is 0; a NaN stays NaN.
        log_p = log_p.masked_fill(~inside.all(-1), -torch.inf)
        return log_p.masked_fill(x.isnan().any(-1), torch.nan)

    def inverse_cdf(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`x = F^{-1}(u \\mid c)`, position by position, for :math:`u \\in [0, 1)^D`."""
        with torch.no_grad():
            if context is not None:
                u = u.expand(*u.shape[:-1], self.features)
            x = torch.zeros_like(u)
            for i in range(self.features):
                cdf = torch.softmax(self.logits(x, context)[..., i, :], -1).cumsum(-1)
                x[..., i] = (u[..., i, None] >= cdf[..., :-1]).sum(-1).to(x.dtype)
            return x

    def check_data(self, data: Tensor, *, name: str = "data") -> None:
        super().check_data(data, name=name)
        if not self.support.check(data).all():
            raise ValueError(f"{name} must hold integers in [0, {self.categories - 1}]")

    def forward(self, context: Tensor | None = None) -> GeneratedDistribution:
        context = self.check_context(context)
        batch_shape = torch.Size(() if context is None else context.shape[:-1])
        zero = self.base_loc
        base = pdist.Uniform(torch.zeros_like(zero), torch.ones_like(zero)).to_event(1).expand(batch_shape)
        generator = LatentMap(
            self.inverse_cdf, self.features, self.features, support=self.support, differentiable=False
        )
        return GeneratedDistribution(
            base,
            generator,
            context,
            log_prob_kind="exact",
            density=self.exact_log_prob,
            reparameterized=False,
            event_shape=self.data_shape,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, categories={self.categories}"
