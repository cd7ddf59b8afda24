"""Bijectors: conditional transform modules that return a value and its log-determinant
in one pass, in either direction."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from ..core import flatten_event, unflatten_event

__all__ = ["Bijector", "Chain", "ConditionedBijector"]


class Bijector(ConditionalTransformModule):
    """Base class of every pyro_xform transform, in Pyro's direction (base → data).

    A bijector :math:`T(\\cdot; c)` on vectors of size ``features`` implements
    :meth:`forward_and_ladj` (:math:`z \\mapsto (x, \\log|\\det \\partial x/\\partial z|)`) and
    :meth:`inverse_and_ladj` (:math:`x \\mapsto (z, \\log|\\det \\partial x/\\partial z|)`,
    the *forward* log-determinant at the recovered :math:`z`), each a single pass.
    ``condition(context)`` returns a :class:`torch.distributions.transforms.Transform`, so a
    bijector also plugs into Pyro's own ``TransformedDistribution``.

    Args:
        features: event size.
        context: size of the conditioning vector (0: unconditional).

    References:
        Normalizing flows for probabilistic modeling and inference (Papamakarios et al.,
        2019, arXiv:1912.02762).
    """

    #: whether ``forward_and_ladj`` is differentiable in its input (reparameterization)
    differentiable = True
    #: whether the log-determinant costs little beside the value (not so for an ODE)
    cheap_ladj = True
    #: where one coordinate of the data side lives (elementwise; :class:`Logit`: an interval)
    codomain = constraints.real

    def __init__(self, features: int, context: int = 0) -> None:
        super().__init__()
        self.features = features
        self.context_features = context

    def forward_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`x = T(z; c)` alone; bijectors whose log-determinant costs extra (an ODE)
        override it to skip that work when only samples are wanted."""
        return self.forward_and_ladj(z, context)[0]

    def condition(self, context: Tensor | None, event_shape: torch.Size | None = None) -> ConditionedBijector:
        """This bijector with ``context`` fixed, as a torch ``Transform``; with
        ``event_shape``, its data side is that shape (e.g. images) instead of flat."""
        return ConditionedBijector(self, context, event_shape)

    def compile(self, **options) -> None:
        """Compile :meth:`forward_and_ladj` and :meth:`inverse_and_ladj` of this bijector in
        place with ``torch.compile(**options)`` (parameters, state dict and Pyro
        registration unchanged).

        Small flows spend most of a training step dispatching dozens of tiny tensor
        operations per layer; compiled, each direction of the whole chain runs as a few
        fused kernels, forward and backward. The first call compiles (tens of seconds with
        the default inductor backend); another input shape or the switch between grad and
        no-grad compiles again. A copy or pickle of the module is eager again.

        Args:
            **options: passed to :func:`torch.compile`, e.g. ``backend="aot_eager"``
                (no code generation: quick to compile, no speed-up) or ``dynamic=True``.

        Examples:
            >>> import torch
            >>> from pyro_xform.transforms import Chain, Permutation
            >>> t = Chain([Permutation(3)])
            >>> t.compile(backend="eager")
            >>> t.inverse_and_ladj(torch.randn(4, 3))[0].shape
            torch.Size([4, 3])
        """
        for name in _COMPILED:
            self.__dict__[name] = torch.compile(getattr(type(self), name).__get__(self), **options)

    @property
    def compiled(self) -> bool:
        """Whether :meth:`compile` has been called on this bijector."""
        return all(name in self.__dict__ for name in _COMPILED)

    def __getstate__(self):
        # Compiled callables do not pickle or deep-copy; the copy runs eagerly.
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in _COMPILED}

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.context_features}"


_COMPILED = ("forward_and_ladj", "inverse_and_ladj")


