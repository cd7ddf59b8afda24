"""Per-coordinate affine layers set from data: learned (ActNorm) or fixed (Standardize)."""

from __future__ import annotations

import torch
from torch import nn

from .base import Bijector

__all__ = ["ActNorm", "Standardize"]


class ActNorm(Bijector):
    """Per-coordinate affine map :math:`x = z\\,e^{s} + b`, initialized from data:
    :meth:`initialize` sets :math:`b` and :math:`s` to the mean and log standard deviation
    of the activations reaching it, so they leave it standardized. ``fit`` does this once,
    on the first batch (see :meth:`pyro_xform.transforms.Chain.initialize`).

    Examples:
        >>> layer = ActNorm(2)
        >>> x = torch.randn(100, 2) * 3 + 1
        >>> layer.initialize(x)
        >>> z, _ = layer.inverse_and_ladj(x)
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma, Dhariwal, 2018,
        arXiv:1807.03039).
    """

    def __init__(self, features: int) -> None:
        super().__init__(features, 0)
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    def initialize(self, x, context=None) -> None:
        """Set shift and log-scale from activations ``x`` (data side), once."""
        flat = x.detach().reshape(-1, self.features)
        if bool(self.initialized) or flat.shape[0] < 2:
            return
        with torch.no_grad():
            self.shift.copy_(flat.mean(0))
            self.log_scale.copy_(flat.std(0).clamp_min(1e-6).log())
            self.initialized.fill_(True)

    def forward_and_ladj(self, z, context=None):
        x = z * self.log_scale.exp() + self.shift
        return x, self.log_scale.sum().expand(x.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        z = (x - self.shift) * (-self.log_scale).exp()
        return z, self.log_scale.sum().expand(x.shape[:-1])


class Standardize(Bijector):
    """Fixed per-coordinate affine map :math:`x = \\mu + \\sigma \\odot y` whose
    :math:`\\mu, \\sigma` are the data's mean and standard deviation, set once by
    :meth:`initialize` and stored as buffers (not trained). Continuous-time families put it
    last, so their network works on standardized data while the density stays that of
    ``x``: :math:`\\log p(x) = \\log p(y) - \\sum_i \\log \\sigma_i`.

    Examples:
        >>> layer = Standardize(2)
        >>> layer.initialize(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> layer.inverse_and_ladj(torch.tensor([[1.0, 20.0]]))[0]
        tensor([[0., 0.]])
    """

    def __init__(self, features: int) -> None:
        super().__init__(features, 0)
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.register_buffer("initialized", torch.tensor(False))

    def initialize(self, x, context=None) -> None:
        """Set the mean and standard deviation from data ``x``, once."""
        flat = x.detach().reshape(-1, self.features)
        if bool(self.initialized) or flat.shape[0] < 2:
            return
        self.loc.copy_(flat.mean(0))
        self.scale.copy_(flat.std(0).clamp_min(1e-6))
        self.initialized.fill_(True)

    def forward_and_ladj(self, z, context=None):
        x = self.loc + self.scale * z
        return x, self.scale.log().sum().expand(x.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        return (x - self.loc) / self.scale, self.scale.log().sum().expand(x.shape[:-1])
