"""Every family inside a probabilistic program: learned priors in base space, generative
guides, amortized posteriors, diagnostics."""

from . import simulators
from .amortized import ESTIMATORS, Estimator, PosteriorEstimator, simulate
from .diagnostics import psis_khat, to_inference_data
from .guides import AutoXformGuide
from .likelihood import LikelihoodEstimator
from .reparam import BaseReparam

__all__ = [
    "ESTIMATORS",
    "AutoXformGuide",
    "BaseReparam",
    "Estimator",
    "LikelihoodEstimator",
    "PosteriorEstimator",
    "psis_khat",
    "simulate",
    "simulators",
    "to_inference_data",
]