class ConditionedBijector(Transform):
    """A :class:`Bijector` with its context fixed, as a torch ``Transform``.

    It holds the one cache of the latest call (either direction): ``(z, x, ladj)``, so
    ``log_abs_det_jacobian`` after ``__call__`` or ``inv``, and the density of a sample
    just drawn (:meth:`latest`), cost nothing.

    With ``event_shape`` (e.g. ``(1, 28, 28)``) its data side has that shape: the bijector
    works on the flat view, and values are reshaped at the boundary.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self, bijector: Bijector, context: Tensor | None, event_shape: torch.Size | None = None
    ) -> None:
        super().__init__(cache_size=0)  # torch's own cache would be a second one
        self.bijector = bijector
        self.context = context
        self.event_shape = None if event_shape is None or len(event_shape) == 1 else torch.Size(event_shape)
        dims = 1 if self.event_shape is None else len(self.event_shape)
        self.codomain = constraints.independent(bijector.codomain, dims)
        self._latest: tuple[Tensor, Tensor, Tensor, bool] | None = None

    def forward_shape(self, shape):
        if self.event_shape is None:
            return torch.Size(shape)
        return torch.Size((*shape[:-1], *self.event_shape))

    def inverse_shape(self, shape):
        if self.event_shape is None:
            return torch.Size(shape)
        return torch.Size((*shape[: len(shape) - len(self.event_shape)], self.event_shape.numel()))

    def _shaped(self, x: Tensor) -> Tensor:
        return x if self.event_shape is None else unflatten_event(x, self.event_shape)

    def _flat(self, x: Tensor) -> Tensor:
        return x if self.event_shape is None else flatten_event(x, self.event_shape)

    def with_cache(self, cache_size: int = 1) -> ConditionedBijector:
        """Itself: its one cache is always on (Pyro's reparameterizers ask for a cache)."""
        return self

    def forward_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`(x, \\log|\\det \\partial x/\\partial z|)`, remembered as the latest call."""
        x, ladj = self.bijector.forward_and_ladj(z, self.context)
        x = self._shaped(x)
        self._latest = (z, x, ladj, torch.is_grad_enabled())
        return x, ladj

    def forward_value(self, z: Tensor) -> Tensor:
        """:math:`x = T(z; c)` alone (see :meth:`Bijector.forward_value`); not remembered."""
        return self._shaped(self.bijector.forward_value(z, self.context))

    def inverse_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`(z, \\log|\\det \\partial x/\\partial z|)`, remembered as the latest call."""
        z, ladj = self.bijector.inverse_and_ladj(self._flat(x), self.context)
        self._latest = (z, x, ladj, torch.is_grad_enabled())
        return z, ladj

    def latest(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(z, ladj)`` of the latest call if its data-side value is ``x`` (the same
        object), else ``None``."""
        latest = self._reusable()
        return None if latest is None or latest[1] is not x else (latest[0], latest[2])

    def _reusable(self) -> tuple[Tensor, Tensor, Tensor, bool] | None:
        # A call made without a graph cannot stand in for one that needs it.
        latest = self._latest
        return latest if latest is not None and (latest[3] or not torch.is_grad_enabled()) else None

    def _call(self, z: Tensor) -> Tensor:
        latest = self._reusable()
        return latest[1] if latest is not None and latest[0] is z else self.forward_and_ladj(z)[0]

    def _inverse(self, x: Tensor) -> Tensor:
        latest = self.latest(x)
        return latest[0] if latest is not None else self.inverse_and_ladj(x)[0]

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        latest = self.latest(x)
        if latest is not None and latest[0] is z:
            return latest[1]
        return self.inverse_and_ladj(x)[1]


class Chain(Bijector):
    """Composition :math:`T = T_K \\circ \\dots \\circ T_1` of bijectors (``T_1`` acts first on
    the base sample); log-determinants add.

    Examples:
        >>> import torch
        >>> from pyro_xform.transforms import Chain, Permutation
        >>> t = Chain([Permutation(3), Permutation(3)])
        >>> x, ladj = t.forward_and_ladj(torch.randn(4, 3))
        >>> x.shape, ladj.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, bijectors: Iterable[Bijector]) -> None:
        bijectors = list(bijectors)
        if not bijectors:
            raise ValueError("Chain needs at least one bijector")
        super().__init__(bijectors[0].features, max(b.context_features for b in bijectors))
        self.bijectors = nn.ModuleList(bijectors)
        self.differentiable = all(b.differentiable for b in bijectors)
        self.cheap_ladj = all(b.cheap_ladj for b in bijectors)
        self.codomain = bijectors[-1].codomain  # the last layer makes the data

    def forward_and_ladj(self, z, context=None):
        total = 0.0
        for b in self.bijectors:
            z, ladj = b.forward_and_ladj(z, context if b.context_features else None)
            total = total + ladj
        return z, _as_batch(total, z)

    def forward_value(self, z, context=None):
        for b in self.bijectors:
            z = b.forward_value(z, context if b.context_features else None)
        return z

    def inverse_and_ladj(self, x, context=None):
        total = 0.0
        for b in reversed(self.bijectors):
            x, ladj = b.inverse_and_ladj(x, context if b.context_features else None)
            total = total + ladj
        return x, _as_batch(total, x)

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Data-dependent initialization: pass ``x`` towards the base, letting every layer
        that has an ``initialize`` method (e.g. :class:`ActNorm`) set itself from the
        activations that reach it."""
        for b in reversed(self.bijectors):
            ctx = context if b.context_features else None
            if hasattr(b, "initialize"):
                b.initialize(x, ctx)
            x, _ = b.inverse_and_ladj(x, ctx)

    def __len__(self) -> int:
        return len(self.bijectors)

    def __getitem__(self, i) -> Bijector:
        return self.bijectors[i]


def _as_batch(ladj, x: Tensor) -> Tensor:
    if isinstance(ladj, Tensor):
        return ladj.expand(x.shape[:-1])
    return x.new_full(x.shape[:-1], float(ladj))


def broadcast_context(x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Broadcast the batch dims of ``x`` (..., D) and ``context`` (..., C) against each other."""
    if context is None:
        return x, None
    shape = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    return x.expand(shape + x.shape[-1:]), context.expand(shape + context.shape[-1:])
