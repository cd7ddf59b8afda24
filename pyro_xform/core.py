"""The contract: :class:`Xform` (a module that returns a distribution) and
:class:`XformDistribution` (a Pyro distribution, base → data).

Every family in pyro_xform is a learned transform :math:`T_\\theta` of a simple base
distribution :math:`p_Z` into the data distribution,

.. math:: x = T_\\theta(z; c), \\qquad z \\sim p_Z,

and differs only in what :math:`T` is, how honest its density is
(:data:`LOG_PROB_KINDS`) and which objective trains it.

References:
    Deep generative models as transforms of a base distribution (Bondar et al., 2025,
    arXiv:2506.17171). Normalizing flows for probabilistic modeling and inference
    (Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan, 2019, arXiv:1912.02762).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, ClassVar

import pyro.distributions as pdist
import torch
from torch import Tensor, nn
from torch.distributions import constraints

__all__ = [
    "LOG_PROB_KINDS",
    "GeneratedDistribution",
    "Xform",
    "XformDistribution",
    "as_xform",
    "check_context",
    "event_shape_of",
    "flatten_event",
    "is_count",
    "normal",
    "register_normal",
    "spec_of",
    "unflatten_event",
]

#: What ``log_prob`` returns: the exact density, a lower bound, an estimate, or nothing.
LOG_PROB_KINDS = ("exact", "lower_bound", "estimate", None)


def is_count(value: Any, minimum: int = 1) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def event_shape_of(features: Any) -> torch.Size:
    """The event shape a ``features`` argument names: an int ``n`` is ``(n,)``, a sequence of
    positive ints (a tuple, or the list a JSON config holds) is that shape.

    Raises:
        ValueError: anything else (zero or negative sizes, an empty shape, floats, bools).

    Examples:
        >>> event_shape_of(3), event_shape_of([1, 8, 8])
        (torch.Size([3]), torch.Size([1, 8, 8]))
    """
    if is_count(features):
        return torch.Size((features,))
    if isinstance(features, (tuple, list, torch.Size)) and features and all(is_count(n) for n in features):
        return torch.Size(features)
    raise ValueError(f"features must be a positive int or a shape of positive ints, got {features!r}")


def flatten_event(x: Tensor, event_shape: torch.Size) -> Tensor:
    """``x`` of shape ``(..., *event_shape)`` as ``(..., prod(event_shape))``: the flat view
    every transform and network works on (a view where ``x`` is contiguous)."""
    if len(event_shape) == 1:
        return x
    lead = x.shape[: x.dim() - len(event_shape)]
    return x.reshape(*lead, event_shape.numel())


def unflatten_event(x: Tensor, event_shape: torch.Size) -> Tensor:
    """``x`` of shape ``(..., prod(event_shape))`` as ``(..., *event_shape)``."""
    return x if len(event_shape) == 1 else x.reshape(*x.shape[:-1], *event_shape)


def check_context(context: Tensor | None, size: int, *, name: str = "context") -> Tensor | None:
    """Check a conditioning tensor against the size a model expects.

    Raises:
        ValueError: a context for an unconditional model, a missing one for a conditional
            model, a non-floating dtype or a trailing size other than ``size``.
    """
    if size == 0:
        if context is not None:
            raise ValueError(f"this model is unconditional (context=0) but a {name} was given")
        return None
    if context is None:
        raise ValueError(f"this model is conditional: it needs a {name} of shape (..., {size})")
    if not isinstance(context, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(context).__name__}")
    if not context.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {context.dtype}")
    if context.dim() == 0 or context.shape[-1] != size:
        raise ValueError(
            f"{name} has shape {tuple(context.shape)}; expected (..., {size}) "
            f"(the model was built with context={size})"
        )
    return context


class XformDistribution(pdist.TransformedDistribution, pdist.TorchDistribution):
    """A learned transform of a base distribution, as a Pyro distribution (base → data).

    ``x = T(z; c)`` with ``z ~ base``. Where ``T`` is a bijection with a tractable
    Jacobian the density is exact by the change of variables,

    .. math:: \\log p(x \\mid c) = \\log p_Z(T^{-1}(x; c)) - \\log\\left|\\det
        \\frac{\\partial T}{\\partial z}\\right|_{z = T^{-1}(x; c)} .

    The transform is a :class:`pyro_xform.transforms.Bijector` (a Pyro
    ``ConditionalTransformModule``) that computes a value and its log-determinant in one
    pass, so :meth:`rsample_and_log_prob` costs one pass and :meth:`log_prob` of a sample
    just drawn costs nothing.

    Args:
        base: the base distribution, event shape ``(features,)``; its batch shape is the
            distribution's batch shape.
        transform: the bijector, base → data.
        context: conditioning tensor broadcasting against the batch shape, or ``None``.
        log_prob_kind: one of :data:`LOG_PROB_KINDS`.
        event_shape: the shape of one datum, e.g. ``(1, 28, 28)``, where it is not the flat
            ``(features,)`` the transform works on; values are reshaped at the boundary.
        validate_args: as in :class:`torch.distributions.Distribution`.

    Examples:
        >>> import torch, pyro_xform
        >>> d = pyro_xform.MAF(features=2)()
        >>> x, lp = d.rsample_and_log_prob((5,))
        >>> x.shape, lp.shape, d.log_prob_kind
        (torch.Size([5, 2]), torch.Size([5]), 'exact')
        >>> bool(torch.equal(d.log_prob(x), lp))
        True

    References:
        Normalizing flows for probabilistic modeling and inference (Papamakarios et al.,
        2019, arXiv:1912.02762).
    """

    arg_constraints: ClassVar[dict] = {}

    def __init__(
        self,
        base: torch.distributions.Distribution,
        transform: Any,
        context: Tensor | None = None,
        *,
        log_prob_kind: str | None = "exact",
        event_shape: tuple[int, ...] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if log_prob_kind not in LOG_PROB_KINDS:
            raise ValueError(f"log_prob_kind must be one of {LOG_PROB_KINDS}, got {log_prob_kind!r}")
        self.bijector = transform
        self.context = context
        self.log_prob_kind = log_prob_kind
        self.data_shape = None if event_shape is None else torch.Size(event_shape)
        super().__init__(base, [transform.condition(context, self.data_shape)], validate_args=validate_args)

    # -- shape ---------------------------------------------------------------------------
    def expand(self, batch_shape, _instance=None) -> XformDistribution:
        new = self._get_checked_instance(XformDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        XformDistribution.__init__(
            new,
            self.base_dist.expand(batch_shape),
            self.bijector,
            expanded_context(self.context, batch_shape),
            log_prob_kind=self.log_prob_kind,
            event_shape=self.data_shape,
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new

    @property
    def support(self):
        codomain = getattr(self.bijector, "codomain", constraints.real)
        if codomain.event_dim:  # a torch transform's own, over vectors: not elementwise
            codomain = constraints.real
        return constraints.independent(codomain, len(self.event_shape))

    def unflatten(self, x: Tensor) -> Tensor:
        """A flat value ``(..., features)`` of the transform as data ``(..., *event_shape)``."""
        return x if self.data_shape is None else unflatten_event(x, self.data_shape)

    @property
    def has_rsample(self) -> bool:
        return bool(getattr(self.bijector, "differentiable", True))

    # -- sampling ------------------------------------------------------------------------
    def _forward(self, sample_shape, reparameterized: bool) -> tuple[Tensor, Tensor]:
        z = self.base_dist.rsample(sample_shape) if reparameterized else self.base_dist.sample(sample_shape)
        x, ladj = self.transforms[0].forward_and_ladj(z)
        return x, self.base_dist.log_prob(z) - ladj

    def rsample_and_log_prob(self, sample_shape=()) -> tuple[Tensor, Tensor]:
        """Draw a reparameterized sample and its log-density in one pass."""
        return self._forward(torch.Size(sample_shape), True)

    def rsample(self, sample_shape=()) -> Tensor:
        return self._forward(torch.Size(sample_shape), True)[0]

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            if getattr(self.bijector, "cheap_ladj", True):
                return self._forward(torch.Size(sample_shape), False)[0]
            # Where the log-determinant costs extra (an ODE's divergence), a plain draw skips it.
            z = self.base_dist.sample(torch.Size(sample_shape))
            return self.unflatten(self.bijector.forward_value(z, self.context))

    # -- density -------------------------------------------------------------------------
    def log_prob(self, value: Tensor) -> Tensor:
        if self.log_prob_kind is None:
            raise NotImplementedError(self._no_density_message())
        transform = self.transforms[0]
        latest = transform.latest(value)  # the value was just drawn: its z and ladj are known
        if latest is None:
            if self._validate_args:
                self._validate_sample(value)
            latest = transform.inverse_and_ladj(value)
        z, ladj = latest
        return self.base_dist.log_prob(z) - ladj

    def _no_density_message(self) -> str:
        return (
            "this model has no tractable density (log_prob_kind is None); use sample-based "
            "metrics, or run inference over the base variable"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, "
            f"event_shape={tuple(self.event_shape)}, log_prob_kind={self.log_prob_kind!r})"
        )


def expanded_context(context: Tensor | None, batch_shape: torch.Size) -> Tensor | None:
    """A context broadcast to ``batch_shape`` (its last dimension kept)."""
    return None if context is None else context.expand(batch_shape + context.shape[-1:])


class GeneratedDistribution(XformDistribution):
    """A transform of a base distribution that is not a bijection: :math:`x = G(z; c)`,
    optionally followed by observation noise :math:`x \\sim p(x \\mid G(z; c))`.

    This is the distribution of the latent-variable and implicit families (VAE,
    autoencoder, GAN, discrete autoregressive). Its density is what the family can honestly
    give, said by ``log_prob_kind``: ``"exact"`` (the chain rule of a discrete
    autoregressive model), ``"estimate"`` (importance weighting over :math:`z`) or ``None``
    (an implicit model: ``log_prob`` raises ``NotImplementedError`` naming what to use
    instead). It is still a ``TransformedDistribution`` whose base is the base (or prior)
    distribution, so Pyro sees the usual batch and event shapes. The map is
    :attr:`latent_map` (there is no ``bijector``: it is not one).

    Args:
        base: the distribution of :math:`z`.
        latent_map: a :class:`~pyro_xform.transforms.LatentMap`.
        context: conditioning tensor, or ``None``.
        log_prob_kind: one of :data:`LOG_PROB_KINDS`.
        density: ``(value, context) -> log-density`` (exact or estimated); needed unless
            ``log_prob_kind`` is ``None``.
        observe: ``G(z) -> distribution`` of the observation noise, or ``None`` (``x = G(z)``).
        reparameterized: whether a draw is differentiable in the parameters.
        no_density: the message of ``log_prob`` for an implicit model.
        event_shape: the shape of one datum where it is not ``(features,)``: a noiseless
            draw is reshaped to it, and ``observe`` must return a distribution of it.
        validate_args: as in :class:`torch.distributions.Distribution`.

    Examples:
        >>> import pyro_xform
        >>> gan = pyro_xform.GAN(features=3, latent=2)
        >>> d = gan()
        >>> d.sample((4,)).shape, d.log_prob_kind
        (torch.Size([4, 3]), None)
    """

    def __init__(
        self,
        base: torch.distributions.Distribution,
        latent_map: Any,
        context: Tensor | None = None,
        *,
        log_prob_kind: str | None = None,
        density=None,
        observe=None,
        reparameterized: bool = True,
        no_density: str | None = None,
        event_shape: tuple[int, ...] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if log_prob_kind not in LOG_PROB_KINDS:
            raise ValueError(f"log_prob_kind must be one of {LOG_PROB_KINDS}, got {log_prob_kind!r}")
        if log_prob_kind is not None and density is None:
            raise ValueError(f"a density function is needed for log_prob_kind={log_prob_kind!r}")
        self.latent_map, self.context, self.log_prob_kind = latent_map, context, log_prob_kind
        self.density, self.observe = density, observe
        self.reparameterized, self.no_density = reparameterized, no_density
        self.data_shape = None if event_shape is None else torch.Size(event_shape)
        # The transformed distribution's own constructor: there is no bijector to hold.
        pdist.TransformedDistribution.__init__(
            self, base, [latent_map.condition(context, self.data_shape)], validate_args=validate_args
        )

    def expand(self, batch_shape, _instance=None) -> GeneratedDistribution:
        new = self._get_checked_instance(GeneratedDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        GeneratedDistribution.__init__(
            new,
            self.base_dist.expand(batch_shape),
            self.latent_map,
            expanded_context(self.context, batch_shape),
            log_prob_kind=self.log_prob_kind,
            density=self.density,
            observe=self.observe,
            reparameterized=self.reparameterized,
            no_density=self.no_density,
            event_shape=self.data_shape,
            validate_args=False,
        )
        new._validate_args = self._validate_args
        return new

    @property
    def support(self):
        return constraints.independent(self.latent_map.support, len(self.event_shape))

    @property
    def has_rsample(self) -> bool:
        return bool(self.reparameterized and self.latent_map.differentiable)

    def _draw(self, sample_shape, reparameterized: bool) -> Tensor:
        base = self.base_dist
        z = base.rsample(sample_shape) if reparameterized else base.sample(sample_shape)
        x = self.latent_map.forward_value(z, self.context)
        if self.observe is None:
            return self.unflatten(x)
        noise = self.observe(x)
        return noise.rsample() if reparameterized else noise.sample()

    def rsample(self, sample_shape=()) -> Tensor:
        if not self.has_rsample:
            raise NotImplementedError("draws of this model are not reparameterizable; use sample()")
        return self._draw(torch.Size(sample_shape), True)

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            return self._draw(torch.Size(sample_shape), False)

    def rsample_and_log_prob(self, sample_shape=()) -> tuple[Tensor, Tensor]:
        """A draw (reparameterized where possible) and its log-density; two passes, since the
        density of a generator's draw is not a by-product of drawing it."""
        x = self.rsample(sample_shape) if self.has_rsample else self.sample(sample_shape)
        return x, self.log_prob(x)

    def log_prob(self, value: Tensor) -> Tensor:
        if self.log_prob_kind is None:
            raise NotImplementedError(self.no_density or self._no_density_message())
        if self._validate_args:
            self._validate_sample(value)
        return self.density(value, self.context)


