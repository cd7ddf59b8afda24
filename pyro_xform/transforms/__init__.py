"""Bijectors (base → data), each a Pyro ``ConditionalTransformModule``."""

from .autoregressive import AffineAutoregressive, Autoregressive, SplineAutoregressive
from .base import Bijector, Chain, ConditionedBijector
from .coupling import AffineCoupling, Coupling, SplineCoupling
from .elementwise import Affine, RQSpline
from .latent_map import LatentMap, LatentMapTransform
from .linear import LULinear, Permutation, TriangularAffine
from .logit import Logit
from .multiscale import MultiscaleFlow, scales_for
from .normalization import ActNorm, ConditionalStandardize, Standardize
from .ode import FIXED_STEP_SOLVERS, ODESettings, ODETransform

__all__ = [
    "FIXED_STEP_SOLVERS",
    "ActNorm",
    "Affine",
    "AffineAutoregressive",
    "AffineCoupling",
    "Autoregressive",
    "Bijector",
    "Chain",
    "ConditionalStandardize",
    "ConditionedBijector",
    "Coupling",
    "LULinear",
    "LatentMap",
    "LatentMapTransform",
    "Logit",
    "MultiscaleFlow",
    "ODESettings",
    "ODETransform",
    "Permutation",
    "RQSpline",
    "SplineAutoregressive",
    "SplineCoupling",
    "Standardize",
    "TriangularAffine",
    "scales_for",
]
