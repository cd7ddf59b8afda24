"""Bijectors (base → data), each a Pyro ``ConditionalTransformModule``."""

from .autoregressive import AffineAutoregressive, Autoregressive, SplineAutoregressive
from .base import Bijector, Chain, ConditionedBijector
from .coupling import AffineCoupling, Coupling, SplineCoupling
from .elementwise import Affine, RQSpline
from .linear import LULinear, Permutation
from .normalization import ActNorm

__all__ = [
    "ActNorm",
    "Affine",
    "AffineAutoregressive",
    "AffineCoupling",
    "Autoregressive",
    "Bijector",
    "Chain",
    "ConditionedBijector",
    "Coupling",
    "LULinear",
    "Permutation",
    "RQSpline",
    "SplineAutoregressive",
    "SplineCoupling",
]
