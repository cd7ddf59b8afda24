"""Sequential rounds focused on one observation (truncated sequential NPE)."""

import functools

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_xform.infer import (
    LikelihoodEstimator,
    PosteriorEstimator,
    simulate_at,
    simulators,
    train_rounds,
    truncated_prior,
)

GL2 = functools.partial(simulators.gaussian_linear, dim=2)
GL2_PRIOR = dist.Normal(torch.zeros(2), 0.1**0.5).to_event(1)


def _two_sites():
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    return pyro.sample("x", dist.Normal(torch.cat([a.unsqueeze(-1), b], -1), 0.01).to_event(1))


def test_simulate_at_runs_the_model_at_the_given_parameters():
    theta = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
    x = simulate_at(_two_sites, theta, parameters=["a", "b"])
    assert x.shape == (2, 3) and (x - theta).abs().max() < 0.1
    with pytest.raises(ValueError, match="hold 3 numbers"):
        simulate_at(_two_sites, theta[:, :2], parameters=["a", "b"])
    with pytest.raises(ValueError, match="no sites"):
        simulate_at(_two_sites, theta, parameters=["c"])


@pytest.fixture(scope="module")
def trained():
    npe = PosteriorEstimator(GL2, "flow", hidden=(16,), transforms=2)
    npe.train(2000, steps=200, progress=False, seed=0)
    return npe


def test_truncated_prior_draws_lie_in_the_posteriors_region(trained):
    torch.manual_seed(0)
    x_obs = torch.tensor([0.3, -0.2])
    # A wide epsilon, so that the region cuts the prior (scale 0.32) where it has mass.
    draws = truncated_prior(trained, x_obs, 500, epsilon=0.2)
    assert draws.shape == (500, 2)
    posterior = trained.posterior(x_obs)
    own = posterior.log_prob(posterior.sample((20_000,)))
    prior = GL2_PRIOR.sample((2000,))
    assert (posterior.log_prob(draws) >= torch.quantile(own, 0.19)).all()
    assert (posterior.log_prob(prior) < torch.quantile(own, 0.21)).double().mean() > 0.3
    assert float(draws.std(0).max()) < 0.25
    assert (draws.mean(0) - x_obs / 2).abs().max() < 0.1
    with pytest.raises(RuntimeError, match="too narrow"):
        truncated_prior(trained, x_obs, 10_000, epsilon=0.5, batch=100, max_draws=100)


def test_rounds_add_simulations_near_the_observation():
    npe = PosteriorEstimator(GL2, "flow", hidden=(8,), transforms=1)
    seen, train = [], npe.train

    def recording(**kwargs):  # the simulations each round trains on
        seen.append(kwargs["theta"].clone())
        return train(**kwargs)

    npe.train = recording
    x_obs = torch.tensor([0.5, 0.5])
    settings = dict(rounds=2, num_simulations=300, epsilon=0.2, steps=100, progress=False, seed=0)
    results = train_rounds(npe, x_obs, **settings)
    assert len(results) == 2 and [len(t) for t in seen] == [300, 600]
    # The second round adds its simulations from the truncated prior: nearer the posterior
    # of x_obs (about x_obs / 2) than the prior's draws of the first.
    first, added = seen[1][:300], seen[1][300:]
    assert torch.equal(first, seen[0])
    assert (added - x_obs / 2).norm(dim=-1).mean() < 0.8 * (first - x_obs / 2).norm(dim=-1).mean()
    with pytest.raises(ValueError, match="rounds"):
        train_rounds(npe, x_obs, rounds=0)
    with pytest.raises(ValueError, match="epsilon"):
        train_rounds(npe, x_obs, epsilon=1.5)


def test_likelihood_rounds_propose_from_the_posterior():
    nle = LikelihoodEstimator(GL2, "flow", hidden=(16,), transforms=2)
    seen, train = [], nle.train

    def recording(**kwargs):
        seen.append(kwargs["theta"].clone())
        return train(**kwargs)

    nle.train = recording
    x_obs = torch.tensor([0.5, 0.5])
    sampler = dict(chains=4, warmup=50)
    settings = dict(rounds=2, num_simulations=400, steps=150, progress=False, seed=0)
    results = train_rounds(nle, x_obs, sampler=sampler, **settings)
    assert len(results) == 2 and [len(t) for t in seen] == [400, 800]
    # The second round's parameters are posterior draws: about x_obs / 2, scale 0.22 (the
    # prior's scale is 0.32).
    first, added = seen[1][:400], seen[1][400:]
    assert torch.equal(first, seen[0])
    assert (added - x_obs / 2).norm(dim=-1).mean() < 0.8 * (first - x_obs / 2).norm(dim=-1).mean()
    npe = PosteriorEstimator(GL2, "flow", hidden=(8,), transforms=1)
    with pytest.raises(ValueError, match="sampler"):
        train_rounds(npe, x_obs, sampler=sampler)


def test_likelihood_rounds_take_a_sampling_function():
    """A function of (estimator, x_obs, n, seed=...) proposes instead of Pyro's NUTS (as
    pyro_xform.numpyro.sample_posterior does); its draws are the next round's parameters,
    and a function that returns the wrong shape is refused before the round trains."""
    nle = LikelihoodEstimator(GL2, "flow", hidden=(8,), transforms=1)
    calls = []

    def sampler(estimator, x_obs, n, *, seed):
        calls.append((estimator, n, seed))
        return torch.full((n, 2), 0.25)

    x_obs = torch.tensor([0.5, 0.5])
    settings = dict(num_simulations=50, steps=2, progress=False, seed=3)
    train_rounds(nle, x_obs, rounds=3, sampler=sampler, **settings)
    assert calls == [(nle, 50, 4), (nle, 50, 5)]
    with pytest.raises(ValueError, match=r"shape \(50, d_theta\)"):
        train_rounds(nle, x_obs, rounds=2, sampler=lambda e, x, n, seed: torch.zeros(n, 3), **settings)
    with pytest.raises(ValueError, match="dict of settings or a function"):
        train_rounds(nle, x_obs, sampler=[1], **settings)
