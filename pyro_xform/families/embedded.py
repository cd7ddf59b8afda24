"""A conditional family whose context is a learned summary of a raw observation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Xform, XformDistribution, as_xform, event_shape_of
from ..nn.embedding import embedding_network
from ..transforms import Bijector

__all__ = ["Embedded"]


class Embedded(Xform):
    """A conditional exact family :math:`q_\\phi(y \\mid s_\\psi(c))` conditioned on an
    embedding :math:`s_\\psi` of the raw context :math:`c`, both trained together by the
    family's own objective (maximum likelihood, flow matching, score matching):

    .. math:: \\min_{\\phi, \\psi}\\; \\mathcal L_{\\text{family}}\\big(\\phi;\\, y, s_\\psi(c)\\big).

    The raw context has ``shape`` (given flat, ``(..., prod(shape))``, as every context),
    e.g. ``(n, d)`` for a set of :math:`n` i.i.d. observations, ``(C, T)`` for a time
    series or ``(C, H, W)`` for an image; the family is built with ``context`` equal to the
    embedding's output size. Everything else (draws, densities, ``fit``, checkpoints with a
    named embedding) is the family's.

    Args:
        family: a conditional family with an exact density and a bijection (a flow, flow
            matching, diffusion).
        embedding: ``"mlp"``, ``"deepset"``, ``"conv1d"``, ``"conv2d"``
            (:data:`pyro_xform.nn.embedding.EMBEDDINGS`, built with ``family.context`` outputs)
            or any ``nn.Module`` mapping ``(..., prod(shape))`` to
            ``(..., family.context_features)`` (a checkpoint then needs the module rebuilt by
            hand: its config is not JSON).
        shape: the raw context's shape.

    Examples:
        >>> import pyro_xform as px
        >>> model = Embedded(px.NSF(2, context=4, hidden=(8,)), "deepset", shape=(10, 3))
        >>> model(torch.randn(5, 30)).sample().shape
        torch.Size([5, 2])

    References:
        Automatic posterior transformation for likelihood-free inference (Greenberg,
        Nonnenmacher, Macke, 2019, arXiv:1905.07488), for embeddings trained with the
        estimator.
    """

    def __init__(
        self, family: Xform, embedding: str | nn.Module = "mlp", shape: int | Sequence[int] = 1
    ) -> None:
        family = as_xform(family, name="family")
        if family is None or family.context_features == 0:
            raise ValueError("an embedding needs a conditional family (built with context=k)")
        if family.log_prob_kind != "exact" or not isinstance(getattr(family, "transform", None), Bijector):
            raise ValueError(
                "an embedding conditions the families with an exact density and a bijection "
                f"(flows, flow matching, diffusion), not {type(family).__name__}"
            )
        shape = event_shape_of(shape)
        super().__init__(tuple(family.event_shape), context=shape.numel())
        self.family = family
        if isinstance(embedding, str):
            embedding = embedding_network(embedding, shape, family.context_features)
        elif not isinstance(embedding, nn.Module):
            raise ValueError(f"embedding must be a name or an nn.Module, got {type(embedding).__name__}")
        self.embedding = embedding
        self.to(family.device, family.base_loc.dtype)  # its own base and the embedding, where the family is
        self._check_embedding()
        self.log_prob_kind = family.log_prob_kind
        self.default_objective = family.default_objective

    @torch.no_grad()
    def _check_embedding(self) -> None:
        probe = self.embedding(self.base_loc.new_zeros(2, self.context_features))
        if probe.shape != (2, self.family.context_features):
            raise ValueError(
                f"the embedding maps (2, {self.context_features}) to {tuple(probe.shape)}; the family "
                f"takes contexts of size {self.family.context_features}"
            )

    @property
    def unwrapped(self) -> Xform:
        return self.family.unwrapped

    @property
    def data_shape(self) -> torch.Size | None:
        return self.family.data_shape

    def embed(self, context: Tensor | None) -> Tensor:
        """The summary :math:`s_\\psi(c)` of a raw context (checked first)."""
        return self.embedding(self.check_context(context))

    @property
    def transform(self) -> Bijector:
        """The family's bijector, conditioned on the raw context through the embedding."""
        return _EmbeddedBijector(self.family.transform, self.embedding)

    def forward(self, context: Tensor | None = None, **settings) -> XformDistribution:
        context = self.check_context(context)
        # The family's distribution for these settings, for its parts (base, bijector): a
        # summary of the right shape, not the embedding's, is all that takes.
        placeholder = context.new_zeros(*context.shape[:-1], self.family.context_features)
        inner = self.family(placeholder, **settings)
        return XformDistribution(
            inner.base_dist,
            _EmbeddedBijector(inner.bijector, self.embedding),
            context,
            log_prob_kind=inner.log_prob_kind,
            event_shape=inner.data_shape,
        )

    @torch.no_grad()
    def sample(self, sample_shape=(), context: Tensor | None = None, **settings) -> Tensor:
        """Draws given the raw context, by the family's own sampler (e.g. a diffusion's
        ``sampler=``; ``settings`` as the family's ``sample`` takes them)."""
        own = getattr(self.family, "sample", None)
        if own is None:
            return self(context).sample(sample_shape)
        return own(sample_shape, self.embed(context), **settings)

    def check_data(self, data: Tensor, *, name: str = "data") -> None:
        self.family.check_data(data, name=name)

    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        with torch.no_grad():
            self.family.initialize(data, self.embed(context))

    def cfm_loss(self, batch: Tensor, context: Tensor | None = None) -> Tensor:
        return self.family.cfm_loss(batch, self.embed(context))

    def dsm_loss(self, batch: Tensor, context: Tensor | None = None) -> Tensor:
        return self.family.dsm_loss(batch, self.embed(context))

    def compile(self, **options) -> None:
        self.family.compile(**options)


class _EmbeddedBijector(Bijector):
    """A family's bijector whose context is embedded first, so the distribution holds the
    raw context (and broadcasts, expands and conditions on it)."""

    def __init__(self, inner: Bijector, embedding: nn.Module) -> None:
        super().__init__(inner.features, inner.context_features)
        self.inner, self.embedding = inner, embedding
        self.differentiable, self.cheap_ladj = inner.differentiable, inner.cheap_ladj
        self.codomain = inner.codomain

    def forward_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inner.forward_and_ladj(z, self.embedding(context))

    def inverse_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inner.inverse_and_ladj(x, self.embedding(context))

    def forward_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.inner.forward_value(z, self.embedding(context))
