"""The trained likelihood estimator in NumPyro: the learned likelihood as a function of
traced parameters, the posterior by compiled NUTS, and the priors' twins."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pyro_xform as px  # noqa: E402
from pyro_xform.infer import LikelihoodEstimator  # noqa: E402
from pyro_xform.numpyro import likelihood, numpyro_distribution, sample_posterior, to_numpyro  # noqa: E402


def _noisy_identity(x=None):
    import pyro

    theta = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    return pyro.sample("x", dist.Normal(theta, 0.5).to_event(1), obs=x)


@pytest.fixture(scope="module")
def nle():
    estimator = LikelihoodEstimator(_noisy_identity, hidden=(32, 32), transforms=2)
    estimator.train(2000, steps=300, progress=False, seed=0)
    return estimator


def test_a_traced_context_exports_as_the_concrete_one():
    flow = px.NSF(2, context=3, hidden=(8,), transforms=2)
    c, x = torch.randn(4, 3), torch.randn(4, 2)
    expected = flow(c).log_prob(x).detach().numpy()
    traced = jax.jit(lambda c, x: to_numpyro(flow, c).log_prob(x))(
        jnp.asarray(c.numpy()), jnp.asarray(x.numpy())
    )
    np.testing.assert_allclose(traced, expected, rtol=1e-4, atol=1e-4)
    # One value broadcasts against a batch of contexts, as in torch.
    one = to_numpyro(flow, jnp.asarray(c.numpy())).log_prob(jnp.asarray(x[0].numpy()))
    np.testing.assert_allclose(one, flow(c).log_prob(x[0]).detach().numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="NaN"):
        to_numpyro(flow, jnp.full((3,), jnp.nan))
    with pytest.raises(ValueError, match="floating"):
        to_numpyro(flow, jnp.zeros(3, dtype=jnp.int32))
    with pytest.raises(ValueError, match="context"):
        to_numpyro(flow, jnp.zeros(4))


def test_the_learned_likelihood_in_jax_matches_torch(nle):
    theta, x = torch.randn(6, 2), torch.randn(6, 2)
    expected = nle.likelihood(theta).log_prob(x).detach().numpy()
    q = likelihood(nle)
    got = jax.jit(lambda t, x: q(t).log_prob(x))(jnp.asarray(theta.numpy()), jnp.asarray(x.numpy()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="train"):
        likelihood(LikelihoodEstimator(_noisy_identity, hidden=(8,), transforms=1))


def test_compiled_nuts_gives_the_conjugate_posterior(nle):
    """Five i.i.d. trials of N(theta, 0.5^2) under a N(0, 1) prior: N(4 sum x / 21, 1/21)."""
    x_obs = torch.tensor([0.8, -0.4]) + 0.5 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    draws = sample_posterior(nle, x_obs, 400, chains=4, warmup=200, seed=0)
    assert draws.shape == (400, 2) and draws.dtype == nle.dtype
    assert torch.allclose(draws.mean(0), 4 * x_obs.sum(0) / 21, atol=0.1)
    assert torch.allclose(draws.std(0), torch.full((2,), 21**-0.5), rtol=0.25)
    again = sample_posterior(nle, x_obs, 400, chains=4, warmup=200, seed=0)
    assert torch.equal(draws, again)
    for bad, match in ((torch.full((2,), math.nan), "NaN"), (torch.zeros(3), "numbers per observation")):
        with pytest.raises(ValueError, match=match):
            sample_posterior(nle, bad, 10)
    with pytest.raises(ValueError, match="chains"):
        sample_posterior(nle, x_obs, 10, chains=0)


TWINS = [
    dist.Normal(torch.tensor([0.5, -1.0]), torch.tensor([1.0, 2.0])).to_event(1),
    dist.Uniform(-torch.ones(3), 2 * torch.ones(3)).to_event(1),
    dist.LogNormal(0.3, 0.5),
    dist.HalfNormal(2.0),
    dist.HalfCauchy(1.5),
    dist.Cauchy(0.5, 2.0),
    dist.Laplace(-1.0, 0.5),
    dist.StudentT(4.0, 1.0, 2.0),
    dist.Exponential(3.0),
    dist.Gamma(2.0, 3.0),
    dist.Beta(2.0, 5.0),
    dist.Dirichlet(torch.tensor([1.0, 2.0, 3.0])),
    dist.MultivariateNormal(torch.zeros(3), precision_matrix=torch.eye(3) * 2 + 0.5),
    torch.distributions.Normal(0.0, 1.0),
]


@pytest.mark.parametrize("prior", TWINS, ids=lambda d: type(d).__name__)
def test_every_prior_twin_scores_as_torch(prior):
    twin = numpyro_distribution(prior)
    assert twin.batch_shape == tuple(prior.batch_shape) and twin.event_shape == tuple(prior.event_shape)
    value = prior.sample((5,))
    np.testing.assert_allclose(
        twin.log_prob(jnp.asarray(value.numpy())), prior.log_prob(value).numpy(), rtol=1e-5, atol=1e-5
    )


def test_a_prior_without_a_twin_is_named():
    with pytest.raises(NotImplementedError, match="Poisson"):
        numpyro_distribution(dist.Poisson(3.0))


def test_sequential_likelihood_rounds_propose_by_compiled_nuts():
    """train_rounds takes the compiled sampler as its proposal: the second round's
    parameters are posterior draws, about the posterior mean 0.8 x_obs (scale 0.45),
    much closer to it than the prior's draws (scale 1)."""
    import functools

    from pyro_xform.infer import train_rounds

    nle = LikelihoodEstimator(_noisy_identity, "flow", hidden=(16,), transforms=2)
    seen, train = [], nle.train

    def recording(**kwargs):
        seen.append(kwargs["theta"].clone())
        return train(**kwargs)

    nle.train = recording
    x_obs = torch.tensor([1.5, -1.0])
    sampler = functools.partial(sample_posterior, chains=4, warmup=100)
    train_rounds(
        nle, x_obs, rounds=2, num_simulations=400, sampler=sampler, steps=150, progress=False, seed=0
    )
    first, added = seen[1][:400], seen[1][400:]
    distance = [float((t - 0.8 * x_obs).norm(dim=-1).mean()) for t in (first, added)]
    assert distance[1] < 0.6 * distance[0]
