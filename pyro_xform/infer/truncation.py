"""Posteriors truncated to a prior's support.

A posterior estimator learns :math:`\\theta` as it is; where the prior's support is bounded,
its draws may leave it. :class:`TruncatedPosterior` keeps the family's draws inside the
support (rejection, as sbi does) and renormalizes its density by the mass inside.
:class:`BoxSupport` is that support as one constraint over the flattened parameter sites;
registering :class:`ToBox` with ``biject_to`` (for this constraint type only, which no other
code uses) lets such a posterior serve as a prior under NUTS or an autoguide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints, transform_to
from torch.nn import functional as nn_functional

from ..core import XformDistribution
from ..transforms import Bijector

__all__ = ["MIN_ACCEPTANCE", "NORMALIZING_DRAWS", "BoxSupport", "ToBox", "TruncatedPosterior", "prior_bounds"]

#: Draws that estimate how much of a posterior's mass lies inside the prior's support (as
#: sbi's leakage correction): the log-density's error is then below 0.01 nats down to an
#: acceptance of 1/2.
NORMALIZING_DRAWS = 10_000
#: Below this acceptance, rejection sampling gives up: the estimator has not learned the
#: observation, and drawing from it would take 1000 proposals a draw.
MIN_ACCEPTANCE = 1e-3


class BoxSupport(constraints.Constraint):
    """Vectors whose every coordinate lies in ``[lower_i, upper_i]`` (bounds may be
    infinite): the support of a prior over the parameter sites, flattened and
    concatenated, as one constraint. ``biject_to`` knows it, so a posterior used as a prior
    elsewhere keeps its support under NUTS or an autoguide."""

    event_dim = 1

    def __init__(self, lower: Tensor, upper: Tensor) -> None:
        self.lower, self.upper = lower, upper
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        return ((value >= self.lower) & (value <= self.upper)).all(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lower={self.lower}, upper={self.upper})"


class ToBox(Bijector):
    """A prior's box support: its bounds as buffers (they follow the estimator onto any
    device and dtype), its :attr:`box` constraint, and the bijection
    :math:`\\mathbb R^d \\to` the open box that ``biject_to(box)`` gives, per coordinate:
    :math:`\\ell + (h - \\ell)\\,\\sigma(u)` where both bounds are finite, :math:`\\ell + e^u`
    or :math:`h - e^u` where one is, the identity where none is (the maps of
    :func:`torch.distributions.biject_to`).

    The inverse of a point outside the (closed) box has log-determinant :math:`+\\infty`:
    its density under any distribution pushed through this map is zero."""

    def __init__(self, lower: Tensor, upper: Tensor) -> None:
        super().__init__(lower.numel(), 0)
        self.register_buffer("lower", lower.reshape(-1).clone())
        self.register_buffer("upper", upper.reshape(-1).clone())

    def _parts(self) -> tuple[Tensor, ...]:
        """Which bounds are finite, the bounds with 0 for infinite ones, and the widths (1
        where a coordinate is not bounded on both sides)."""
        has_lo, has_hi = torch.isfinite(self.lower), torch.isfinite(self.upper)
        lo, hi = self.lower.where(has_lo, 0), self.upper.where(has_hi, 0)
        two = has_lo & has_hi
        return has_lo, has_hi, two, lo, hi, (hi - lo).where(two, 1)

    def _interior(self, x: Tensor) -> Tensor:
        # A value rounded onto a bound (sigma(u) is 1 in float32 beyond u = 17) moves to the
        # nearest number inside, so every draw has a finite log-density.
        return torch.minimum(
            torch.maximum(x, torch.nextafter(self.lower, self.upper)), torch.nextafter(self.upper, self.lower)
        )

    def forward_and_ladj(self, z, context=None):
        has_lo, has_hi, two, lo, hi, width = self._parts()
        one_sided = has_lo ^ has_hi
        e = z.where(one_sided, 0).exp()  # 0 elsewhere: no overflow in the branches not taken
        x = torch.where(
            two, lo + width * torch.sigmoid(z), torch.where(has_lo, lo + e, torch.where(has_hi, hi - e, z))
        )
        sigmoid_ladj = width.log() + nn_functional.logsigmoid(z) + nn_functional.logsigmoid(-z)
        ladj = torch.where(two, sigmoid_ladj, z.where(one_sided, 0))
        return self._interior(x), ladj.sum(-1)

    def inverse_and_ladj(self, x, context=None):
        has_lo, has_hi, two, lo, hi, width = self._parts()
        y = self._interior(x)
        # Distances to the bounds, not a ratio in (0, 1): the ratio rounds to 1 near the top.
        log_a, log_b = (y - lo).where(has_lo, 1).log(), (hi - y).where(has_hi, 1).log()
        z = torch.where(two, log_a - log_b, torch.where(has_lo, log_a, torch.where(has_hi, log_b, y)))
        ladj = torch.where(two, log_a + log_b - width.log(), z.where(has_lo | has_hi, 0)).sum(-1)
        return z, ladj.masked_fill(~self.box.check(x), math.inf)

    @property
    def box(self) -> BoxSupport:
        """The support this map reaches (its closure)."""
        return BoxSupport(self.lower, self.upper)


@biject_to.register(BoxSupport)
@transform_to.register(BoxSupport)
def _box_transform(constraint: BoxSupport):
    return ToBox(constraint.lower, constraint.upper).condition(None)


def _bounds(support: constraints.Constraint, name: str) -> tuple[Any, Any]:
    """``(lower, upper)`` of a box-shaped support; a clear error for any other."""
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if isinstance(base, constraints.interval | constraints.half_open_interval):
        return base.lower_bound, base.upper_bound
    if isinstance(base, constraints.greater_than | constraints.greater_than_eq):
        return base.lower_bound, math.inf
    if isinstance(base, constraints.less_than):
        return -math.inf, base.upper_bound
    if isinstance(base, type(constraints.real)):
        return -math.inf, math.inf
    raise ValueError(
        f"the prior of site {name!r} has support {support}; PosteriorEstimator truncates its "
        "posterior to real, half-bounded or interval supports only: reparameterize the model, or "
        "pass truncate=False for the untruncated family"
    )


def prior_bounds(model: Callable, names: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Per-coordinate bounds of the prior's support over the parameter sites, in the order
    of :func:`simulate` (CPU, float64), read from two runs of the model: bounds that differ
    between them depend on other draws, and no one map fits them."""
    first, second = _bounds_of_a_run(model, names), _bounds_of_a_run(model, names)
    if not all(torch.equal(a, b) for a, b in zip(first, second, strict=True)):
        raise ValueError(
            f"the support of the parameter sites {list(names)} changes from run to run of the model "
            "(it depends on other random draws); pass truncate=False for the untruncated family"
        )
    return first


