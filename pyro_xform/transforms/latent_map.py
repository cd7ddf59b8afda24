"""Latent maps: maps from a base variable to data that are *not* bijections (a decoder, a
GAN generator, an inverse CDF), as torch ``Transform`` objects so that the families built on them
are still ``TransformedDistribution`` objects, base → data."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from ..core import unflatten_event

__all__ = ["LatentMap", "LatentMapTransform"]


class LatentMap:
    """A map :math:`x = G(z; c)` from a latent of size ``latent`` to data of size
    ``features``, with no inverse and no Jacobian determinant.

    It holds a function, not parameters: the family that owns the networks passes
    ``fn(z, context)``, so every parameter has one name in the family's ``state_dict``.

    Args:
        fn: ``(z, context) -> x``.
        latent: size of ``z``.
        features: size of ``x``.
        support: the constraint of one coordinate of ``x`` (real by default).
        differentiable: whether ``fn`` is differentiable in ``z`` (a reparameterized sample).

    Examples:
        >>> g = LatentMap(lambda z, c: torch.cat([z, z], -1), latent=2, features=4)
        >>> g.condition(None)(torch.ones(3, 2)).shape
        torch.Size([3, 4])
    """

    cheap_ladj = True

    def __init__(
        self,
        fn: Callable[[Tensor, Tensor | None], Tensor],
        latent: int,
        features: int,
        *,
        support: constraints.Constraint = constraints.real,
        differentiable: bool = True,
    ) -> None:
        self.fn, self.latent, self.features = fn, latent, features
        self.support, self.differentiable = support, differentiable

    def forward_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.fn(z, context)

    def condition(self, context: Tensor | None, event_shape: torch.Size | None = None) -> LatentMapTransform:
        """The map with ``context`` fixed, as a torch ``Transform`` whose data side has
        ``event_shape`` (default ``(features,)``)."""
        return LatentMapTransform(self, context, event_shape)


class LatentMapTransform(Transform):
    """A :class:`LatentMap` with its context fixed, as a torch ``Transform`` (not bijective:
    ``inv`` and ``log_abs_det_jacobian`` raise ``NotImplementedError``)."""

    bijective = False
    domain = constraints.real_vector

    def __init__(
        self, latent_map: LatentMap, context: Tensor | None, event_shape: torch.Size | None = None
    ) -> None:
        super().__init__(cache_size=0)
        self.latent_map, self.context = latent_map, context
        self.event_shape = torch.Size((latent_map.features,) if event_shape is None else event_shape)

    @property
    def codomain(self) -> constraints.Constraint:
        return constraints.independent(self.latent_map.support, len(self.event_shape))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, LatentMapTransform)
            and other.latent_map is self.latent_map
            and other.context is self.context
        )

    def forward_shape(self, shape):
        return torch.Size((*shape[:-1], *self.event_shape))

    def inverse_shape(self, shape):
        return torch.Size((*shape[: len(shape) - len(self.event_shape)], self.latent_map.latent))

    def _call(self, z: Tensor) -> Tensor:
        x = self.latent_map.forward_value(z, self.context)
        return unflatten_event(x, self.event_shape)

    def _inverse(self, x: Tensor) -> Tensor:
        raise NotImplementedError("a generator is not invertible: there is no z = G^-1(x)")

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError("a generator maps between spaces of different size or is not smooth")
