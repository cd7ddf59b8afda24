"""Continuous-time bijector: the flow of a learned ODE, with the log-determinant from the
instantaneous change of variables, computed in the same solve as the value."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from ..core import is_count
from .base import Bijector, broadcast_context

__all__ = ["FIXED_STEP_SOLVERS", "ODETransform"]

#: Fixed-step solvers and their function evaluations per step.
FIXED_STEP_SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4}
_ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
_TRACES = ("exact", "hutchinson")
_FORWARD_MODE_MIN_FEATURES = 32

Field = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


class ODETransform(Bijector):
    """The time-:math:`t_0 \\to t_1` flow map of :math:`\\dot x = v_\\theta(x, t, c)`, base at
    :math:`t_0`, data at :math:`t_1`.

    The log-determinant follows the instantaneous change of variables,

    .. math:: \\frac{d}{dt} \\log\\left|\\det \\frac{\\partial x_t}{\\partial x_{t_0}}\\right|
        = \\nabla_x \\cdot v_\\theta(x_t, t, c),

    integrated jointly with the state (one augmented solve in either direction; Pyro's
    default would solve once for the value and again for the log-determinant). The
    divergence is exact (by the field's own forward-mode ``forward_and_divergence`` where it
    has one, ``has_divergence`` is true and that is faster — when the log-density is
    differentiated or the dimension is 32 or more — else one vector-Jacobian product per
    coordinate) or Hutchinson's
    unbiased estimate :math:`\\varepsilon^\\top (\\partial v/\\partial x) \\varepsilon` with
    Rademacher probes :math:`\\varepsilon`, drawn once per solve and averaged over
    ``probes``. Both are differentiable in the parameters, so the density can be trained
    by maximum likelihood or used inside an ELBO.

    Args:
        field: the velocity :math:`v(x, t, c)`; a module taking ``(x, t, context)`` with
            ``t`` a 0-d tensor, returning a tensor shaped like ``x``.
        features: event size.
        context: context size (0: unconditional).
        time: ``(t0, t1)``: the base lives at ``t0``, the data at ``t1`` (``t1 < t0`` runs
            time backwards, as the probability-flow ODE of a diffusion does).
        solver: a torchdiffeq method: fixed-step ``euler``, ``midpoint``, ``rk4`` or adaptive
            ``dopri5`` (default), ``dopri8``, ``bosh3``, ``adaptive_heun``, ``fehlberg2``.
        steps: number of steps of a fixed-step solver (its NFE is ``steps`` times 1, 2 or 4).
        rtol, atol: tolerances of an adaptive solver.
        trace: ``"exact"`` or ``"hutchinson"``.
        probes: Hutchinson probes per solve.
        adjoint: backpropagate by the adjoint method (memory constant in the number of
            steps, at the price of a backward solve).

    Attributes:
        nfe: function evaluations of the latest solve (fixed-step: exactly
            ``steps * FIXED_STEP_SOLVERS[solver]``).

    Examples:
        >>> import torch
        >>> class Linear(torch.nn.Module):  # v(x, t) = -x: the flow map is x = e^{-1} z
        ...     def forward(self, x, t, context=None):
        ...         return -x
        >>> ode = ODETransform(Linear(), features=2, solver="rk4", steps=20)
        >>> x, ladj = ode.forward_and_ladj(torch.ones(1, 2))
        >>> round(float(x[0, 0]), 4), round(float(ladj[0]), 4), ode.nfe
        (0.3679, -2.0, 80)

    References:
        Neural Ordinary Differential Equations (Chen, Rubanova, Bettencourt, Duvenaud,
        2018, arXiv:1806.07366). FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models (Grathwohl et al., 2018, arXiv:1810.01367).
    """

    cheap_ladj = False

    def __init__(
        self,
        field: nn.Module,
        features: int,
        context: int = 0,
        *,
        time: tuple[float, float] = (0.0, 1.0),
        solver: str = "dopri5",
        steps: int | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        trace: str = "exact",
        probes: int = 1,
        adjoint: bool = False,
    ) -> None:
        super().__init__(features, context)
        self.field = field
        self.time = (float(time[0]), float(time[1]))
        self.solver, self.steps, self.rtol, self.atol = solver, steps, rtol, atol
        self.trace, self.probes, self.adjoint = trace, probes, adjoint
        self._check()
        self.nfe = 0

    def _check(self) -> None:
        if self.solver in FIXED_STEP_SOLVERS:
            if not is_count(self.steps):
                raise ValueError(
                    f"the fixed-step solver {self.solver!r} needs steps >= 1, got {self.steps!r}"
                )
        elif self.solver in _ADAPTIVE_SOLVERS:
            if self.steps is not None:
                raise ValueError(f"steps applies to fixed-step solvers only, not to {self.solver!r}")
            if not (self.rtol > 0 and self.atol > 0):
                raise ValueError(f"rtol and atol must be positive, got {self.rtol}, {self.atol}")
        else:
            raise ValueError(
                f"unknown solver {self.solver!r}; choose from {[*FIXED_STEP_SOLVERS, *_ADAPTIVE_SOLVERS]}"
            )
        if self.trace not in _TRACES:
            raise ValueError(f"trace must be one of {_TRACES}, got {self.trace!r}")
        if not is_count(self.probes):
            raise ValueError(f"probes must be a positive int, got {self.probes!r}")
        if self.time[0] == self.time[1] or not all(math.isfinite(t) for t in self.time):
            raise ValueError(f"time must be two different finite numbers, got {self.time}")

    def configured(self, **changes) -> ODETransform:
        """A copy with other solver settings that shares this one's field (and parameters).

        ``steps`` is reset to ``None`` when an adaptive solver is chosen without it.
        """
        settings = dict(
            time=self.time,
            solver=self.solver,
            steps=self.steps,
            rtol=self.rtol,
            atol=self.atol,
            trace=self.trace,
            probes=self.probes,
            adjoint=self.adjoint,
        )
        unknown = set(changes) - set(settings)
        if unknown:
            raise TypeError(f"unknown ODE settings {sorted(unknown)}; known: {sorted(settings)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("solver") in _ADAPTIVE_SOLVERS and "steps" not in changes:
            changes["steps"] = None
        settings.update(changes)
        return ODETransform(self.field, self.features, self.context_features, **settings)

    @property
    def exact(self) -> bool:
        """Whether the log-determinant is exact (up to the solver's error) or an estimate."""
        return self.trace == "exact"

    # -- the three directions ----------------------------------------------------------
    def forward_and_ladj(self, z, context=None):
        x, ladj = self._solve(z, context, self.time, with_ladj=True)
        return x, ladj

    def inverse_and_ladj(self, x, context=None):
        z, neg_ladj = self._solve(x, context, self.time[::-1], with_ladj=True)
        return z, -neg_ladj

    def forward_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The data point :math:`x = T(z; c)` alone, without the divergence (cheaper)."""
        return self._solve(z, context, self.time, with_ladj=False)[0]

    # -- solving -----------------------------------------------------------------------
    def _solve(
        self, y: Tensor, context: Tensor | None, span, *, with_ladj: bool
    ) -> tuple[Tensor, Tensor | None]:
        y, context = broadcast_context(y, context)
        # A non-finite row would stall an adaptive solver; it is solved as zeros, then marked.
        # Unconditionally: asking whether any row is non-finite would wait for the device.
        finite = torch.isfinite(y).all(-1)
        y = torch.where(finite[..., None], y, 0.0)
        # Filled on the device: a tensor built from a list is a copy from the host.
        times = torch.linspace(span[0], span[1], 2, dtype=y.dtype, device=y.device)
        probes = None
        if with_ladj and self.trace == "hutchinson":
            probes = torch.randint(0, 2, (self.probes, *y.shape), dtype=y.dtype, device=y.device) * 2 - 1
        self.nfe = 0
        field, trace = self.field, self.trace
        # Without anything to differentiate, the divergence's graph is dropped at each step.
        wants_graph = torch.is_grad_enabled() and (
            y.requires_grad
            or (context is not None and context.requires_grad)
            or any(p.requires_grad for p in field.parameters())
        )
        # A field's own forward-mode divergence beats autograd's reverse mode where the
        # divergence is differentiated (no second-order graph) or the dimension is large;
        # measured on CPU, reverse mode wins for small D without gradients.
        fused = (
            trace == "exact"
            and getattr(field, "has_divergence", False)
            and (wants_graph or self.adjoint or y.shape[-1] >= _FORWARD_MODE_MIN_FEATURES)
        )

        def dynamics(t: Tensor, state):
            self.nfe += 1
            x = state[0] if with_ladj else state
            graph = wants_graph and torch.is_grad_enabled()
            if not with_ladj:
                return field(x, t, context)
            if fused:
                return field.forward_and_divergence(x, t, context)
            with torch.enable_grad():
                if not x.requires_grad:
                    x = x.detach().requires_grad_()
                v = field(x, t, context)
                if trace == "exact":
                    div = _exact_divergence(v, x, graph)
                else:
                    div = _hutchinson_divergence(v, x, probes, graph)
            if not graph:
                v, div = v.detach(), div.detach()
            return v, div

        state = (y, y.new_zeros(y.shape[:-1])) if with_ladj else y
        kwargs = dict(method=self.solver)
        if self.solver in FIXED_STEP_SOLVERS:
            n = self.steps
            # The grid's ends are known on the host (torchdiffeq hands a reversed span's
            # constructor the original times): reading them off t would wait for the device.
            kwargs["options"] = {
                "grid_constructor": lambda func, y0, t: torch.linspace(
                    span[0], span[1], n + 1, dtype=t.dtype, device=t.device
                )
            }
        else:
            # Land the last step on the end time: stepping past it and interpolating back would
            # evaluate the field outside [t0, t1], where a diffusion's schedule is undefined.
            kwargs.update(rtol=self.rtol, atol=self.atol, options={"step_t": times[1:]})
        if self.adjoint and torch.is_grad_enabled():
            params = tuple(p for p in self.field.parameters() if p.requires_grad)
            if context is not None and context.requires_grad:
                params = (*params, context)
            out = odeint_adjoint(dynamics, state, times, adjoint_params=params, **kwargs)
        else:
            out = odeint(dynamics, state, times, **kwargs)
        value, log_det = (out[0][-1], out[1][-1]) if with_ladj else (out[-1], None)
        value = torch.where(finite[..., None], value, math.nan)
        if log_det is not None:
            log_det = torch.where(finite, log_det, math.nan)
        return value, log_det

    def extra_repr(self) -> str:
        steps = f", steps={self.steps}" if self.steps else f", rtol={self.rtol:g}, atol={self.atol:g}"
        return (
            f"features={self.features}, context={self.context_features}, time={self.time}, "
            f"solver={self.solver!r}{steps}, trace={self.trace!r}"
        )


def _exact_divergence(v: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """:math:`\\sum_i \\partial v_i / \\partial x_i`, one vector-Jacobian product per coordinate."""
    div = torch.zeros_like(v[..., 0])
    for i in range(x.shape[-1]):
        (row,) = torch.autograd.grad(v[..., i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + row[..., i]
    return div


def _hutchinson_divergence(v: Tensor, x: Tensor, probes: Tensor, create_graph: bool) -> Tensor:
    """:math:`\\frac1K\\sum_k \\varepsilon_k^\\top (\\partial v/\\partial x)\\, \\varepsilon_k`."""
    total = torch.zeros_like(v[..., 0])
    for eps in probes:
        (vjp,) = torch.autograd.grad(v, x, eps, create_graph=create_graph, retain_graph=True)
        total = total + (vjp * eps).sum(-1)
    return total / probes.shape[0]
