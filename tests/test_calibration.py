"""Calibration checks of amortized posteriors: SBC ranks, expected coverage, TARP and the
posterior predictive, each against posteriors whose calibration is known."""

import matplotlib
import pyro.distributions as dist
import pytest
import torch

from pyro_xform.infer import PosteriorEstimator, simulate, simulators
from pyro_xform.infer.calibration import (
    expected_coverage,
    plot_coverage,
    plot_sbc,
    posterior_predictive,
    sbc,
    tarp,
)

matplotlib.use("Agg")


def _pairs(n=1000, d=2, seed=0):
    # theta ~ N(0, I), x ~ N(theta, I): the posterior is N(x / 2, I / 2).
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, d, generator=g)
    return theta, theta + torch.randn(n, d, generator=g)


def _posterior(scale):
    return lambda x: dist.Normal(x / 2, scale).to_event(1)


EXACT, OVERCONFIDENT, UNDERCONFIDENT = 0.5**0.5, 0.25, 1.5


def test_sbc_accepts_the_exact_posterior_and_rejects_a_narrow_one():
    torch.manual_seed(0)
    theta, x = _pairs()
    exact = sbc(_posterior(EXACT), theta, x, num_draws=100)
    assert exact.ranks.shape == (1000, 2) and exact.ranks.min() >= 0 and exact.ranks.max() <= 100
    assert exact.p_values.min() > 1e-3
    narrow = sbc(_posterior(OVERCONFIDENT), theta, x, num_draws=100)
    assert narrow.p_values.max() < 1e-6
    # Overconfident: the truth falls outside the draws, at the extreme ranks.
    extreme = ((narrow.ranks == 0) | (narrow.ranks == 100)).double().mean()
    assert extreme > 0.2


def test_sbc_keeps_its_level_on_many_simulations():
    # The chi-square's expected counts must be those of its own bins, or a calibrated
    # posterior fails once N is large (here L + 1 = 51 ranks do not split into 20 equal bins).
    torch.manual_seed(1)
    theta, x = _pairs(n=20_000, d=1, seed=1)
    assert sbc(_posterior(EXACT), theta, x, num_draws=50).p_values.min() > 1e-3


def test_calibration_refuses_a_posterior_of_another_size():
    theta, x = _pairs(10)
    with pytest.raises(ValueError, match="numbers each"):
        sbc(_posterior(EXACT), theta[:, :1], x)


@pytest.mark.parametrize("check", [expected_coverage, tarp])
def test_coverage_is_the_diagonal_for_the_exact_posterior(check):
    torch.manual_seed(0)
    theta, x = _pairs()
    exact = check(_posterior(EXACT), theta, x)
    assert exact.error < 0.08
    assert exact.levels.shape == exact.coverage.shape
    narrow, wide = check(_posterior(OVERCONFIDENT), theta, x), check(_posterior(UNDERCONFIDENT), theta, x)
    # Overconfident regions hold the truth less often than their level, underconfident ones
    # more often.
    assert (narrow.coverage - narrow.levels).mean() < -0.05 and narrow.error > 0.15
    assert (wide.coverage - wide.levels).mean() > 0.05 and wide.error > 0.15


@pytest.mark.parametrize("check", [sbc, expected_coverage, tarp])
def test_calibration_refuses_bad_input(check):
    theta, x = _pairs(10)
    posterior = _posterior(EXACT)
    with pytest.raises(ValueError, match="same N"):
        check(posterior, theta, x[:5])
    with pytest.raises(ValueError, match="finite"):
        check(posterior, theta, x.index_fill(0, torch.tensor([0]), float("nan")))
    with pytest.raises(ValueError, match="num_draws"):
        check(posterior, theta, x, num_draws=0)
    with pytest.raises(ValueError, match="no simulations"):
        check(posterior, theta[:0], x[:0])
    with pytest.raises(ValueError, match="posterior must be"):
        check(3, theta, x)


@pytest.fixture(scope="module")
def two_moons_estimator():
    npe = PosteriorEstimator(simulators.two_moons, "flow", hidden=(16,), transforms=2)
    npe.train(1000, steps=30, progress=False, seed=0)
    return npe


def test_calibration_of_a_truncated_estimator(two_moons_estimator):
    theta, x = simulate(simulators.two_moons, 40, seed=1)
    result = sbc(two_moons_estimator, theta, x, num_draws=20, chunk=16)
    assert result.ranks.shape == (40, 2) and result.p_values.shape == (2,)
    coverage = expected_coverage(two_moons_estimator, theta, x, num_draws=20, chunk=16)
    assert 0 <= coverage.coverage.min() and coverage.coverage.max() <= 1
    assert coverage.coverage[0] <= coverage.coverage[-1] == 1


def test_posterior_predictive_runs_the_simulator_at_the_posterior_draws(two_moons_estimator):
    torch.manual_seed(0)
    x_obs = torch.tensor([0.1, -0.2])
    draws = posterior_predictive(two_moons_estimator, x_obs, 500, seed=0)
    assert draws["theta"].shape == (500, 2) and draws["x"].shape == (500, 2)
    # Two moons: x's second coordinate is (theta2 - theta1) / sqrt(2) plus noise of scale
    # at most 0.11, draw by draw.
    shift = (draws["theta"][:, 1] - draws["theta"][:, 0]) / 2**0.5
    assert (draws["x"][:, 1] - shift).abs().max() < 0.2
    with pytest.raises(ValueError, match="num_samples"):
        posterior_predictive(two_moons_estimator, x_obs, 0)


def test_plots_draw_one_panel_per_coordinate():
    theta, x = _pairs(100)
    axes = plot_sbc(sbc(_posterior(EXACT), theta, x, num_draws=20))
    assert len(axes) == 2 and axes[0].patches
    ax = plot_coverage({"exact": tarp(_posterior(EXACT), theta, x, num_draws=20)})
    assert len(ax.lines) == 2
