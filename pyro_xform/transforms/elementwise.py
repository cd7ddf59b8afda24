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

    This is the training path of every spline flow. On a CPU its cost is the number of
    tensor operations, not their arithmetic (each one on a few hundred numbers costs about
    a microsecond of dispatch), so both passes are written for few of them: fused
    ``addcmul``/``addcdiv``, the four parameter derivatives as one stacked expression, no
    Python scalars where a tensor will do. Inputs: ``x`` of shape ``(M,)``, raw parameters
    ``pt`` of shape ``(3K - 1, M)`` (bins along the leading dimension).
    """

    @staticmethod
    def forward(ctx, x: Tensor, pt: Tensor, spline: RQSpline):
        K, B, m = spline.bins, spline.bound, x.shape[0]
        u = x.clamp(-B, B)
        inside = x == u
        soft = torch.softmax(pt[: 2 * K].view(2, K, m), 1)
        sizes = spline._scaled(soft)  # (2, K, M): widths, heights
        cum = torch.cumsum(sizes, 1)  # right knots, measured from the interval's low end
        v = u + B
        idx = (v >= cum[0, : K - 1]).sum(0)
        at = idx.view(1, 1, m)
        left, bottom, wk, hk = (
            torch.cat((cum - sizes, sizes)).gather(1, at.expand(4, 1, m)).view(4, m).unbind(0)
        )
        raw = pt[2 * K :] + spline.derivative_offset
        one = pt.new_ones(1, m)
        pair = torch.stack((idx, idx + 1))
        d0, d1 = torch.cat((one, F.softplus(raw) + spline.min_derivative, one)).gather(0, pair).unbind(0)
        s = hk / wk
        xi = (v - left) / wk
        om = 1 - xi
        t, xi2, om2 = xi * om, xi * xi, om * om
        c2 = torch.sub(d0 + d1, s, alpha=2)
        den = torch.addcmul(s, c2, t)
        a = torch.addcmul(s * xi2, d0, t)
        q = torch.addcmul(d0 * om2, d1, xi2).addcmul_(s, t, value=2)
        a_den = a / den
        z = torch.where(inside, torch.addcmul(bottom, hk, a_den).sub_(B), x)
        r = den / s
        ladj = torch.log(r * r / q).mul_(inside)
        # Intermediates, neither inputs nor outputs: kept on ctx, which skips save_for_backward's checks.
        ctx.saved = (inside, at, pair, soft, torch.sigmoid(raw), xi, om, t, xi2, om2, s, wk, hk)
        ctx.saved += (d0, d1, c2, den, a, q, a_den)
        ctx.spline = spline
        return z, ladj

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz: Tensor, gl: Tensor):
        inside, at, pair, soft, sig, xi, om, t, xi2, om2, s, wk, hk, *more = ctx.saved
        d0, d1, c2, den, a, q, a_den = more
        K, m = ctx.spline.bins, xi.shape[0]
        gz_in, gl_in = gz * inside, gl * inside
        # d/d(xi, s, d0, d1) of z = y0 + hk a / den and of ladj = 2 log den - 2 log s - log q:
        # gz hk (a' den - a den') / den^2 + gl (2 den' / den - q' / q), less 2 gl / s for s.
        omx, omt, at_ = om - xi, xi2 + om2, a * t
        dz = torch.stack(
            (s * q, torch.addcmul(xi2 * den, a, omt, value=-1), torch.addcmul(-at_, t, den), -at_)
        )
        dden = torch.stack((c2 * omx, omt, t, t))
        dq = torch.stack(
            ((torch.addcmul(d1 * xi, s, omx).addcmul_(d0, om, value=-1)).mul_(2), t + t, om2, xi2)
        )
        g = dz.mul_(gz_in * hk / (den * den))
        g.addcmul_(dden, (gl_in + gl_in) / den).addcmul_(dq, gl_in / q, value=-1)
        g[1].sub_(gl_in / s, alpha=2)
        g_xi, g_s, g_d0, g_d1 = g.unbind(0)
        g_u = g_xi / wk
        g_x = g_u + (gz - gz_in)
        g_sw = g_s / wk
        g_wk = torch.addcmul(g_u * xi, g_sw, s).neg_()
        g_hk = torch.addcmul(g_sw, gz_in, a_den)
        # The left knot and the bottom are sums of the bins before idx; wk and hk that at idx.
        bins = torch.arange(K, device=xi.device).view(K, 1)
        g_sizes = torch.stack((-g_u, gz_in)).unsqueeze(1) * (bins < at)
        g_sizes.addcmul_(torch.stack((g_wk, g_hk)).unsqueeze(1), bins == at)
        prod = g_sizes * soft
        g_raw = ctx.spline._scaled(
            torch.addcmul(prod, soft, prod.sum(1, keepdim=True), value=-1), floor=False
        )
        g_d = xi.new_zeros(K + 1, m).scatter_(0, pair, torch.stack((g_d0, g_d1)))
        return g_x, torch.cat((g_raw.view(2 * K, m), g_d[1:K] * sig)), None
