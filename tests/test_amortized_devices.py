"""Amortized posteriors run anywhere and fail loudly: devices and dtypes, the prior's
support, a rank-deficient regression standardization, and the reference posteriors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import biject_to

from pyro_xform.infer import PosteriorEstimator, simulate, simulators
from pyro_xform.transforms import ConditionalStandardize

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _trained(model=simulators.two_moons, estimator="flow", simulations=200, **kwargs):
    family = dict(hidden=(8,), transforms=1) if estimator == "flow" else dict(hidden=(8,))
    pe = PosteriorEstimator(model, estimator, **family, **kwargs)
    pe.train(simulations, steps=2, progress=False, seed=0)
    return pe


# --------------------------------------------------------------------------- devices and dtypes
def test_estimator_moves_to_meta_with_its_standardization_and_support():
    pe = _trained().to("meta")
    assert pe.device.type == "meta"
    assert pe.x_loc.device.type == pe.x_scale.device.type == pe.prior_support.lower.device.type == "meta"
    # Values on meta are unknown, so distributions there cannot validate their arguments.
    with pyro.validation_enabled(False):
        posterior = pe.posterior(torch.zeros(2))  # a CPU observation goes to the estimator
        draws = posterior.sample((3,))
        assert draws.device.type == "meta" and draws.shape == (3, 2)
        assert posterior.log_prob(torch.zeros(5, 2, device="meta")).device.type == "meta"


@pytest.mark.parametrize("how", ["constructor", "to"])
def test_estimator_in_float64(how):
    if how == "constructor":
        pe = _trained(dtype=torch.float64)
    else:
        pe = _trained().to(torch.float64)
    assert pe.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in pe.family.parameters())
    assert pe.x_loc.dtype == pe.prior_support.lower.dtype == torch.float64
    posterior = pe.posterior(torch.zeros(2))  # float32 observation, float64 estimator
    draws = posterior.sample((4,))
    assert draws.dtype == torch.float64 and posterior.log_prob(draws).dtype == torch.float64


def test_estimator_placement_errors():
    pe = PosteriorEstimator(simulators.two_moons, "flow")
    with pytest.raises(ValueError, match="floating-point"):
        pe.to(torch.int64)
    with pytest.raises(ValueError, match="once"):
        pe.to(torch.float64, torch.float32)
    pe = _trained()
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        pe.posterior([0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        pe.posterior(torch.tensor([0.0, math.nan]))


@cuda
def test_estimator_trains_and_infers_on_cuda():
    pe = _trained(device="cuda")
    assert pe.device.type == "cuda" and pe.x_loc.is_cuda and pe.prior_support.lower.is_cuda
    draws = pe.posterior(torch.zeros(2)).sample((100,))
    assert draws.is_cuda and bool((draws.abs() <= 1).all())
    assert _trained().to("cuda").posterior(torch.zeros(2, device="cuda")).sample().is_cuda


# --------------------------------------------------------------------------- the prior's support
def test_posterior_draws_stay_in_the_prior_support():
    x_obs = torch.tensor([0.1, 0.05])
    # After two steps the flow is about the prior's moments: untruncated, it leaks.
    leaky = _trained(truncate=False).posterior(x_obs).sample((2000,))
    assert bool((leaky.abs() > 1).any())
    posterior = _trained().posterior(x_obs)
    draws = posterior.sample((2000,))
    assert bool((draws.abs() <= 1).all()) and draws.shape == (2000, 2)
    assert 0.5 < float(posterior.acceptance) < 1
    batch = _trained().posterior(torch.zeros(3, 2))
    draws = batch.sample((100,))
    assert draws.shape == (100, 3, 2) and bool(batch.support.check(draws).all())
    assert batch.acceptance.shape == (3,)
    x, lp = batch.rsample_and_log_prob((5,))
    assert bool(batch.support.check(x).all()) and torch.allclose(lp, batch.log_prob(x), atol=1e-5)


def test_posterior_log_prob_is_minus_inf_outside_the_support_and_normalized_inside():
    posterior = _trained().posterior(torch.tensor([0.1, 0.05]))
    assert posterior.log_prob_kind == "estimate"  # renormalized by an estimated acceptance
    points = torch.tensor([[1.5, 0.0], [0.0, -1.01], [math.inf, 0.0], [0.2, 0.3]])
    lp = posterior.log_prob(points)  # no validation error: the density is zero there
    assert bool((lp[:3] == -math.inf).all()) and bool(torch.isfinite(lp[3]))
    # The density over the box integrates to one: the truncation is renormalized.
    edges = torch.linspace(-1, 1, 401)
    centers = 0.5 * (edges[1:] + edges[:-1])
    grid = torch.cartesian_prod(centers, centers)
    with torch.no_grad():
        mass = posterior.log_prob(grid).exp().sum() * (2 / 400) ** 2
    assert abs(float(mass) - 1) < 0.02


def test_rejection_gives_up_where_the_posterior_misses_the_support():
    pe = _trained()
    pe.prior_support.lower.fill_(0.999)  # a sliver of the box the posterior hardly reaches
    posterior = pe.posterior(torch.tensor([0.1, 0.05]))
    with pytest.raises(ValueError, match="inside the prior's support"):
        posterior.sample((100,))


def _mixed(x=None):
    a = pyro.sample("a", dist.LogNormal(0.0, 0.5))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    c = pyro.sample("c", dist.Uniform(torch.zeros(2), 5 * torch.ones(2)).to_event(1))
    mean = torch.stack([a, b, c[..., 0], c[..., 1]], -1)
    return pyro.sample("x", dist.Normal(mean, 0.1).to_event(1), obs=x)


def test_mixed_supports_over_several_sites():
    pe = _trained(_mixed, parameters=["a", "b", "c"])
    posterior = pe.posterior(torch.tensor([1.0, 0.0, 2.5, 4.9]))
    draws = posterior.sample((500,))
    assert bool((draws[:, 0] > 0).all()) and bool(((draws[:, 2:] > 0) & (draws[:, 2:] < 5)).all())
    assert bool((draws[:, 1] < 0).any()) and bool((draws[:, 1] > 0).any())
    assert posterior.log_prob(torch.tensor([-1.0, 0.0, 1.0, 1.0])) == -math.inf
    # The support is a constraint Pyro can map to, e.g. when the posterior is a prior under NUTS.
    transform = biject_to(posterior.support)
    u = transform.inv(draws)
    assert torch.allclose(transform(u), draws, atol=1e-5)


def test_supports_and_simulations_it_cannot_map_are_refused():
    def simplex(x=None):
        theta = pyro.sample("theta", dist.Dirichlet(torch.ones(3)))
        return pyro.sample("x", dist.Normal(theta, 0.1).to_event(1), obs=x)

    def hierarchical(x=None):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        theta = pyro.sample("theta", dist.Uniform(-scale, scale))
        return pyro.sample("x", dist.Normal(theta, 0.1), obs=x)

    with pytest.raises(ValueError, match="truncate=False"):
        _trained(simplex)
    assert _trained(simplex, truncate=False).posterior(torch.zeros(3)).sample().shape == (3,)
    with pytest.raises(ValueError, match="changes from run to run"):
        _trained(hierarchical)
    theta, x = simulate(simulators.two_moons, 50, seed=0)
    theta[7, 1] = 1.5
    pe = PosteriorEstimator(simulators.two_moons, "flow", hidden=(8,), transforms=1)
    with pytest.raises(ValueError, match=r"outside the prior's support.*row 7"):
        pe.train(theta=theta, x=x, steps=1, progress=False)


# --------------------------------------------------------------------------- regression standardization
def _regression_data(n=400):
    gen = torch.Generator().manual_seed(0)
    context = torch.randn(n, 2, generator=gen)
    weight = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    return context, context @ weight.T + 0.5 + 0.1 * torch.randn(n, 2, generator=gen)


@pytest.mark.parametrize("extra", ["constant", "duplicate", "sum", "scaled"])
def test_regression_standardization_on_a_rank_deficient_context(extra):
    context, x = _regression_data()
    column = {
        "constant": torch.full_like(context[:, :1], 0.3),
        "duplicate": context[:, :1],
        "sum": context.sum(-1, keepdim=True),  # collinear up to float32 rounding
        "scaled": 0.1 * context[:, :1],
    }[extra]
    wide = torch.cat([context, column], -1)
    full, layer = ConditionalStandardize(2, 2), ConditionalStandardize(2, 3)
    full.initialize(x, context)
    layer.initialize(x, wide)
    assert bool(torch.isfinite(layer.weight).all()) and float(layer.weight.abs().max()) < 10
    # The same regression as on the full-rank part: same fitted means, intercept and residuals
    # (their scale up to the one degree of freedom the extra column counts).
    assert torch.allclose(layer._mean(wide), full._mean(context), atol=1e-4)
    assert torch.allclose(layer.loc, full.loc, atol=1e-4)
    assert torch.allclose(layer.scale_tril, full.scale_tril, rtol=0.01, atol=1e-4)
    if extra == "constant":
        assert torch.allclose(layer.weight[:, :2], full.weight, atol=1e-4)
        assert float(layer.weight[:, 2].abs().max()) < 1e-6
    z, ladj = layer.inverse_and_ladj(x, wide)
    assert bool(torch.isfinite(z).all()) and bool(torch.isfinite(ladj).all())


def test_regression_standardization_on_a_constant_context_and_in_float64():
    context, x = _regression_data()
    layer = ConditionalStandardize(2, 2)
    layer.initialize(x, torch.ones_like(context))
    assert not layer.weight.any() and torch.allclose(layer.loc, x.mean(0), atol=1e-5)
    layer = ConditionalStandardize(2, 2).double()
    layer.initialize(x.double(), context.double())
    assert layer.weight.dtype == torch.float64
    assert torch.allclose(
        layer.weight, torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64), atol=0.02
    )


def test_flow_matching_estimator_with_a_constant_observation_feature():
    def model(x=None):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        mean = torch.cat([theta, torch.ones_like(theta[..., :1])], -1)
        return pyro.sample("x", dist.Delta(mean, event_dim=1), obs=x)

    pe = _trained(model, "flow_matching")
    layer = pe.family.standardizer
    assert bool(torch.isfinite(layer.weight).all()) and float(layer.weight.abs().max()) < 10
    posterior = pe.posterior(torch.tensor([0.5, -0.5, 1.0]), solver="rk4", steps=4)
    assert bool(torch.isfinite(posterior.log_prob(torch.zeros(2))))


# --------------------------------------------------------------------------- reference posteriors
def test_two_moons_likelihood_follows_the_device_of_its_inputs():
    theta, x = torch.zeros(5, 2, device="meta"), torch.zeros(2, device="meta")
    assert simulators._two_moons_log_likelihood(theta, x).device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_moons_posterior_keeps_the_dtype_and_refuses_a_batch(dtype):
    _, x = simulate(simulators.two_moons, 1, seed=1)
    draws = simulators.two_moons_posterior(x[0].to(dtype), 100, grid=200)
    assert draws.dtype == dtype and draws.device == x.device and bool((draws.abs() <= 1).all())
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        simulators.two_moons_posterior(x, 10)


@cuda
def test_two_moons_posterior_on_cuda():
    _, x = simulate(simulators.two_moons, 1, seed=1)
    assert simulators.two_moons_posterior(x[0].cuda(), 10, grid=100).is_cuda
