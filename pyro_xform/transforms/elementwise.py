"""Monotone element-wise maps whose parameters come from a conditioner network.

Each map takes ``(value, params)`` with ``value`` of shape ``(..., D)`` and ``params`` of
shape ``(..., D, P)`` and returns the mapped value and the element-wise log-derivative of
the base → data direction, computed in the same pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Affine", "RQSpline"]


def _broadcast(v: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    shape = torch.broadcast_shapes(v.shape, p.shape[:-1])
    return v.expand(shape), p.expand(shape + p.shape[-1:])


class Affine:
    """Affine map :math:`x = z\\,e^{s} + t` (base → data) with a softly bounded log-scale
    :math:`s = b \\tanh(\\tilde s / b)`, so that one bad step cannot blow up the scale.

    Zero parameters give the identity.

    Examples:
        >>> z = torch.randn(4, 3)
        >>> x, ladj = Affine().forward(z, torch.zeros(4, 3, 2))
        >>> bool(torch.equal(x, z)), float(ladj.abs().sum())
        (True, 0.0)

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016,
        arXiv:1605.08803).
    """

    params_per_dim = 2

    def __init__(self, log_scale_bound: float = 5.0) -> None:
        self.bound = float(log_scale_bound)

    def _split(self, p: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = p.unbind(-1)
        return shift, self.bound * torch.tanh(raw / self.bound)

    def forward(self, z: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        shift, s = self._split(p)
        return z * torch.exp(s) + shift, s.expand(torch.broadcast_shapes(z.shape, s.shape))

    def inverse(self, x: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        shift, s = self._split(p)
        return (x - shift) * torch.exp(-s), s.expand(torch.broadcast_shapes(x.shape, s.shape))


class RQSpline:
    """Monotone rational-quadratic spline on :math:`[-B, B]` with identity (linear) tails.

    ``K`` bins with widths :math:`w_k`, heights :math:`h_k` and interior knot derivatives
    :math:`\\delta_k` (the two boundary derivatives are 1, so the spline joins the identity
    tails smoothly). Within bin :math:`k`, with :math:`\\xi = (u - u_k)/w_k` and
    :math:`s_k = h_k / w_k`,

    .. math:: g(u) = v_k + \\frac{h_k\\,[s_k \\xi^2 + \\delta_k \\xi(1-\\xi)]}
        {s_k + (\\delta_{k+1} + \\delta_k - 2 s_k)\\,\\xi(1-\\xi)} .

    The data → base direction (density evaluation, the training path) applies :math:`g`
    in closed form; base → data (sampling) solves the quadratic for :math:`g^{-1}`.
    Zero parameters give the identity.

    Args:
        bins: number of bins ``K``.
        bound: half-width ``B`` of the spline interval.
        min_width, min_height, min_derivative: floors that keep the spline well conditioned.

    Examples:
        >>> spline = RQSpline(bins=4, bound=3.0)
        >>> p = torch.randn(10, 2, spline.params_per_dim)
        >>> x, _ = spline.forward(torch.randn(10, 2), p)
        >>> z, _ = spline.inverse(x, p)
        >>> x.shape, z.shape
        (torch.Size([10, 2]), torch.Size([10, 2]))

    References:
        Neural Spline Flows (Durkan, Bekasov, Murray, Papamakarios, 2019, arXiv:1906.04032).
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if min_width * bins >= 1 or min_height * bins >= 1:
            raise ValueError("min_width and min_height times bins must be < 1")
        self.bins, self.bound = int(bins), float(bound)
        self.min_width, self.min_height, self.min_derivative = min_width, min_height, min_derivative
        # softplus(offset) + min_derivative == 1: zero parameters give unit derivatives.
        self._offset = math.log(math.expm1(1.0 - min_derivative))

    @property
    def params_per_dim(self) -> int:
        return 3 * self.bins - 1

    def _knots(self, p: Tensor):
        K, B = self.bins, self.bound
        w = torch.softmax(p[..., :K], -1) * (1 - self.min_width * K) + self.min_width
        h = torch.softmax(p[..., K : 2 * K], -1) * (1 - self.min_height * K) + self.min_height
        d = F.softplus(p[..., 2 * K :] + self._offset) + self.min_derivative
        d = F.pad(d, (1, 1), value=1.0)
        w, h = 2 * B * w, 2 * B * h
        ux = F.pad(torch.cumsum(w, -1), (1, 0)) - B
        uy = F.pad(torch.cumsum(h, -1), (1, 0)) - B
        return ux, uy, w, h, d

    def _select(self, value: Tensor, knots: Tensor, ux, uy, w, h, d):
        K = self.bins
        idx = (value.unsqueeze(-1) >= knots[..., 1:K]).sum(-1, keepdim=True)
        table = torch.stack((ux[..., :K], uy[..., :K], w, h, d[..., :K], d[..., 1:]), -2)
        got = table.gather(-1, idx.unsqueeze(-2).expand(*idx.shape[:-1], 6, 1)).squeeze(-1)
        return got.unbind(-1)

    @staticmethod
    def _log_derivative(xi, s, d0, d1, den):
        t = xi * (1 - xi)
        return 2 * torch.log(s) + torch.log(d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2) - 2 * torch.log(den)

    def inverse(self, x: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """data → base: ``z = g(x)``; returns ``z`` and the base → data log-derivative."""
        x, p = _broadcast(x, p)
        B = self.bound
        inside = (x > -B) & (x < B)
        xc = x.clamp(-B, B)
        ux, uy, w, h, d = self._knots(p)
        x0, y0, wk, hk, d0, d1 = self._select(xc, ux, ux, uy, w, h, d)
        s = hk / wk
        xi = (xc - x0) / wk
        t = xi * (1 - xi)
        den = s + (d0 + d1 - 2 * s) * t
        z = y0 + hk * (s * xi * xi + d0 * t) / den
        ladj = self._log_derivative(xi, s, d0, d1, den)
        return torch.where(inside, z, x), torch.where(inside, -ladj, 0.0)

    def forward(self, z: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """base → data: ``x = g^{-1}(z)``; returns ``x`` and its log-derivative."""
        z, p = _broadcast(z, p)
        B = self.bound
        inside = (z > -B) & (z < B)
        zc = z.clamp(-B, B)
        ux, uy, w, h, d = self._knots(p)
        x0, y0, wk, hk, d0, d1 = self._select(zc, uy, ux, uy, w, h, d)
        s = hk / wk
        dy = zc - y0
        c2 = d0 + d1 - 2 * s
        a = hk * (s - d0) + dy * c2
        b = hk * d0 - dy * c2
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - torch.sqrt(disc))
        x = x0 + xi * wk
        t = xi * (1 - xi)
        den = s + c2 * t
        ladj = self._log_derivative(xi, s, d0, d1, den)
        return torch.where(inside, x, z), torch.where(inside, -ladj, 0.0)
