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
    if v.shape == p.shape[:-1]:  # the usual case; broadcast_shapes costs tens of microseconds
        return v, p
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
        self.derivative_offset = math.log(math.expm1(1.0 - min_derivative))

    @property
    def params_per_dim(self) -> int:
        return 3 * self.bins - 1

    def _locate(self, v: Tensor, p: Tensor, search: int):
        """Knots and derivatives of the bin holding each ``v``; ``search`` 0 finds the bin on
        the data side, 1 on the base side."""
        # Bins run along a leading dimension: CPU kernels reduce a short last dimension
        # (softmax, cumsum over 8 bins) an order of magnitude slower than a leading one.
        K, B = self.bins, self.bound
        shape = v.shape
        pt = p.reshape(-1, p.shape[-1]).T.contiguous()
        m = pt.shape[1]
        sizes = self._scaled(torch.softmax(pt[: 2 * K].view(2, K, -1), 1))
        knots = torch.cat((sizes.new_full((2, 1, m), -B), torch.cumsum(sizes, 1) - B), 1)
        one = pt.new_ones(1, m)
        d = torch.cat((one, F.softplus(pt[2 * K :] + self.derivative_offset) + self.min_derivative, one), 0)
        flat = v.reshape(1, m)
        idx = (flat >= knots[search, 1:K]).sum(0, keepdim=True)
        pair = torch.cat((idx, idx + 1), 0)
        (x0, x1), (y0, y1) = knots.gather(1, pair.expand(2, 2, m))
        d0, d1 = d.gather(0, pair)
        return [t.view(shape) for t in (x0, x1 - x0, y0, y1 - y0, d0, d1)]

    def _scaled(self, soft: Tensor, floor: bool = True) -> Tensor:
        """Widths and heights (``soft[0]``, ``soft[1]``, each summing to 1 over the bins)
        scaled to the interval above their floors; ``floor=False``: the scale alone (a
        gradient). Python numbers, not tensors: a tensor built from a list on every call
        is a blocking host-to-device copy on a GPU."""
        K, span = self.bins, 2 * self.bound
        scale_w, scale_h = span * (1 - self.min_width * K), span * (1 - self.min_height * K)
        floor_w, floor_h = (span * self.min_width, span * self.min_height) if floor else (0.0, 0.0)
        if self.min_width == self.min_height:
            return soft * scale_w + floor_w
        return torch.stack((soft[0] * scale_w + floor_w, soft[1] * scale_h + floor_h))

    @staticmethod
    def _log_derivative(xi, s, d0, d1, den):
        t = xi * (1 - xi)
        return (
            2 * torch.log(s) + torch.log(d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2) - 2 * torch.log(den)
        )

    def inverse(self, x: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """data → base: ``z = g(x)``; returns ``z`` and the base → data log-derivative."""
        x, p = _broadcast(x, p)
        pt = p.reshape(-1, p.shape[-1]).T.contiguous()
        z, ladj = _RQDensity.apply(x.reshape(-1), pt, self)
        return z.view(x.shape), ladj.view(x.shape)

    def forward(self, z: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """base → data: ``x = g^{-1}(z)``; returns ``x`` and its log-derivative."""
        z, p = _broadcast(z, p)
        B = self.bound
        inside = (z > -B) & (z < B)
        zc = z.clamp(-B, B)
        x0, wk, y0, hk, d0, d1 = self._locate(zc, p, 1)
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


class _RQDensity(torch.autograd.Function):
    """The data → base spline ``g`` with a hand-written backward.

    This is the training path of every spline flow. Autograd would record about ninety
    small nodes per call; the closed-form backward below costs a fraction of that.
    Inputs: ``x`` of shape ``(M,)``, raw parameters ``pt`` of shape ``(3K - 1, M)`` (bins
    along the leading dimension).
    """

    @staticmethod
    def forward(ctx, x: Tensor, pt: Tensor, spline: RQSpline):
        K, B, m = spline.bins, spline.bound, x.shape[0]
        inside = (x > -B) & (x < B)
        xc = x.clamp(-B, B)
        soft = torch.softmax(pt[: 2 * K].view(2, K, -1), 1)
        sizes = spline._scaled(soft)  # (2, K, M): widths, heights
        upper = torch.cumsum(sizes, 1) - B  # right knots of each bin
        pre = pt[2 * K :] + spline.derivative_offset
        one = pt.new_ones(1, m)
        d = torch.cat((one, F.softplus(pre) + spline.min_derivative, one), 0)
        idx = (xc >= upper[0, : K - 1]).sum(0)
        got = torch.cat((upper, sizes), 0).gather(1, idx.view(1, 1, m).expand(4, 1, m)).squeeze(1)
        wk, hk = got[2], got[3]
        x0, y0 = got[0] - wk, got[1] - hk
        d0, d1 = d.gather(0, torch.stack((idx, idx + 1))).unbind(0)
        s = hk / wk
        xi = (xc - x0) / wk
        t = xi * (1 - xi)
        den = s + (d0 + d1 - 2 * s) * t
        a = s * xi * xi + d0 * t
        q = d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2
        z = torch.where(inside, y0 + hk * a / den, x)
        ladj = torch.where(inside, 2 * torch.log(den) - 2 * torch.log(s) - torch.log(q), 0.0)
        ctx.save_for_backward(inside, idx, soft, torch.sigmoid(pre), xi, t, s, wk, hk, d0, d1, den, a, q)
        ctx.spline = spline
        return z, ladj

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz: Tensor, gl: Tensor):
        inside, idx, soft, sig, xi, t, s, wk, hk, d0, d1, den, a, q = ctx.saved_tensors
        K = ctx.spline.bins
        mask = inside.to(gz.dtype)
        gz_in = gz * mask
        glog = -gl * mask  # the output is minus log g'
        den2 = den * den
        c2 = d0 + d1 - 2 * s
        one_m = 1 - 2 * xi
        da_dxi = 2 * s * xi + d0 * one_m
        dden_dxi = c2 * one_m
        dq_dxi = 2 * (d1 * xi + s * one_m - d0 * (1 - xi))
        g_xi = gz_in * hk * (da_dxi * den - a * dden_dxi) / den2 + glog * (dq_dxi / q - 2 * dden_dxi / den)
        g_s = gz_in * hk * (xi * xi * den - a * (1 - 2 * t)) / den2 + glog * (
            2 / s + 2 * t / q - 2 * (1 - 2 * t) / den
        )
        g_d0 = gz_in * hk * t * (den - a) / den2 + glog * ((1 - xi) ** 2 / q - 2 * t / den)
        g_d1 = -gz_in * hk * a * t / den2 + glog * (xi * xi / q - 2 * t / den)
        g_x = torch.where(inside, g_xi / wk, gz)
        g_wk = -(g_xi * xi + g_s * s) / wk
        g_hk = gz_in * a / den + g_s / wk
        bins = torch.arange(K, device=idx.device).unsqueeze(1)
        before = (bins < idx).to(gz.dtype)
        at = (bins == idx).to(gz.dtype)
        # x0 and y0 are sums of the sizes of the bins before idx.
        g_sizes = ctx.spline._scaled(
            torch.stack((-g_xi / wk * before + g_wk * at, gz_in * before + g_hk * at)), floor=False
        )
        g_raw = soft * (g_sizes - (g_sizes * soft).sum(1, keepdim=True))
        interior = bins[1:]
        g_pre = (g_d0 * (interior == idx) + g_d1 * (interior == idx + 1)) * sig
        return g_x, torch.cat((g_raw.reshape(2 * K, -1), g_pre), 0), None
