"""NumPyro twins of the discrete bijectors: each computes a value and its log-determinant
together, in either direction, from weights exported from a trained torch bijector."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform

from .nn import Dense

__all__ = [
    "ActNorm",
    "Affine",
    "Autoregressive",
    "Bijector",
    "Chain",
    "ConditionalStandardize",
    "Coupling",
    "LULinear",
    "Logit",
    "Permutation",
    "RQSpline",
    "Standardize",
]


class Bijector(Transform):
    """A NumPyro ``Transform`` (base → data) on vectors, conditioned on a fixed context,
    whose :meth:`forward_and_ladj` and :meth:`inverse_and_ladj` return the value and the
    forward log-determinant :math:`\\log|\\det \\partial x / \\partial z|` in one pass.

    ``log_abs_det_jacobian(z, x)`` recomputes from ``x``; :class:`XformDistribution` calls
    the fused methods instead.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def forward_and_ladj(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def inverse_and_ladj(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def compiled(self, direction: str):
        """``forward_and_ladj`` or ``inverse_and_ladj`` compiled once by ``jax.jit`` (the
        weights are constants of the compiled program); eager JAX would dispatch and compile
        every small operation separately."""
        cache = self.__dict__.setdefault("_compiled", {})
        if direction not in cache:
            cache[direction] = jax.jit(getattr(self, f"{direction}_and_ladj"))
        return cache[direction]

    def __call__(self, z):
        return self.forward_and_ladj(z)[0]

    def _inverse(self, x):
        return self.inverse_and_ladj(x)[0]

    def log_abs_det_jacobian(self, z, x, intermediates=None):
        return self.inverse_and_ladj(x)[1]

    def tree_flatten(self):
        # Weights are constants of the exported model, not traced values.
        return (), ((), self)

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        return aux_data[1]


def _batch(ladj, x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(ladj, x.shape[:-1])


class Chain(Bijector):
    """:math:`T_K \\circ \\dots \\circ T_1`; log-determinants add."""

    def __init__(self, parts: list[Bijector]) -> None:
        self.parts = tuple(parts)
        self.codomain = self.parts[-1].codomain  # the last part makes the data

    def forward_and_ladj(self, z):
        total = 0.0
        for part in self.parts:
            z, ladj = part.forward_and_ladj(z)
            total = total + ladj
        return z, _batch(total, z)

    def inverse_and_ladj(self, x):
        total = 0.0
        for part in reversed(self.parts):
            x, ladj = part.inverse_and_ladj(x)
            total = total + ladj
        return x, _batch(total, x)


@dataclass(frozen=True)
class Affine:
    """:math:`x = z e^{s} + t` with :math:`s = b \\tanh(\\tilde s / b)`."""

    bound: float
    params_per_dim = 2

    def _split(self, p):
        return p[..., 0], self.bound * jnp.tanh(p[..., 1] / self.bound)

    def forward(self, z, p):
        shift, s = self._split(p)
        x = z * jnp.exp(s) + shift
        return x, jnp.broadcast_to(s, x.shape)

    def inverse(self, x, p):
        shift, s = self._split(p)
        z = (x - shift) * jnp.exp(-s)
        return z, jnp.broadcast_to(s, z.shape)


@dataclass(frozen=True)
class RQSpline:
    """Monotone rational-quadratic spline on :math:`[-B, B]` with identity tails; the
    parameter layout is that of :class:`pyro_xform.transforms.RQSpline` (``K`` widths,
    ``K`` heights, ``K - 1`` interior derivatives per coordinate).

    References:
        Neural Spline Flows (Durkan, Bekasov, Murray, Papamakarios, 2019, arXiv:1906.04032).
    """

    bins: int
    bound: float
    min_width: float
    min_height: float
    min_derivative: float
    offset: float

    def _knots(self, p):
        K, B = self.bins, self.bound
        widths = jax.nn.softmax(p[..., :K], -1) * 2 * B * (1 - self.min_width * K) + 2 * B * self.min_width
        heights = (
            jax.nn.softmax(p[..., K : 2 * K], -1) * 2 * B * (1 - self.min_height * K)
            + 2 * B * self.min_height
        )
        ones = jnp.ones((*p.shape[:-1], 1), p.dtype)
        d = jnp.concatenate(
            [ones, jax.nn.softplus(p[..., 2 * K :] + self.offset) + self.min_derivative, ones], -1
        )
        left = jnp.full((*p.shape[:-1], 1), -B, p.dtype)
        xk = jnp.concatenate([left, jnp.cumsum(widths, -1) - B], -1)
        yk = jnp.concatenate([left, jnp.cumsum(heights, -1) - B], -1)
        return xk, yk, d

    @staticmethod
    def _log_derivative(xi, s, d0, d1, den):
        """:math:`\\log g'` inside the bin, at relative position ``xi``."""
        t = xi * (1 - xi)
        return 2 * jnp.log(s) + jnp.log(d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2) - 2 * jnp.log(den)

    @staticmethod
    def _take(a, idx):
        return jnp.take_along_axis(a, idx[..., None], -1)[..., 0]

    def _gather(self, p, v, side):
        p = jnp.broadcast_to(p, v.shape + p.shape[-1:])
        xk, yk, d = self._knots(p)
        idx = jnp.sum(v[..., None] >= (xk if side == 0 else yk)[..., 1 : self.bins], -1)
        x0, x1 = self._take(xk, idx), self._take(xk, idx + 1)
        y0, y1 = self._take(yk, idx), self._take(yk, idx + 1)
        return x0, x1 - x0, y0, y1 - y0, self._take(d, idx), self._take(d, idx + 1)

    def inverse(self, x, p):
        """data → base, :math:`z = g(x)`, and the base → data log-derivative."""
        B = self.bound
        inside = (x > -B) & (x < B)
        xc = jnp.clip(x, -B, B)
        x0, wk, y0, hk, d0, d1 = self._gather(p, xc, 0)
        s = hk / wk
        xi = (xc - x0) / wk
        t = xi * (1 - xi)
        den = s + (d0 + d1 - 2 * s) * t
        z = y0 + hk * (s * xi * xi + d0 * t) / den
        ladj = -self._log_derivative(xi, s, d0, d1, den)
        return jnp.where(inside, z, x), jnp.where(inside, ladj, 0.0)

    def forward(self, z, p):
        """base → data, :math:`x = g^{-1}(z)` by the quadratic formula, and its log-derivative."""
        B = self.bound
        inside = (z > -B) & (z < B)
        zc = jnp.clip(z, -B, B)
        x0, wk, y0, hk, d0, d1 = self._gather(p, zc, 1)
        s = hk / wk
        dy = zc - y0
        c2 = d0 + d1 - 2 * s
        a = hk * (s - d0) + dy * c2
        b = hk * d0 - dy * c2
        c = -s * dy
        disc = jnp.clip(b * b - 4 * a * c, 0.0)
        xi = (2 * c) / (-b - jnp.sqrt(disc))
        x = x0 + xi * wk
        den = s + c2 * xi * (1 - xi)
        return jnp.where(inside, x, z), jnp.where(inside, -self._log_derivative(xi, s, d0, d1, den), 0.0)


class Coupling(Bijector):
    """:math:`x_A = z_A`, :math:`x_B = \\tau(z_B; \\theta(z_A, c))`."""

    def __init__(self, net: Dense, transformer, n_identity: int, features: int, context) -> None:
        self.net, self.transformer, self.n, self.features, self.context = (
            net,
            transformer,
            n_identity,
            features,
            context,
        )

    def _map(self, v, inverse):
        a, b = v[..., : self.n], v[..., self.n :]
        p = self.net(a, self.context)
        p = p.reshape(*p.shape[:-1], self.features - self.n, -1)
        b, ladj = (self.transformer.inverse if inverse else self.transformer.forward)(b, p)
        a = jnp.broadcast_to(a, b.shape[:-1] + a.shape[-1:])
        return jnp.concatenate([a, b], -1), ladj.sum(-1)

    def forward_and_ladj(self, z):
        return self._map(z, inverse=False)

    def inverse_and_ladj(self, x):
        return self._map(x, inverse=True)


class Autoregressive(Bijector):
    """:math:`x_i = \\tau(z_i; \\theta_i)` over a MADE; ``fast="density"`` (MAF) inverts in
    one pass, ``"sampling"`` (IAF) runs forward in one pass; the other direction takes
    ``D`` passes."""

    def __init__(self, net: Dense, transformer, features: int, fast: str, context) -> None:
        self.net, self.transformer, self.features, self.fast, self.context = (
            net,
            transformer,
            features,
            fast,
            context,
        )

    def _solve(self, target, inverse):
        shape = jnp.broadcast_shapes(target.shape, self._context_shape(target))
        out = jnp.zeros(shape, target.dtype)
        for _ in range(self.features):
            p = self.net(out, self.context)
            out, ladj = (self.transformer.inverse if inverse else self.transformer.forward)(target, p)
        return out, ladj

    def _context_shape(self, v):
        if self.context is None:
            return v.shape
        return self.context.shape[:-1] + v.shape[-1:]

    def forward_and_ladj(self, z):
        if self.fast == "sampling":
            x, ladj = self.transformer.forward(z, self.net(z, self.context))
        else:
            x, ladj = self._solve(z, inverse=False)
        return x, ladj.sum(-1)

    def inverse_and_ladj(self, x):
        if self.fast == "density":
            z, ladj = self.transformer.inverse(x, self.net(x, self.context))
        else:
            z, ladj = self._solve(x, inverse=True)
        return z, ladj.sum(-1)


class Permutation(Bijector):
    """:math:`x = z_\\pi`."""

    def __init__(self, perm, inverse_perm) -> None:
        self.perm, self.inverse_perm = jnp.asarray(perm), jnp.asarray(inverse_perm)

    def forward_and_ladj(self, z):
        return z[..., self.perm], jnp.zeros(z.shape[:-1], z.dtype)

    def inverse_and_ladj(self, x):
        return x[..., self.inverse_perm], jnp.zeros(x.shape[:-1], x.dtype)


class LULinear(Bijector):
    """:math:`x = L U z + b`; the inverse is two triangular solves."""

    def __init__(self, lower, upper, bias, ladj) -> None:
        self.lower, self.upper, self.bias, self.ladj = lower, upper, bias, ladj
        self.matrix = lower @ upper

    def forward_and_ladj(self, z):
        x = z @ self.matrix.T + self.bias
        return x, _batch(self.ladj, x)

    def inverse_and_ladj(self, x):
        flat = (x - self.bias).reshape(-1, x.shape[-1]).T
        y = jax.scipy.linalg.solve_triangular(self.lower, flat, lower=True, unit_diagonal=True)
        z = jax.scipy.linalg.solve_triangular(self.upper, y, lower=False).T.reshape(x.shape)
        return z, _batch(self.ladj, x)


class ActNorm(Bijector):
    """:math:`x = z e^{s} + b` per coordinate."""

    def __init__(self, shift, log_scale) -> None:
        self.shift, self.log_scale = shift, log_scale

    def forward_and_ladj(self, z):
        x = z * jnp.exp(self.log_scale) + self.shift
        return x, _batch(self.log_scale.sum(), x)

    def inverse_and_ladj(self, x):
        return (x - self.shift) * jnp.exp(-self.log_scale), _batch(self.log_scale.sum(), x)


class Standardize(Bijector):
    """:math:`x = \\mu + \\sigma y` with fixed data statistics."""

    def __init__(self, loc, scale) -> None:
        self.loc, self.scale = loc, scale

    def forward_and_ladj(self, z):
        x = self.loc + self.scale * z
        return x, _batch(jnp.log(self.scale).sum(), x)

    def inverse_and_ladj(self, x):
        return (x - self.loc) / self.scale, _batch(jnp.log(self.scale).sum(), x)


class Logit(Bijector):
    """:math:`x = (\\sigma(y) - \\alpha)/(1 - 2\\alpha)`, data in the unit interval; off it the
    log-determinant is :math:`+\\infty` (density 0), as in the torch layer."""

    def __init__(self, alpha: float, low: float, high: float) -> None:
        self.alpha, self.low, self.high = alpha, low, high
        self.codomain = constraints.independent(constraints.interval(low, high), 1)

    def _ladj(self, y):
        ladj = jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y) - jnp.log1p(-2 * self.alpha)
        return ladj.sum(-1)

    def forward_and_ladj(self, z):
        return (jax.nn.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha), self._ladj(z)

    def inverse_and_ladj(self, x):
        inside = (x > self.low) & (x < self.high)
        u = self.alpha + (1 - 2 * self.alpha) * jnp.where(inside, x, 0.5)
        y = jnp.log(u) - jnp.log1p(-u)
        ladj = jnp.where(inside.all(-1), self._ladj(y), jnp.inf)
        return y, jnp.where(jnp.isnan(x).any(-1), jnp.nan, ladj)


class ConditionalStandardize(Bijector):
    """:math:`x = \\mu + W c + L y` with a fixed regression on the context."""

    def __init__(self, loc, weight, scale_tril, context) -> None:
        self.mean = loc + context @ weight.T
        self.scale_tril = scale_tril
        self.ladj = jnp.log(jnp.diagonal(scale_tril)).sum()

    def forward_and_ladj(self, z):
        x = self.mean + z @ self.scale_tril.T
        return x, _batch(self.ladj, x)

    def inverse_and_ladj(self, x):
        r = x - self.mean
        flat = r.reshape(-1, r.shape[-1]).T
        z = jax.scipy.linalg.solve_triangular(self.scale_tril, flat, lower=True).T.reshape(r.shape)
        return z, _batch(self.ladj, r)
