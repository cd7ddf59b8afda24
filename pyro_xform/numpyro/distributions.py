"""NumPyro twins of torch's standard distributions, for priors written in a Pyro model."""

from __future__ import annotations

from collections.abc import Callable

import numpyro.distributions as ndist
import torch.distributions as tdist

from .nn import array

__all__ = ["numpyro_distribution"]

#: torch distribution → its NumPyro twin, built from the torch one's parameters.
_TWINS: dict[type, Callable[[tdist.Distribution], ndist.Distribution]] = {
    tdist.Normal: lambda d: ndist.Normal(array(d.loc), array(d.scale)),
    tdist.Uniform: lambda d: ndist.Uniform(array(d.low), array(d.high)),
    tdist.LogNormal: lambda d: ndist.LogNormal(array(d.loc), array(d.scale)),
    tdist.HalfNormal: lambda d: ndist.HalfNormal(array(d.scale)),
    tdist.HalfCauchy: lambda d: ndist.HalfCauchy(array(d.scale)),
    tdist.Cauchy: lambda d: ndist.Cauchy(array(d.loc), array(d.scale)),
    tdist.Laplace: lambda d: ndist.Laplace(array(d.loc), array(d.scale)),
    tdist.StudentT: lambda d: ndist.StudentT(array(d.df), array(d.loc), array(d.scale)),
    tdist.Exponential: lambda d: ndist.Exponential(array(d.rate)),
    tdist.Gamma: lambda d: ndist.Gamma(array(d.concentration), array(d.rate)),
    tdist.Beta: lambda d: ndist.Beta(array(d.concentration1), array(d.concentration0)),
    tdist.Dirichlet: lambda d: ndist.Dirichlet(array(d.concentration)),
    tdist.MultivariateNormal: lambda d: ndist.MultivariateNormal(
        array(d.loc), scale_tril=array(d.scale_tril)
    ),
}


def numpyro_distribution(distribution: tdist.Distribution) -> ndist.Distribution:
    """The NumPyro twin of a torch (or Pyro) distribution: the same family and parameters,
    batch and event shapes, so a prior written in a Pyro model scores the same in NumPyro.

    Covers the standard continuous families (normal, uniform, log-normal, half-normal,
    half-Cauchy, Cauchy, Laplace, Student's t, exponential, gamma, beta, Dirichlet,
    multivariate normal) and ``Independent`` wrappers of them (Pyro's ``.to_event``).

    Args:
        distribution: a torch or Pyro distribution.

    Raises:
        NotImplementedError: a family without a twin here.

    Examples:
        >>> import pyro.distributions as dist, torch
        >>> from pyro_xform.numpyro.distributions import numpyro_distribution
        >>> twin = numpyro_distribution(dist.Normal(torch.zeros(3), 2.0).to_event(1))
        >>> twin.batch_shape, twin.event_shape, round(float(twin.log_prob(twin.mean)), 4)
        ((), (3,), -4.8363)
    """
    if isinstance(distribution, tdist.Independent):
        inner = numpyro_distribution(distribution.base_dist)
        return inner.to_event(distribution.reinterpreted_batch_ndims)
    # Pyro's distributions subclass torch's; the first torch class in the MRO names the family.
    for cls in type(distribution).__mro__:
        if cls in _TWINS:
            return _TWINS[cls](distribution)
    raise NotImplementedError(
        f"no NumPyro twin for {type(distribution).__name__}; covered: Independent, "
        + ", ".join(sorted(c.__name__ for c in _TWINS))
    )