def register_normal(module: nn.Module, name: str, size: int) -> None:
    """Buffers ``{name}_loc`` (zeros) and ``{name}_scale`` (ones) of a diagonal normal over
    ``size`` numbers: they follow the module's ``.to()``, so its draws do too."""
    module.register_buffer(f"{name}_loc", torch.zeros(size))
    module.register_buffer(f"{name}_scale", torch.ones(size))


def normal(module: nn.Module, name: str, batch_shape=()) -> torch.distributions.Distribution:
    """The normal of :func:`register_normal`'s buffers ``name``, with ``batch_shape``."""
    loc, scale = getattr(module, f"{name}_loc"), getattr(module, f"{name}_scale")
    # Built on every call of a model (each SVI step of a guide): the buffers are valid by
    # construction, so the parameter checks are skipped, and so is an empty expand.
    d = pdist.Normal(loc, scale, validate_args=False).to_event(1)
    batch_shape = torch.Size(batch_shape)
    return d.expand(batch_shape) if batch_shape else d


def spec_of(value: Any) -> Any:
    """A constructor argument as it is recorded: a model becomes ``{"family", "kwargs"}``
    (its class name and constructor arguments); anything else stays as it is."""
    if isinstance(value, Xform):
        return {"family": type(value).__name__, "kwargs": value.config}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. ODESettings
        return dataclasses.asdict(value)
    return value


