"""A trained likelihood estimator in NumPyro: the learned likelihood as a JAX function of
the parameters, and the posterior by NumPyro's compiled NUTS."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import torch
from numpyro.infer import MCMC, NUTS

from ..core import is_count
from ..infer import LikelihoodEstimator
from ..rng import draw_seed, fixed_seed
from .distributions import numpyro_distribution
from .export import XformDistribution, export_bijector, to_numpyro
from .nn import array

__all__ = ["likelihood", "sample_posterior"]


def likelihood(nle: LikelihoodEstimator, **settings) -> Callable[[jax.Array], XformDistribution]:
    """The learned likelihood :math:`q_\\phi(x \\mid \\theta)` of a trained
    :class:`~pyro_xform.infer.LikelihoodEstimator` as a JAX function of the parameters,
    traced ones included, so that it is the observation site of any NumPyro model:

    .. code-block:: python

        q = likelihood(nle)

        def model(x_obs):
            theta = numpyro.sample("theta", prior)
            with numpyro.plate("trials", len(x_obs)):
                numpyro.sample("x", q(theta), obs=x_obs)

    The parameters are standardized as in training; the result has batch shape
    ``theta.shape[:-1]``.

    Args:
        nle: a trained estimator whose family exports (see :func:`to_numpyro`).
        **settings: solver settings of a continuous-time family, as in :func:`to_numpyro`.

    Raises:
        RuntimeError: an untrained estimator.

    Examples:
        >>> import jax.numpy as jnp
        >>> from pyro_xform.infer import LikelihoodEstimator
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> nle = LikelihoodEstimator(gaussian_linear, hidden=(8,), transforms=1)
        >>> _ = nle.train(300, steps=5, progress=False, seed=0)
        >>> q = likelihood(nle)
        >>> q(jnp.zeros((4, 10))).log_prob(jnp.zeros(10)).shape
        (4,)
    """
    if nle.family is None or nle.parameter_standardizer is None:
        raise RuntimeError("train the estimator first")
    family, standardize = nle.family, export_bijector(nle.parameter_standardizer)

    def q(theta: jax.Array) -> XformDistribution:
        return to_numpyro(family, standardize.inverse_and_ladj(jnp.asarray(theta))[0], **settings)

    return q


def sample_posterior(
    nle: LikelihoodEstimator,
    x_obs: torch.Tensor,
    n: int,
    *,
    chains: int = 100,
    warmup: int = 200,
    candidates: int = 10_000,
    seed: int | None = None,
    **settings,
) -> torch.Tensor:
    """``n`` draws of the posterior under the simulator's own prior and the learned
    likelihood, by NumPyro's NUTS, compiled:

    .. math:: p(\\theta \\mid x_{1:m}) \\propto p(\\theta) \\prod_{i=1}^m q_\\phi(x_i \\mid \\theta).

    The same posterior as :meth:`LikelihoodEstimator.sample_posterior` (Pyro's NUTS),
    with the network compiled by XLA into each leapfrog step: ``chains`` chains run
    vectorized, each with its own step size and diagonal mass matrix adapted over
    ``warmup`` steps, started at sampling-importance-resampling draws
    (:meth:`LikelihoodEstimator.starting_points`). The prior's sites are translated by
    :func:`~pyro_xform.numpyro.distributions.numpyro_distribution`.

    Args:
        nle: a trained estimator whose family exports (see :func:`to_numpyro`).
        x_obs: one observation ``(d_x,)`` or ``m`` i.i.d. ones ``(m, d_x)``.
        n: the number of draws (the first ``ceil(n / chains)`` of every chain).
        chains: chains, each adapted on its own; the default is as many as sbibm's
            likelihood estimators run, so that the modes of a multimodal posterior are
            weighted by many chains' starting points (fewer run faster).
        warmup: warm-up steps of each chain (step size, diagonal mass matrix).
        candidates: prior draws for the chains' starting points.
        seed: seeds the starting points and the chains.
        **settings: solver settings of a continuous-time family.

    Returns:
        ``(n, d_theta)`` draws on the estimator's device and dtype, the sites concatenated
        in the estimator's order.

    Raises:
        ValueError: bad counts or observations, or a prior whose sites depend on other draws.
        NotImplementedError: a prior or family without a NumPyro twin.

    Examples:
        >>> import torch
        >>> from pyro_xform.infer import LikelihoodEstimator
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> nle = LikelihoodEstimator(gaussian_linear, hidden=(8,), transforms=1)
        >>> _ = nle.train(300, steps=5, progress=False, seed=0)
        >>> sample_posterior(nle, torch.zeros(10), 20, chains=2, warmup=20, seed=0).shape
        torch.Size([20, 10])

    References:
        The No-U-Turn sampler (Hoffman, Gelman, 2011, arXiv:1111.4246). Composable effects
        for flexible and accelerated probabilistic programming in NumPyro (Phan, Pradhan,
        Jankowiak, 2019, arXiv:1912.11554).
    """
    for name, value in (("n", n), ("chains", chains), ("warmup", warmup), ("candidates", candidates)):
        if not is_count(value):
            raise ValueError(f"n, chains, warmup and candidates must be positive ints; {name}={value!r}")
    x_obs = nle.check_observations(x_obs)
    priors = [(name, fn, numpyro_distribution(fn)) for name, fn in nle.prior_sites()]
    if seed is None:
        seed = draw_seed()
    with fixed_seed(nle.device, seed):
        start = nle.starting_points(x_obs, chains, candidates)
    # In JAX's default float (float64 under jax_enable_x64), as NUTS's own state is.
    real = jnp.result_type(float)
    initial = {
        name: numpyro.distributions.biject_to(twin.support).inv(array(start[name]).astype(real))
        for name, _, twin in priors
    }
    per_chain = math.ceil(n / chains)
    mcmc = MCMC(
        NUTS(_model(nle, priors, array(x_obs), settings)),
        num_warmup=warmup,
        num_samples=per_chain,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), init_params=initial)
    draws = mcmc.get_samples(group_by_chain=True)
    # Draw-major, as Pyro's sampler returns them: any n takes from every chain alike.
    theta = np.concatenate(
        [np.asarray(draws[name]).reshape(chains, per_chain, -1) for name, _, _ in priors], -1
    ).swapaxes(0, 1)
    return torch.from_numpy(theta.reshape(-1, theta.shape[-1])[:n].copy()).to(nle.device, nle.dtype)


def _model(nle: LikelihoodEstimator, priors, x_obs: jax.Array, settings) -> Callable[[], None]:
    """One chain's model: the prior's sites, then the learned likelihood of the i.i.d.
    observations under a plate."""
    q = likelihood(nle, **settings)

    def model() -> None:
        values = [numpyro.sample(name, twin) for name, _, twin in priors]
        theta = jnp.concatenate([v.reshape(-1) for v in values])
        with numpyro.plate("observations", x_obs.shape[0]):
            numpyro.sample(
                nle.observed, q(jnp.broadcast_to(theta, (x_obs.shape[0], theta.shape[0]))), obs=x_obs
            )

    return model
