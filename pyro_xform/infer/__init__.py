"""Every family inside a probabilistic program: learned priors in base space, generative
guides, amortized posteriors, diagnostics."""

from . import simulators
from .amortized import ESTIMATORS, Estimator, PosteriorEstimator, simulate
from .diagnostics import psis_khat, to_inference_data
from .guides import AutoXformGuide
from .reparam import BaseReparam

__all__ = [
    "ESTIMATORS",
    "AutoXformGuide",
    "BaseReparam",
    "Estimator",
    "PosteriorEstimator",
    "psis_khat",
    "simulate",
    "simulators",
    "to_inference_data",
]
