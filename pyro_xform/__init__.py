"""pyro_xform: every deep generative model as a learned transform of a base distribution,
as Pyro distributions."""

from . import datasets, metrics, schedules, transforms
from .checkpoint import load, save
from .core import LOG_PROB_KINDS, Xform, XformDistribution
from .families import FAMILIES, IAF, MAF, NSF, Diffusion, FlowMatching, RealNVP
from .fit import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "IAF",
    "LOG_PROB_KINDS",
    "MAF",
    "NSF",
    "Diffusion",
    "FitResult",
    "FlowMatching",
    "RealNVP",
    "Xform",
    "XformDistribution",
    "__version__",
    "datasets",
    "fit",
    "load",
    "metrics",
    "save",
    "schedules",
    "transforms",
]
