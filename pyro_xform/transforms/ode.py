"""Continuous-time bijector: the flow of a learned ODE, with the log-determinant from the
instantaneous change of variables, computed in the same solve as the value."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from ..core import is_count
from .base import Bijector, broadcast_context

__all__ = ["FIXED_STEP_SOLVERS", "ODESettings", "ODETransform"]

#: Fixed-step solvers and their function evaluations per step.
FIXED_STEP_SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4}
_ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
_TRACES = ("exact", "hutchinson")
_FORWARD_MODE_MIN_FEATURES = 32

Field = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class ODESettings:
    """How an ODE is solved: one value that the continuous-time transform, the families
    built on it, the objectives, the guides and the NumPyro export all take.

    Args:
        solver: a torchdiffeq method: fixed-step ``euler``, ``midpoint``, ``rk4`` or adaptive
            ``dopri5`` (default), ``dopri8``, ``bosh3``, ``adaptive_heun``, ``fehlberg2``.
        steps: number of steps of a fixed-step solver (its NFE is ``steps`` times 1, 2 or 4).
        rtol, atol: tolerances of an adaptive solver.
        trace: the divergence, ``"exact"`` or ``"hutchinson"`` (Hutchinson's estimate).
        probes: Hutchinson probes per solve.
        adjoint: backpropagate by the adjoint method (memory constant in the number of
            steps, at the price of a backward solve).

    Examples:
        >>> ODESettings().replace(solver="rk4", nfe=16)
        ODESettings(solver='rk4', steps=4, rtol=1e-05, atol=1e-05, trace='exact', probes=1, adjoint=False)
    """

    solver: str = "dopri5"
    steps: int | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    trace: str = "exact"
    probes: int = 1
    adjoint: bool = False

    def __post_init__(self) -> None:
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

    @property
    def exact(self) -> bool:
        """Whether the log-determinant is exact (up to the solver's error) or an estimate."""
        return self.trace == "exact"

    def replace(self, *, nfe: int | None = None, **changes: Any) -> ODESettings:
        """These settings with ``changes`` (``None`` values ignored).

        Args:
            nfe: function evaluations of a fixed-step solver, instead of ``steps`` (a
                multiple of the solver's evaluations per step).
            **changes: fields of :class:`ODESettings`. Choosing an adaptive solver without
                ``steps`` drops the fixed-step count.

        Raises:
            TypeError: an unknown setting.
            ValueError: settings that do not fit together.
        """
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown ODE settings {sorted(unknown)}; known: {sorted(known | {'nfe'})}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("solver") in _ADAPTIVE_SOLVERS and "steps" not in changes:
            changes["steps"] = None
        if nfe is not None:
            solver = changes.get("solver", self.solver)
            per_step = FIXED_STEP_SOLVERS.get(solver)
            if per_step is None or "steps" in changes or nfe < per_step or nfe % per_step:
                raise ValueError(
                    f"nfe={nfe} needs a fixed-step solver ({FIXED_STEP_SOLVERS}), no steps, and a multiple "
                    f"of the solver's evaluations per step; got solver={solver!r}, "
                    f"steps={changes.get('steps')!r}"
                )
            changes["steps"] = nfe // per_step
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def of(cls, value: ODESettings | dict | None) -> ODESettings:
        """``value`` as settings: settings, a dict of their fields (a recorded config), or
        ``None`` (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, ODESettings):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise ValueError(f"ode must be ODESettings, a dict of its fields or None, got {type(value).__name__}")

    @staticmethod
    def split(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``settings`` split into ODE changes (``replace``'s keywords, ``nfe`` included) and
        the rest."""
        names = {f.name for f in fields(ODESettings)} | {"nfe"}
        ode = {k: v for k, v in settings.items() if k in names}
        return ode, {k: v for k, v in settings.items() if k not in names}


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
        settings: how the ODE is solved (:class:`ODESettings`; default its defaults).
        **changes: changes to ``settings`` (``solver="rk4", steps=20``, ...).

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
        settings: ODESettings | None = None,
        **changes: Any,
    ) -> None:
        super().__init__(features, context)
        self.field = field
        self.time = (float(time[0]), float(time[1]))
        if self.time[0] == self.time[1] or not all(math.isfinite(t) for t in self.time):
            raise ValueError(f"time must be two different finite numbers, got {self.time}")
        self.settings = ODESettings.of(settings).replace(**changes)
        self.nfe = 0

    def configured(self, settings: ODESettings) -> ODETransform:
        """A copy solved with other ``settings`` that shares this one's field (and parameters)."""
        features, context = self.features, self.context_features
        return ODETransform(self.field, features, context, time=self.time, settings=settings)

    @property
    def exact(self) -> bool:
        """Whether the log-determinant is exact (up to the solver's error) or an estimate."""
        return self.settings.exact

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
        settings = self.settings
        if with_ladj and settings.trace == "hutchinson":
            shape = (settings.probes, *y.shape)
            probes = torch.randint(0, 2, shape, dtype=y.dtype, device=y.device) * 2 - 1
        self.nfe = 0
        field, trace = self.field, settings.trace
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
            and (wants_graph or settings.adjoint or y.shape[-1] >= _FORWARD_MODE_MIN_FEATURES)
        )

        dropouts = [m for m in field.modules() if isinstance(m, nn.Dropout)]

        def dynamics(t: Tensor, state):
            if not dropouts:
                return evaluate(t, state)
            with _dropout_off(dropouts):
                return evaluate(t, state)

        def evaluate(t: Tensor, state):
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
        kwargs = dict(method=settings.solver)
        if settings.solver in FIXED_STEP_SOLVERS:
            n = settings.steps
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
            kwargs.update(rtol=settings.rtol, atol=settings.atol, options={"step_t": times[1:]})
        if settings.adjoint and torch.is_grad_enabled():
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
        s = self.settings
        steps = f", steps={s.steps}" if s.steps else f", rtol={s.rtol:g}, atol={s.atol:g}"
        return (
            f"features={self.features}, context={self.context_features}, time={self.time}, "
            f"solver={s.solver!r}{steps}, trace={s.trace!r}"
        )


@contextlib.contextmanager
def _dropout_off(dropouts: list[nn.Dropout]):
    """Dropout regularizes the regression losses, which call the field once; an ODE solve
    needs one field throughout (an adaptive solver would chase a different field at every
    evaluation), so the field's dropouts rest during each of its evaluations, the adjoint's
    included."""
    modes = [m.training for m in dropouts]
    for m in dropouts:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(dropouts, modes, strict=True):
            m.training = mode


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
