"""Diagnostics: ArviZ ``InferenceData`` from Pyro MCMC, guides and amortized posteriors, and
the PSIS :math:`\\hat k` of a variational or amortized posterior."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer.importance import psis_diagnostic, vectorized_importance_weights

from ..core import XformDistribution

__all__ = ["psis_khat", "to_inference_data"]


def _grouped(draws: Mapping[str, Any], chains: bool) -> dict[str, np.ndarray]:
    out = {}
    for name, value in draws.items():
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        out[name] = array if chains else array[None]  # one chain
    return out


def _from_dict(groups: dict[str, dict[str, np.ndarray]]):
    import arviz as az

    # ArviZ 0.x takes one keyword per group; 1.x takes a dict of groups.
    if "posterior" in inspect.signature(az.from_dict).parameters:
        return az.from_dict(**groups)
    return az.from_dict(groups)


def to_inference_data(
    source: Any,
    *,
    num_samples: int = 1000,
    site: str = "theta",
    observed_data: Mapping[str, Any] | None = None,
    posterior_predictive: Mapping[str, Any] | None = None,
):
    """An ArviZ ``InferenceData`` from what a Pyro workflow produces, built with
    ``arviz.from_dict`` (so it works with ArviZ 0.x and 1.x):

    - a Pyro :class:`~pyro.infer.MCMC` run (its chains kept apart, for :math:`\\hat R`);
    - a dict of draws, ``{site: tensor (draws, ...)}``, e.g. ``Predictive(model, guide=guide,
      num_samples=n)(...)``, taken as one chain;
    - a posterior distribution (e.g. :meth:`PosteriorEstimator.posterior`), from which
      ``num_samples`` draws of ``site`` are taken.

    Args:
        source: one of the above.
        num_samples: draws from a distribution.
        site: the variable name of a distribution's draws.
        observed_data, posterior_predictive: extra groups, ``{name: array}`` (posterior
            predictive draws as ``(draws, ...)``, one chain).

    Examples:
        >>> import torch
        >>> idata = to_inference_data({"theta": torch.randn(100, 2)})
        >>> idata.posterior["theta"].shape
        (1, 100, 2)
    """
    if hasattr(source, "get_samples") and hasattr(source, "num_chains"):
        posterior = _grouped(source.get_samples(group_by_chain=True), chains=True)
    elif isinstance(source, Mapping):
        posterior = _grouped(source, chains=False)
    elif isinstance(source, torch.distributions.Distribution):
        with torch.no_grad():
            posterior = _grouped({site: source.sample((num_samples,))}, chains=False)
    else:
        raise ValueError(
            "to_inference_data takes a Pyro MCMC, a dict of draws or a distribution, "
            f"got {type(source).__name__}"
        )
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": posterior}
    if observed_data is not None:
        groups["observed_data"] = {k: np.asarray(torch.as_tensor(v).cpu()) for k, v in observed_data.items()}
    if posterior_predictive is not None:
        groups["posterior_predictive"] = _grouped(posterior_predictive, chains=False)
    return _from_dict(groups)


def psis_khat(
    model: Callable,
    guide: Callable | XformDistribution,
    *args,
    site: str = "theta",
    num_particles: int = 1000,
    **kwargs,
) -> float:
    """The Pareto :math:`\\hat k` of the importance weights :math:`p(\\theta, x)/q(\\theta)`
    of a posterior approximation against the model's joint density (Pyro's
    ``psis_diagnostic``). :math:`\\hat k < 0.5`: excellent; :math:`< 0.7`: usable;
    :math:`> 0.7`: the approximation misses mass the posterior has — do not trust it (a
    warning says so). Weights equal up to rounding (the approximation is the posterior)
    have no tail to fit: :math:`\\hat k \\le 0` (:math:`-\\infty` where Pyro's fit finds no
    tail at all).

    Args:
        model: the Pyro model, called with ``*args, **kwargs`` (its observations observed).
        guide: a Pyro guide (e.g. an autoguide), or a distribution over ``site`` (e.g. an
            amortized posterior :math:`q(\\theta \\mid x_{obs})`). With a distribution, the
            model's only latent site must be ``site``.
        site: the latent site a distribution stands for.
        num_particles: importance samples.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("theta", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> wider = dist.Normal(torch.tensor(0.5), 1.0)  # the posterior for y = 1, widened
        >>> psis_khat(model, wider, torch.tensor(1.0)) < 0.5
        True

    References:
        Pareto smoothed importance sampling (Vehtari et al., 2015, arXiv:1507.02646). Yes,
        but did it work?: evaluating variational inference (Yao et al., 2018,
        arXiv:1802.02538).
    """
    if isinstance(guide, torch.distributions.Distribution):
        distribution = guide

        def guide(*_, **__):  # a guide made of the distribution
            return pyro.sample(site, distribution)

    with torch.no_grad(), warnings.catch_warnings():
        # Pyro warns and returns inf both for a tail too thin to fit (a bad proposal) and
        # for equal weights (a perfect one); the weights' spread tells which.
        warnings.filterwarnings("ignore", "Not enough tail samples")
        khat = float(psis_diagnostic(model, guide, *args, num_particles=num_particles, **kwargs))
        if khat == math.inf and _equal_weights(model, guide, num_particles, *args, **kwargs):
            return -math.inf
    if khat > 0.7:
        warnings.warn(
            f"PSIS k-hat = {khat:.2f} > 0.7: the approximation misses mass the posterior has; "
            "do not trust its expectations (try a flow guide, AutoXformGuide)",
            stacklevel=2,
        )
    return khat


def _equal_weights(model: Callable, guide: Callable, num_particles: int, *args, **kwargs) -> bool:
    # Pyro's psis_diagnostic options, the rest are the model's arguments.
    kwargs.pop("max_simultaneous_particles", None)
    nesting = kwargs.pop("max_plate_nesting", 7)
    log_weights = vectorized_importance_weights(
        model, guide, *args, num_samples=num_particles, max_plate_nesting=nesting, **kwargs
    )[0]
    # Relative differences at the floating-point noise of a log density.
    spread = float(log_weights.max() - log_weights.min())
    return spread <= 1e3 * torch.finfo(log_weights.dtype).eps * max(1.0, float(log_weights.abs().max()))
