"""The logit pre-transform of data in the unit interval (pixels), with its log-determinant."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from .base import Bijector

__all__ = ["Logit", "support_of"]


def support_of(alpha: float) -> tuple[float, float]:
    """The image of the real line under the logit pre-transform of margin ``alpha``:
    :math:`\\big(-\\alpha/(1 - 2\\alpha),\\ (1 - \\alpha)/(1 - 2\\alpha)\\big)`, a little
    wider than the unit interval."""
    return -alpha / (1 - 2 * alpha), (1 - alpha) / (1 - 2 * alpha)


class Logit(Bijector):
    """Data in :math:`[0, 1]^D` from an unbounded value :math:`y` (base side):

    .. math:: x = \\frac{\\sigma(y) - \\alpha}{1 - 2\\alpha}, \\qquad
        y = \\operatorname{logit}\\big(\\alpha + (1 - 2\\alpha) x\\big),

    .. math:: \\log\\left|\\frac{\\partial x}{\\partial y}\\right| = \\sum_i \\big[\\log \\sigma(y_i)
        + \\log \\sigma(-y_i)\\big] - D \\log(1 - 2\\alpha),

    so a flow put before it models pixels on an unbounded scale while its density stays that
    of :math:`x` (the log-determinant is counted, as bits per dimension need). The margin
    :math:`\\alpha > 0` keeps the logit finite at the pixels' bounds; the support is the image
    of the real line, :math:`\\big(-\\alpha/(1-2\\alpha), (1-\\alpha)/(1-2\\alpha)\\big)`,
    which holds :math:`[0, 1]`: a little mass lies beyond the pixels' range (as in Dinh
    et al.'s models), and draws there are clamped for display. Outside it the density is 0:
    the log-determinant there is :math:`+\\infty`, so ``log_prob`` is :math:`-\\infty`; a
    NaN stays NaN.

    Args:
        features: event size.
        alpha: the margin :math:`\\alpha \\in (0, 1/2)`.

    Examples:
        >>> import torch
        >>> logit = Logit(2, alpha=0.05)
        >>> y, ladj = logit.inverse_and_ladj(torch.tensor([[0.5, 0.25]]))
        >>> x, same = logit.forward_and_ladj(y)
        >>> x, bool(torch.allclose(ladj, same))
        (tensor([[0.5000, 0.2500]]), True)
        >>> logit.inverse_and_ladj(torch.tensor([[1.5, 0.5]]))[1]  # beyond 1.0556
        tensor([inf])

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016,
        arXiv:1605.08803), section 4.1.
    """

    def __init__(self, features: int, alpha: float = 0.05) -> None:
        super().__init__(features, 0)
        if not 0.0 < float(alpha) < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)
        self.low, self.high = support_of(self.alpha)
        self.codomain = constraints.interval(self.low, self.high)

    def _ladj(self, y: torch.Tensor) -> torch.Tensor:
        return (F.logsigmoid(y) + F.logsigmoid(-y)).sum(-1) - self.features * math.log1p(-2 * self.alpha)

    def forward_and_ladj(self, z, context=None):
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha), self._ladj(z)

    def inverse_and_ladj(self, x, context=None):
        inside = (x > self.low) & (x < self.high)
        u = self.alpha + (1 - 2 * self.alpha) * torch.where(inside, x, 0.5)
        y = torch.log(u) - torch.log1p(-u)
        ladj = self._ladj(y)
        # Off the support the density is 0; the value fed on is harmless (0) instead of NaN.
        ladj = torch.where(inside.all(-1), ladj, torch.inf)
        ladj = torch.where(x.isnan().any(-1), torch.nan, ladj)
        return y, ladj

    def extra_repr(self) -> str:
        return f"features={self.features}, alpha={self.alpha}"
