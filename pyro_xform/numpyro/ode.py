"""NumPyro twin of the continuous-time bijector: the flow of a learned ODE with its exact
log-determinant (instantaneous change of variables), in one augmented solve per direction.

Fixed-step solvers (``euler``, ``midpoint``, ``rk4``, the same steps as torchdiffeq's) run
as a ``lax.scan``; adaptive ones use JAX's Dormand–Prince ``odeint``, differentiable by
its adjoint. Both give gradients of the log-density, so NUTS can run on an ODE prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental.ode import odeint

from .transforms import Bijector

__all__ = ["ODE", "ProbabilityFlowField", "Schedule", "VelocityField"]


@dataclass(frozen=True)
class Schedule:
    """The Gaussian path :math:`x_s = \\alpha_s x + \\sigma_s \\varepsilon` of
    :mod:`pyro_xform.schedules`, in JAX: ``kind`` is ``condot``, ``cosine``, ``vp`` or ``ve``."""

    kind: str
    a: float = 0.0  # sigma_min (condot, ve) or beta_min (vp)
    b: float = 0.0  # beta_max (vp) or sigma_max (ve)

    def alpha(self, s):
        if self.kind == "condot":
            return 1 - s
        if self.kind == "cosine":
            return jnp.cos(0.5 * math.pi * s)
        if self.kind == "vp":
            return jnp.exp(-0.5 * self._integral(s))
        return jnp.ones_like(s)

    def sigma(self, s):
        if self.kind == "condot":
            return self.a + (1 - self.a) * s
        if self.kind == "cosine":
            return jnp.sin(0.5 * math.pi * s)
        if self.kind == "vp":
            return jnp.sqrt(-jnp.expm1(-self._integral(s)))
        return self.a * jnp.exp(s * math.log(self.b / self.a))

    def _integral(self, s):
        return self.a * s + 0.5 * (self.b - self.a) * s**2

    def drift(self, s):
        if self.kind == "condot":
            return -1 / (1 - s)
        if self.kind == "cosine":
            return -0.5 * math.pi * jnp.tan(0.5 * math.pi * s)
        if self.kind == "vp":
            return -0.5 * (self.a + s * (self.b - self.a))
        return jnp.zeros_like(s)

    def g2(self, s):
        if self.kind == "vp":
            return self.a + s * (self.b - self.a)
        sigma = self.sigma(s)
        if self.kind == "ve":
            return 2 * sigma**2 * math.log(self.b / self.a)
        d_sigma = (1 - self.a) if self.kind == "condot" else 0.5 * math.pi * jnp.cos(0.5 * math.pi * s)
        return 2 * sigma * d_sigma - 2 * self.drift(s) * sigma**2


@dataclass(frozen=True)
class VelocityField:
    """Flow matching's velocity, with classifier-free guidance
    :math:`v_\\varnothing + w (v_c - v_\\varnothing)` when the network has a null token, and
    the Gaussian part :math:`r(t)\\,x` with a ``skip`` schedule."""

    net: object
    context_features: int
    null_token: bool
    guidance: float
    skip: Schedule | None = None

    def __call__(self, x, t, context=None):
        v = self._guided(x, t, context)
        if self.skip is None:
            return v
        # r = -1/2 d/ds log(alpha^2 + sigma^2) at s = 1 - t
        energy = lambda s: jnp.log(self.skip.alpha(s) ** 2 + self.skip.sigma(s) ** 2)  # noqa: E731
        s = 1 - jnp.asarray(t, x.dtype)
        rate = -0.5 * jax.jvp(energy, (s,), (jnp.ones_like(s),))[1]
        return v + rate * x

    def _guided(self, x, t, context):
        if not self.null_token:
            return self.net(x, t, context)
        flag = jnp.ones((*context.shape[:-1], 1), x.dtype)
        cond = self.net(x, t, jnp.concatenate([context, flag], -1))
        if self.guidance == 1.0:
            return cond
        null = self.net(x, t, jnp.zeros((*context.shape[:-1], self.context_features + 1), x.dtype))
        return null + self.guidance * (cond - null)


@dataclass(frozen=True)
class ProbabilityFlowField:
    """A diffusion's probability-flow drift :math:`f(s) x + \\tfrac{g(s)^2}{2\\sigma_s}
    \\varepsilon_\\theta(c_{in}(s) x, s, c)`, with the torch field's skip and output scale."""

    net: object
    schedule: Schedule
    gaussian_skip: bool = False
    output_scale: bool = False

    def __call__(self, x, s, context=None):
        sched = self.schedule
        scale = jax.lax.rsqrt(sched.alpha(s) ** 2 + sched.sigma(s) ** 2)
        noise = self.net(x * scale, s, context)
        if self.output_scale:
            noise = noise * sched.alpha(s) * scale
        if self.gaussian_skip:
            noise = noise + sched.sigma(s) * scale**2 * x
        return sched.drift(s) * x + 0.5 * sched.g2(s) / sched.sigma(s) * noise


def _rk_step(solver: str, f, t0, dt, y):
    """One step of torchdiffeq's fixed-grid methods (RK4 is its 3/8 rule)."""
    add = lambda y, k, c: jax.tree.map(lambda a, b: a + c * b, y, k)  # noqa: E731
    k1 = f(y, t0)
    if solver == "euler":
        return add(y, k1, dt)
    if solver == "midpoint":
        return add(y, f(add(y, k1, 0.5 * dt), t0 + 0.5 * dt), dt)
    k2 = f(add(y, k1, dt / 3), t0 + dt / 3)
    k3 = f(jax.tree.map(lambda a, p, q: a + dt * (q - p / 3), y, k1, k2), t0 + 2 * dt / 3)
    k4 = f(jax.tree.map(lambda a, p, q, r: a + dt * (p - q + r), y, k1, k2, k3), t0 + dt)
    return jax.tree.map(lambda a, p, q, r, s: a + dt * 0.125 * (p + 3 * (q + r) + s), y, k1, k2, k3, k4)


class ODE(Bijector):
    """The time-:math:`t_0 \\to t_1` flow map of :math:`\\dot x = v(x, t, c)`, base at
    :math:`t_0`, with :math:`\\log|\\det| = \\int \\nabla \\cdot v\\, dt` (exact trace, by
    forward-mode Jacobians) integrated with the state."""

    def __init__(self, field, time, solver, steps, rtol, atol, context) -> None:
        self.field, self.time, self.solver, self.steps = field, time, solver, steps
        self.rtol, self.atol, self.context = rtol, atol, context

    def _dynamics(self, context, with_ladj):
        lo, hi = min(self.time), max(self.time)

        def one(x, t, c):
            # An adaptive step may end past the interval and interpolate back; a schedule is
            # only defined inside it.
            t = jnp.clip(t, lo, hi)
            if not with_ladj:
                return self.field(x, t, c)
            v, jvp_fn = jax.linearize(lambda y: self.field(y, t, c), x)
            eye = jnp.eye(x.shape[-1], dtype=x.dtype)
            div = jnp.trace(jax.vmap(jvp_fn)(eye))
            return v, div

        def f(state, t):
            x = state[0] if with_ladj else state
            if context is None:
                return jax.vmap(lambda xi: one(xi, t, None))(x)
            return jax.vmap(lambda xi, ci: one(xi, t, ci))(x, context)

        return f

    def _solve(self, y, span, with_ladj):
        context = self.context
        shape = y.shape
        if context is not None:
            batch = jnp.broadcast_shapes(y.shape[:-1], context.shape[:-1])
            y = jnp.broadcast_to(y, batch + y.shape[-1:])
            context = jnp.broadcast_to(context, batch + context.shape[-1:]).reshape(-1, context.shape[-1])
            shape = y.shape
        flat = y.reshape(-1, shape[-1])
        f = self._dynamics(context, with_ladj)
        state = (flat, jnp.zeros(flat.shape[:1], flat.dtype)) if with_ladj else flat
        t0, t1 = span
        if self.solver in ("euler", "midpoint", "rk4"):
            grid = jnp.linspace(t0, t1, self.steps + 1, dtype=flat.dtype)

            def body(carry, times):
                return _rk_step(self.solver, f, times[0], times[1] - times[0], carry), None

            out, _ = jax.lax.scan(body, state, jnp.stack([grid[:-1], grid[1:]], -1))
        else:
            # JAX's odeint runs forward in time; a backward span runs in tau = -t.
            sign = 1.0 if t1 > t0 else -1.0
            g = lambda s, tau: jax.tree.map(lambda v: sign * v, f(s, sign * tau))  # noqa: E731
            times = jnp.asarray([sign * t0, sign * t1], flat.dtype)
            out = odeint(g, state, times, rtol=self.rtol, atol=self.atol)
            out = jax.tree.map(lambda v: v[-1], out)
        if with_ladj:
            return out[0].reshape(shape), out[1].reshape(shape[:-1])
        return out.reshape(shape), None

    def forward_and_ladj(self, z):
        return self._solve(z, self.time, True)

    def inverse_and_ladj(self, x):
        z, neg = self._solve(x, self.time[::-1], True)
        return z, -neg

    def __call__(self, z):
        return self._solve(z, self.time, False)[0]