@torch.no_grad()
def _bounds_of_a_run(model: Callable, names: Sequence[str]) -> tuple[Tensor, Tensor]:
    trace = pyro.poutine.trace(model).get_trace()
    lower, upper = [], []
    for name in names:
        site = trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            raise ValueError(f"the model has no sample site {name!r}")
        shape = site["value"].shape
        for out, bound in zip((lower, upper), _bounds(site["fn"].support, name), strict=True):
            bound = torch.as_tensor(bound).detach().cpu().double()
            out.append(bound.expand(shape).reshape(-1))
    return torch.cat(lower), torch.cat(upper)


class TruncatedPosterior(XformDistribution):
    """The family's posterior truncated to the prior's support, as sbi's: draws are the
    family's draws that land inside (rejection sampling, vectorized over the batch);
    ``log_prob`` is the family's less the log of the mass it puts inside (:attr:`acceptance`,
    estimated once from :data:`NORMALIZING_DRAWS` draws, hence ``log_prob_kind``
    ``"estimate"``), and :math:`-\\infty` outside the support."""

    def __init__(self, inner: XformDistribution, prior_support: ToBox) -> None:
        self.inner, self.prior_support = inner, prior_support
        self._log_acceptance: Tensor | None = None
        kind = None if inner.log_prob_kind is None else "estimate"
        super().__init__(inner.base_dist, inner.bijector, inner.context, log_prob_kind=kind)

    def expand(self, batch_shape, _instance=None) -> TruncatedPosterior:
        new = TruncatedPosterior(self.inner.expand(batch_shape), self.prior_support)
        if self._log_acceptance is not None:
            new._log_acceptance = self._log_acceptance.expand(batch_shape)
        return new

    @property
    def support(self) -> BoxSupport:
        return self.prior_support.box

    @property
    def has_rsample(self) -> bool:
        return self.inner.has_rsample

    @property
    def acceptance(self) -> Tensor:
        """The fraction of the family's mass inside the prior's support, per posterior in
        the batch (a Monte Carlo estimate, made once)."""
        return self.log_acceptance().exp()

    @torch.no_grad()
    def log_acceptance(self) -> Tensor:
        """The log of :attr:`acceptance`."""
        if self._log_acceptance is None:
            draws = self.inner.sample((NORMALIZING_DRAWS,))
            rate = self.support.check(draws).to(draws.dtype).mean(0)
            if rate.device.type != "meta" and not (rate > 0).all():
                raise ValueError(
                    f"none of {NORMALIZING_DRAWS} draws of the posterior lies inside the prior's support "
                    "for some observation: the estimator has not learned it"
                )
            self._log_acceptance = rate.log()
        return self._log_acceptance

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            return self._accepted(torch.Size(sample_shape), lambda m: (self.inner.sample((m,)), None))[0]

    def rsample(self, sample_shape=()) -> Tensor:
        return self._accepted(torch.Size(sample_shape), lambda m: (self.inner.rsample((m,)), None))[0]

    def rsample_and_log_prob(self, sample_shape=()) -> tuple[Tensor, Tensor]:
        x, lp = self._accepted(torch.Size(sample_shape), lambda m: self.inner.rsample_and_log_prob((m,)))
        return x, lp - self.log_acceptance()

    def log_prob(self, value: Tensor) -> Tensor:
        if self.log_prob_kind is None:
            return self.inner.log_prob(value)  # raises, naming what to use instead
        if self._validate_args:
            self._validate_sample(value)
        inside = self.support.check(value)
        # Outside the support the family is scored at an inner point instead (a flow's inverse
        # of inf is NaN), and the result replaced; NaN stays NaN.
        interior = self.prior_support.forward_value(value.new_zeros(self.event_shape))
        lp = self.inner.log_prob(torch.where(inside.unsqueeze(-1), value, interior))
        lp = lp.masked_fill(~inside, -math.inf).masked_fill(value.isnan().any(-1), math.nan)
        return lp - self.log_acceptance()

    def _accepted(self, sample_shape: torch.Size, draw) -> tuple[Tensor, Tensor | None]:
        """``sample_shape`` draws per posterior in the batch, all inside the support, from
        ``draw(m) -> (m draws, their log-densities or None)``, in the order drawn."""
        n = sample_shape.numel()
        values, lps, inside = [], [], []
        total, fewest = 0, -1
        while fewest < n:
            m = n if total == 0 else self._more(n, fewest, total)
            value, lp = draw(m)
            if value.device.type == "meta":  # values unknown: nothing to reject
                return value.reshape(sample_shape + value.shape[1:]), lp
            values.append(value)
            lps.append(lp)
            inside.append(self.support.check(value))
            total += m
            fewest = int(sum(ok.sum(0) for ok in inside).min())
        value, ok = torch.cat(values), torch.cat(inside)
        # Accepted draws first, each posterior's in the order they were drawn.
        order = (~ok).to(torch.uint8).argsort(dim=0, stable=True)[:n]
        batch_shape = value.shape[1:-1]
        picked = value.gather(0, order.unsqueeze(-1).expand(order.shape + value.shape[-1:]))
        lp = None if lps[0] is None else torch.cat(lps).gather(0, order).reshape(sample_shape + batch_shape)
        return picked.reshape(sample_shape + value.shape[1:]), lp

    @staticmethod
    def _more(n: int, fewest: int, total: int) -> int:
        """How many more proposals to draw, from the worst posterior's acceptance so far."""
        rate = fewest / total
        if rate < MIN_ACCEPTANCE and total >= 1 / MIN_ACCEPTANCE:
            raise ValueError(
                f"only {rate:.2%} of the posterior's draws lie inside the prior's support for some "
                "observation: the estimator has not learned it (train on more simulations, or pass "
                "truncate=False for the untruncated family)"
            )
        wanted = math.ceil(1.2 * (n - fewest) / max(rate, MIN_ACCEPTANCE))
        return max(1, min(wanted, 8 * total))

    def _validate_sample(self, value: Tensor) -> None:
        # A value outside the support is not an error: its density is zero (log_prob -inf),
        # so a grid over any region can be scored; type, shape and NaN are still checked.
        if not isinstance(value, Tensor):
            raise ValueError("the value argument to log_prob must be a Tensor")
        expected = self.batch_shape + self.event_shape
        if value.shape[-1:] != self.event_shape or not _broadcastable(value.shape, expected):
            raise ValueError(f"value has shape {tuple(value.shape)}; expected (..., {tuple(expected)})")
        if torch.isnan(value).any():
            raise ValueError("value has NaN entries")


def _broadcastable(shape: torch.Size, other: torch.Size) -> bool:
    try:
        torch.broadcast_shapes(shape, other)
    except RuntimeError:
        return False
    return True
