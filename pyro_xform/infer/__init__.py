"""Every family inside a probabilistic program: learned priors in base space, generative
guides, amortized posteriors, diagnostics."""

from . import simulators
from .amortized import ESTIMATORS, Estimator, PosteriorEstimator, simulate
from .calibration import (
    SBC,
    Coverage,
    expected_coverage,
    plot_coverage,
    plot_sbc,
    posterior_predictive,
    sbc,
    tarp,
)
from .diagnostics import psis_khat, to_inference_data
from .guides import AutoXformGuide
from .likelihood import LikelihoodEstimator
from .reparam import BaseReparam
from .sequential import simulate_at, train_rounds, truncated_prior

__all__ = [
    "ESTIMATORS",
    "SBC",
    "AutoXformGuide",
    "BaseReparam",
    "Coverage",
    "Estimator",
    "LikelihoodEstimator",
    "PosteriorEstimator",
    "expected_coverage",
    "plot_coverage",
    "plot_sbc",
    "posterior_predictive",
    "psis_khat",
    "sbc",
    "simulate",
    "simulate_at",
    "simulators",
    "tarp",
    "to_inference_data",
    "train_rounds",
    "truncated_prior",
]
