"""pyro_xform: every deep generative model as a learned transform of a base distribution,
as Pyro distributions."""

from . import datasets, distributed, infer, metrics, objectives, schedules, transforms
from .checkpoint import load, save
from .core import LOG_PROB_KINDS, GeneratedDistribution, Xform, XformDistribution
from .distributed import Distributed
from .families import (
    FAMILIES,
    GAN,
    IAF,
    MAF,
    NSF,
    VAE,
    Autoencoder,
    Diffusion,
    DiscreteAutoregressive,
    Embedded,
    FlowMatching,
    RealNVP,
)
from .fit import FitResult, fit
from .two_stage import fit_latent, fit_prior

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "GAN",
    "IAF",
    "LOG_PROB_KINDS",
    "MAF",
    "NSF",
    "VAE",
    "Autoencoder",
    "Diffusion",
    "DiscreteAutoregressive",
    "Distributed",
    "Embedded",
    "FitResult",
    "FlowMatching",
    "GeneratedDistribution",
    "RealNVP",
    "Xform",
    "XformDistribution",
    "__version__",
    "datasets",
    "distributed",
    "fit",
    "fit_latent",
    "fit_prior",
    "infer",
    "load",
    "metrics",
    "objectives",
    "save",
    "schedules",
    "transforms",
]