def as_xform(spec: Any, *, name: str) -> Xform | None:
    """A model from a constructor argument: ``None`` or an :class:`Xform` (a nested model
    recorded in a checkpoint's config is rebuilt by :func:`pyro_xform.checkpoint.build`
    before it reaches a constructor)."""
    if spec is None or isinstance(spec, Xform):
        return spec
    raise ValueError(f"{name} must be a pyro_xform model (an Xform) or None, got {type(spec).__name__}")


def _record_config(init):
    """Wrap ``__init__`` so an instance remembers the arguments it was built with."""

    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        outermost = "config" not in self.__dict__
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = {}
            for name, value in bound.arguments.items():
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:  # recorded as the keywords they were
                    arguments.update({k: spec_of(v) for k, v in value.items()})
                elif name != "self":
                    arguments[name] = spec_of(value)
            object.__setattr__(self, "config", arguments)
        init(self, *args, **kwargs)

    wrapped._records_config = True
    return wrapped


class Xform(nn.Module):
    """A learned transform of a base distribution; calling it returns a distribution.

    ``xform(context=None)`` returns an :class:`XformDistribution` over events of shape
    ``(features,)`` whose batch shape is ``context.shape[:-1]``. Parameters live in the
    module, so ``pyro.module(name, xform)`` registers them for Pyro's optimizers.

    Subclasses set :attr:`log_prob_kind` and :attr:`default_objective` and implement
    :meth:`forward`. Constructor arguments are recorded in :attr:`config` so that a model
    can be rebuilt from a checkpoint.

    Args:
        features: event size, or an event shape such as ``(1, 28, 28)``; :attr:`features` is
            then the flat size the transform works on and :attr:`event_shape` the shape.
        context: size of the conditioning vector (0 for an unconditional model).
    """

    log_prob_kind: ClassVar[str | None] = "exact"
    default_objective: ClassVar[str] = "mle"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__ and not getattr(cls.__init__, "_records_config", False):
            cls.__init__ = _record_config(cls.__init__)

    def __init__(self, features: int | tuple[int, ...], context: int = 0) -> None:
        super().__init__()
        shape = event_shape_of(features)
        if not is_count(context, 0):
            raise ValueError(f"context must be a non-negative int, got {context!r}")
        self.features = shape.numel()
        self._event_shape = shape
        self.context_features = context
        register_normal(self, "base", self.features)

    @property
    def event_shape(self) -> torch.Size:
        """The shape of one datum: ``(features,)``, or the shape the model was built with."""
        return self._event_shape

    @property
    def data_shape(self) -> torch.Size | None:
        """:attr:`event_shape` where it is not flat (what the distributions reshape to), else ``None``."""
        return self._event_shape if len(self._event_shape) > 1 else None

    def flatten(self, x: Tensor) -> Tensor:
        """Data ``(..., *event_shape)`` as the flat ``(..., features)`` the networks work on."""
        return flatten_event(x, self._event_shape)

    def unflatten(self, x: Tensor) -> Tensor:
        """The flat ``(..., features)`` as data ``(..., *event_shape)``."""
        return unflatten_event(x, self._event_shape)

    @property
    def device(self) -> torch.device:
        """The device of the model's tensors (its base buffers follow ``.to()``)."""
        return self.base_loc.device

    @property
    def unwrapped(self) -> Xform:
        """The family that does the work: the model itself, or the one a wrapper (such as
        :class:`~pyro_xform.families.embedded.Embedded`) holds; objectives ask it."""
        return self

    def base(self, batch_shape=()) -> torch.distributions.Distribution:
        """The standard normal base distribution with the given batch shape."""
        return normal(self, "base", batch_shape)

    def check_context(self, context: Tensor | None) -> Tensor | None:
        """Validate ``context`` for this model (see :func:`check_context`)."""
        return check_context(context, self.context_features)

    def check_data(self, data: Tensor, *, name: str = "data") -> None:
        """Raise ``ValueError`` unless ``data`` is a non-empty finite batch of events.

        The message names the problem and the first offending row.
        """
        if not isinstance(data, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(data).__name__}")
        if not data.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {data.dtype}")
        if data.dim() != 1 + len(self.event_shape) or data.shape[1:] != self.event_shape:
            raise ValueError(
                f"{name} has shape {tuple(data.shape)}; expected (N, {', '.join(map(str, self.event_shape))})"
            )
        if data.shape[0] == 0:
            raise ValueError(f"{name} is empty (0 rows)")
        bad = ~torch.isfinite(data).flatten(1).all(1)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} has NaN or Inf values (first at row {row})")

    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        """Data-dependent initialization before training (``fit`` calls it once on the first
        batch); the default does nothing."""

    def forward(self, context: Tensor | None = None) -> XformDistribution:  # pragma: no cover
        raise NotImplementedError

    def compile(self, **options) -> None:
        """Compile the model's transform in place with ``torch.compile(**options)``, so its
        distributions score and sample through fused kernels. Calling an ``Xform`` only
        builds a distribution, so :meth:`torch.nn.Module.compile` would gain nothing; the
        families that have a compiled path (the discrete flows) override this.

        Raises:
            NotImplementedError: for a family without a compiled path.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no compiled path; compile() is offered by the discrete flows "
            "(Flow, MAF, IAF, RealNVP, NSF)"
        )

    def extra_repr(self) -> str:
        features = self.features if self.data_shape is None else tuple(self.data_shape)
        return f"features={features}, context={self.context_features}"
