"""Continuous-time transforms and families: analytic cases, solver settings, objectives."""

from __future__ import annotations

import importlib.util
import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS, Predictive

import pyro_xform as px
from pyro_xform.families.diffusion_sampling import dpm
from pyro_xform.families.flow_matching import ot_pairing
from pyro_xform.objectives import get_objective
from pyro_xform.transforms import ODETransform
from pyro_xform.transforms import ode as ode_module

A = torch.tensor([[0.3, -1.0], [0.5, -0.2]], dtype=torch.float64)


class LinearField(torch.nn.Module):
    """v(x, t) = A x: the time-1 flow map is expm(A), its log-determinant tr(A)."""

    def __init__(self, matrix=A):
        super().__init__()
        self.matrix = torch.nn.Parameter(matrix.clone())

    def forward(self, x, t, context=None):
        return x @ self.matrix.T


def linear_ode(**kwargs):
    return ODETransform(LinearField(), 2, **{"rtol": 1e-10, "atol": 1e-10, **kwargs})


# ------------------------------------------------------------------ analytic ODE cases
def test_direction_of_integration_is_base_to_data():
    """Regression: sampling integrates t0 → t1 (x = expm(A) z), density inverts it."""
    ode = linear_ode()
    z = torch.randn(7, 2, dtype=torch.float64)
    x, ladj = ode.forward_and_ladj(z)
    assert torch.allclose(x, z @ torch.linalg.matrix_exp(A).T, atol=1e-8)
    assert not torch.allclose(x, z @ torch.linalg.matrix_exp(-A).T, atol=1e-2)
    assert torch.allclose(ladj, A.trace().expand(7), atol=1e-10)
    # time running backwards (as a diffusion's probability flow does) flips the map
    back = linear_ode(time=(1.0, 0.0))
    assert torch.allclose(back.forward_value(z), z @ torch.linalg.matrix_exp(-A).T, atol=1e-8)


def test_linear_field_pushforward_density_in_closed_form():
    """N(0, I) pushed through expm(A) is N(0, e^A e^{A^T})."""
    expm = torch.linalg.matrix_exp(A)
    target = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), expm @ expm.T)
    base = pyro.distributions.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    dist = px.XformDistribution(base, linear_ode())
    x = target.sample((50,))
    assert torch.allclose(dist.log_prob(x), target.log_prob(x), atol=1e-8)


def test_log_prob_is_one_augmented_solve(monkeypatch):
    calls = []
    real = ode_module.odeint
    monkeypatch.setattr(ode_module, "odeint", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = pyro.distributions.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    dist = px.XformDistribution(base, linear_ode())
    dist.log_prob(torch.randn(5, 2, dtype=torch.float64))
    assert len(calls) == 1
    x, lp = dist.rsample_and_log_prob((4,))
    assert len(calls) == 2 and torch.equal(dist.log_prob(x), lp)  # the draw's density is reused


def test_time_dependent_field_integrates_in_time():
    class Field(torch.nn.Module):  # v = t: x(1) = z + 1/2 (t0=0) or z - 1/2 (from 1 to 0)
        def forward(self, x, t, context=None):
            return t.expand_as(x)

    z = torch.zeros(3, 2, dtype=torch.float64)
    assert torch.allclose(ODETransform(Field(), 2).forward_value(z), z + 0.5)
    assert torch.allclose(ODETransform(Field(), 2, time=(1.0, 0.0)).forward_value(z), z - 0.5)


@pytest.mark.parametrize("solver,per_step", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_nfe_is_what_was_asked(solver, per_step):
    ode = linear_ode(solver=solver, steps=7)
    ode.forward_and_ladj(torch.randn(3, 2, dtype=torch.float64))
    assert ode.nfe == 7 * per_step
    ode.inverse_and_ladj(torch.randn(3, 2, dtype=torch.float64))
    assert ode.nfe == 7 * per_step
    fm = px.FlowMatching(2, hidden=(8,))
    dist = fm(solver=solver, nfe=5 * per_step)
    dist.sample((4,))
    assert dist.bijector[0].nfe == 5 * per_step


def test_hutchinson_agrees_with_exact_in_expectation():
    torch.manual_seed(0)
    fm = px.FlowMatching(3, hidden=(16,), time_features=4).double()
    with torch.no_grad():
        for p in fm.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(4, 3, dtype=torch.float64)
    exact = fm(solver="rk4", steps=8).log_prob(x)
    hutch = fm(solver="rk4", steps=8, trace="hutchinson", probes=2)
    assert hutch.log_prob_kind == "estimate"
    # Probes are drawn per row, so 300 copies of x in one solve are 300 independent estimates.
    draws = hutch.log_prob(x.expand(300, 4, 3))
    stderr = draws.std(0) / math.sqrt(300)
    assert ((draws.mean(0) - exact).abs() < 4 * stderr + 1e-6).all()
    assert (draws.std(0) > 0).all()  # an estimate, not the exact value


def test_gradients_reach_parameters_through_log_prob_and_adjoint_agrees():
    torch.manual_seed(0)
    fm = px.FlowMatching(2, hidden=(8,), time_features=4).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    grads = {}
    for adjoint in (False, True):
        fm.zero_grad()
        fm(rtol=1e-9, atol=1e-9, adjoint=adjoint).log_prob(x).sum().backward()
        grads[adjoint] = [p.grad.clone() for p in fm.parameters()]
        assert all(g.abs().sum() > 0 for g in grads[adjoint])
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_ode_rejects_bad_settings():
    field = LinearField()
    with pytest.raises(ValueError, match="steps"):
        ODETransform(field, 2, solver="rk4")
    with pytest.raises(ValueError, match="fixed-step"):
        ODETransform(field, 2, solver="dopri5", steps=4)
    with pytest.raises(ValueError, match="unknown solver"):
        ODETransform(field, 2, solver="leapfrog", steps=4)
    with pytest.raises(ValueError, match="trace"):
        ODETransform(field, 2, trace="skilling")
    fm = px.FlowMatching(2, hidden=(8,))
    with pytest.raises(ValueError, match="nfe"):
        fm(solver="rk4", nfe=6)
    with pytest.raises(ValueError, match="nfe"):
        fm(nfe=8)  # adaptive default solver


def test_non_finite_rows_give_nan_without_stalling():
    base = pyro.distributions.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    dist = px.XformDistribution(base, linear_ode())
    x = torch.tensor([[0.5, 0.1], [math.nan, 0.0], [math.inf, 1.0]], dtype=torch.float64)
    with pyro.validation_enabled(False):
        lp = dist.log_prob(x)
    assert torch.isfinite(lp[0]) and torch.isnan(lp[1:]).all()


# ------------------------------------------------------------------ diffusion, analytic
S = torch.tensor([[1.5, 0.4], [0.4, 0.7]], dtype=torch.float64)


class ExactNoise(torch.nn.Module):
    """The exact noise prediction for data N(0, S): eps = sigma_s Cov_s^{-1} x_s, where the
    network input is x_s / sqrt(alpha_s^2 + sigma_s^2) (undone here)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_in, s, context=None):  # s is one time for the batch, as in sampling
        a, sg = self.schedule.alpha(s), self.schedule.sigma(s)
        x = x_in * torch.sqrt(a**2 + sg**2)
        cov = a**2 * S + sg**2 * torch.eye(2, dtype=S.dtype)
        return (sg * torch.linalg.solve(cov, x.unsqueeze(-1))).squeeze(-1) + 0 * self.dummy


def gaussian_diffusion(sde, **kwargs):
    model = px.Diffusion(2, hidden=(4,), sde=sde, standardize=False, **kwargs).double()
    field = model.ode.field
    field.net, field.gaussian_skip, field.output_scale = ExactNoise(model.schedule), False, False
    return model


def marginal(model, s):
    s = torch.tensor(float(s), dtype=torch.float64)
    a, sg = model.schedule.alpha(s), model.schedule.sigma(s)
    cov = a**2 * S + sg**2 * torch.eye(2, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)


@pytest.mark.parametrize("sde", ["vp", "ve", "edm"])
def test_probability_flow_density_equals_gaussian_density(sde):
    """With the exact score of Gaussian data, the PF-ODE log-density is the Gaussian's."""
    model = gaussian_diffusion(sde, rtol=1e-9, atol=1e-9)
    target = marginal(model, model.eps)
    x = target.sample((40,))
    got = model().log_prob(x)
    if sde == "vp":
        assert (got - target.log_prob(x)).abs().max() < 1e-3
    else:  # VE's marginal at s = 1 is N(0, S + sigma_max^2 I), not isotropic: compare the map
        z, ladj = model.transform.inverse_and_ladj(x)
        exact = marginal(model, 1.0).log_prob(z) - ladj
        assert (exact - target.log_prob(x)).abs().max() < 1e-3


@pytest.mark.parametrize(
    "sde,sampler,steps",
    [
        ("vp", "ddim", 100),
        ("vp", "sde", 400),
        ("vp", "ode", None),
        ("vp", "heun", 32),
        ("edm", "heun", 32),
        ("edm", "dpm", 32),
        ("vp", "dpm", 20),
        ("edm", "stochastic", 64),
    ],
)
def test_samplers_reach_the_data_distribution(sde, sampler, steps):
    torch.manual_seed(0)
    model = gaussian_diffusion(sde)
    kwargs = {"steps": steps} if steps else {"solver": "rk4", "steps": 20}
    x = model.sample((4000,), sampler=sampler, **kwargs)
    cov = torch.cov(x.T)
    assert (cov - S).abs().max() < 0.12, cov
    assert x.mean(0).abs().max() < 0.08


@pytest.mark.parametrize("sde", ["vp", "ve", "edm"])
def test_dpm_steps_in_log_noise_level_beat_the_karras_grid(sde):
    """DPM-Solver++ is an exponential integrator in log noise level: with the exact score,
    equal steps there sample Gaussian data more accurately than Karras et al.'s grid."""
    model = gaussian_diffusion(sde)
    field = model._field(None)
    errors = {}
    for grid in ("log", "karras"):
        torch.manual_seed(0)
        x = model.base(()).sample((20_000,))
        with torch.no_grad():
            y = dpm(lambda v, s: field.noise(v, s, None), model.schedule, x, 20, model.eps, grid=grid)
        errors[grid] = float((torch.cov(y.T) - S).abs().max())
    assert errors["log"] < min(0.08, errors["karras"]), errors
    with pytest.raises(ValueError, match="grid"):
        dpm(lambda v, s: v, model.schedule, x, 2, model.eps, grid="uniform")


def test_ddim_with_eta_zero_is_deterministic_and_eta_one_is_not():
    model = gaussian_diffusion("vp")
    torch.manual_seed(1)
    a = model.sample((5,), sampler="ddim", steps=10)
    torch.manual_seed(1)
    b = model.sample((5,), sampler="ddim", steps=10)
    torch.manual_seed(1)
    c = model.sample((5,), sampler="ddim", steps=10, eta=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="sampler"):
        model.sample((2,), sampler="euler")
    with pytest.raises(ValueError, match="churn"):
        model.sample((2,), sampler="stochastic", churn=0.5)


def test_edm_preconditioning_makes_the_network_target_unit_variance_at_every_level():
    """At initialization an EDM diffusion predicts the noise exactly for standard normal data
    (c_skip), and its loss, weighted by 1 / c_out^2, is then 1 per coordinate whatever the
    noise level: the network's target has unit variance everywhere."""
    torch.manual_seed(0)
    model = px.Diffusion(2, hidden=(8,), sde="edm", standardize=False).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    for s in (0.1, 0.5, 0.9):
        s = torch.tensor(s, dtype=torch.float64)
        sigma = model.schedule.sigma(s)
        assert torch.allclose(model.noise(x, s), sigma / (1 + sigma**2) * x)
    n = 200_000
    with torch.no_grad():
        loss = model.dsm_loss(torch.randn(n, 2, dtype=torch.float64))
    assert abs(float(loss) / (2 * n) - 1) < 0.02


def test_edm_noise_levels_are_log_normal():
    model = px.Diffusion(
        2, hidden=(8,), sde="edm", sigma_max=80.0, lognormal=(-0.5, 1.2)
    )  # truncation negligible
    log_levels = model.schedule.noise_level(model.draw_times(200_000, torch.float64)).log()
    assert abs(float(log_levels.mean()) + 0.5) < 0.02 and abs(float(log_levels.std()) - 1.2) < 0.02
    with pytest.raises(ValueError, match="lognormal"):
        px.Diffusion(2, lognormal=(0.0, -1.0))


# ------------------------------------------------------------------ flow matching
def test_ot_pairing_is_the_optimal_permutation():
    torch.manual_seed(0)
    noise, data = torch.randn(6, 2), torch.randn(6, 2)
    paired = ot_pairing(noise, data)
    best = min(float(((noise[list(p)] - data) ** 2).sum()) for p in itertools.permutations(range(6)))
    assert math.isclose(float(((paired - data) ** 2).sum()), best, rel_tol=1e-6)
    assert torch.equal(paired.sort(0).values, noise.sort(0).values)  # a reordering, nothing else


@pytest.mark.parametrize("path", ["condot", "cosine", "vp"])
def test_cfm_target_is_the_path_derivative(path):
    """x_t and the regression target of the loss agree with a finite difference in t."""
    fm = px.FlowMatching(2, hidden=(8,), path=path).double()
    sched = fm.schedule
    x0, x1 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)

    def xt(t):
        s = torch.tensor(1 - t, dtype=torch.float64)
        return sched.alpha(s) * x1 + sched.sigma(s) * x0

    t, h = 0.4, 1e-6
    s = torch.tensor(1 - t, dtype=torch.float64)
    target = -(sched.d_alpha(s) * x1 + sched.d_sigma(s) * x0)
    assert torch.allclose(target, (xt(t + h) - xt(t - h)) / (2 * h), atol=1e-6)
    assert torch.allclose(xt(1 - sched.eps), x1, atol=0.05)  # data at the end
    assert torch.allclose(xt(0.0), x0, atol=0.05)  # noise at the start


def test_flow_matching_training_times():
    """Uniform times, or the ramp's density 2t (cdf t^2) on [0, 1 - eps)."""
    torch.manual_seed(0)
    uniform, ramp = px.FlowMatching(2, hidden=(8,)), px.FlowMatching(2, hidden=(8,), time_sampling="ramp")
    for model, cdf in ((uniform, lambda t: t), (ramp, lambda t: t * t)):
        t = model.training_times(20_000, torch.float64, torch.device("cpu"))
        assert t.min() >= 0 and t.max() < 1 - model.schedule.eps + 1e-12
        for q in (0.25, 0.5, 0.75):
            assert abs(float((t <= q).double().mean()) - cdf(q)) < 0.015
    assert float(ramp.cfm_loss(torch.randn(16, 2)).detach()) > 0
    with pytest.raises(ValueError, match="time_sampling"):
        px.FlowMatching(2, time_sampling="late")


def test_flow_matching_fits_and_then_fine_tunes_by_maximum_likelihood():
    data = px.datasets.toy("8gaussians", n=512, seed=0)
    fm = px.FlowMatching(2, hidden=(32, 32), solver="rk4", steps=4)
    fm.initialize(data)
    cfm = get_objective("cfm", fm)
    with torch.no_grad():
        start = float(cfm.validation_loss(fm, data, None))
    result = px.fit(fm, data, steps=100, batch_size=128, lr=3e-3, progress=False, seed=0)
    assert result.objective == "cfm"
    with torch.no_grad():
        assert float(cfm.validation_loss(fm, data, None)) < 0.9 * start
    with torch.no_grad():
        before = float(-fm().log_prob(data).mean())
    tuned = px.fit(fm, data, objective="mle", steps=20, batch_size=128, lr=1e-3, progress=False, seed=0)
    assert tuned.objective == "mle" and math.isfinite(tuned.losses[-1])
    with torch.no_grad():
        assert float(-fm().log_prob(data).mean()) < before
    assert bool(fm.standardizer.initialized)


def test_validation_loss_of_cfm_is_deterministic():
    data = px.datasets.toy("moons", n=256, seed=0)
    fm = px.FlowMatching(2, hidden=(8,))
    result = px.fit(fm, data, steps=4, validation=data[:64], eval_every=1, progress=False, seed=0)
    obj = get_objective("cfm", fm)
    assert obj.validation_loss(fm, data[:64], None) == obj.validation_loss(fm, data[:64], None)
    assert len(result.val_losses) == 4


@pytest.mark.parametrize("family", [px.FlowMatching, px.Diffusion])
def test_classifier_free_guidance_mixes_fields(family):
    torch.manual_seed(0)
    model = family(2, 3, hidden=(8,), guidance_dropout=0.3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    x, t, c = torch.randn(4, 2), torch.tensor(0.3), torch.randn(4, 3)
    field = model(c, guidance=2.5).bijector[0].field
    if family is px.FlowMatching:
        guided = field(x, t, c)
        cond = model.network(x, t, torch.cat([c, torch.ones(4, 1)], -1))
        null = model.network(x, t, torch.zeros(4, 4))
    else:  # the noise prediction is mixed (the drift is affine in it)
        guided = field.noise(x, t, c)
        cond = field.noise(x, t, torch.cat([c, torch.ones(4, 1)], -1), network_context=True)
        null = field.noise(x, t, torch.zeros(4, 4), network_context=True)
        assert torch.allclose(model.ode.field.noise(x, t, c), cond)  # the model's w is 1
    assert torch.allclose(guided, null + 2.5 * (cond - null), atol=1e-6)
    data, ctx = torch.randn(64, 2), torch.randn(64, 3)
    px.fit(model, data, context=ctx, steps=3, batch_size=32, progress=False, seed=0)
    assert model(c, guidance=3.0, solver="euler", steps=2).sample().shape == (4, 2)
    with pytest.raises(ValueError, match="guidance"):
        family(2, 3, hidden=(8,))(c, guidance=2.0)
    with pytest.raises(ValueError, match="conditional"):
        family(2, guidance_dropout=0.1)
    with pytest.raises(ValueError, match="guidance"):
        family(2, 1, standardize="regression", guidance_dropout=0.1)
    if family is px.Diffusion and importlib.util.find_spec("numpyro"):
        from pyro_xform.numpyro import to_numpyro

        with pytest.raises(NotImplementedError, match="guidance_dropout"):
            to_numpyro(model.float(), c.float(), trace="exact")


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="path"):
        px.FlowMatching(2, path="straight")
    with pytest.raises(ValueError, match="coupling"):
        px.FlowMatching(2, coupling="sinkhorn")
    with pytest.raises(ValueError, match="sde"):
        px.Diffusion(2, sde="subvp")
    with pytest.raises(ValueError, match="eps"):
        px.Diffusion(2, sde="vp", eps=0.0)
    with pytest.raises(ValueError, match="objective"):
        px.fit(px.FlowMatching(2), torch.randn(8, 2), objective="dsm", steps=1, progress=False)
    with pytest.raises(ValueError, match="guidance_dropout"):
        px.Diffusion(2)(guidance=2.0)


def test_diffusion_fits_with_dsm_and_conditions_on_context():
    torch.manual_seed(0)
    ctx = torch.randn(256, 1)
    data = torch.cat([ctx * 2 + 0.1 * torch.randn(256, 1), torch.randn(256, 1)], 1)
    model = px.Diffusion(2, 1, hidden=(32, 32))
    result = px.fit(model, data, context=ctx, steps=40, batch_size=64, lr=3e-3, progress=False, seed=0)
    assert result.objective == "dsm" and all(math.isfinite(v) for v in result.losses)
    a = model.sample((3,), torch.zeros(1), sampler="ddim", steps=5)
    b = model.sample((3,), torch.ones(1), sampler="ddim", steps=5)
    assert a.shape == b.shape == (3, 2)


# ------------------------------------------------------------------ inside Pyro programs
def test_flow_matching_prior_under_predictive_and_nuts():
    torch.manual_seed(0)
    prior = px.FlowMatching(2, hidden=(8,), solver="rk4", steps=3)

    def model(y=None):
        z = pyro.sample("z", prior())
        return pyro.sample("y", pyro.distributions.Normal(z, 0.5).to_event(1), obs=y)

    draws = Predictive(model, num_samples=20)()
    assert draws["z"].shape == (20, 1, 2) or draws["z"].shape == (20, 2)
    mcmc = MCMC(NUTS(model), num_samples=10, warmup_steps=10, disable_progbar=True)
    mcmc.run(torch.tensor([0.3, -0.2]))
    assert torch.isfinite(mcmc.get_samples()["z"]).all()


def test_standardization_is_set_once_and_saved(tmp_path):
    data = torch.randn(128, 2) * torch.tensor([5.0, 0.1]) + 3
    fm = px.FlowMatching(2, hidden=(8,))
    px.fit(fm, data, steps=2, progress=False, seed=0)
    loc = fm.standardizer.loc.clone()
    assert torch.allclose(loc, data.mean(0), atol=1e-5)
    px.fit(fm, data * 10, steps=2, progress=False, seed=0)  # a second fit keeps it
    assert torch.equal(fm.standardizer.loc, loc)
    px.save(fm, tmp_path / "fm.pt")
    assert torch.equal(px.load(tmp_path / "fm.pt").standardizer.loc, loc)


def test_adaptive_solver_never_evaluates_the_field_outside_the_interval():
    """Regression: dopri5 used to step past the data end of a diffusion and interpolate back,
    evaluating the VP schedule at s < 0 (NaN) and failing with 'underflow in dt'."""
    torch.manual_seed(0)
    model = px.Diffusion(2, hidden=(16,))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    times = []
    net = model.network
    real = net.forward_and_divergence

    def spy(x, s, context=None):
        times.append(float(s))
        return real(x, s, context)

    net.forward_and_divergence = spy
    net.forward = lambda x, s, context=None: spy(x, s, context)[0]
    with torch.no_grad():
        x = model.sample((200,))
        model().log_prob(x)
    assert torch.isfinite(x).all()
    assert min(times) >= model.eps - 1e-6 and max(times) <= 1.0 + 1e-6


def test_diffusion_likelihood_time_sampling_has_the_weighted_density():
    model = px.Diffusion(2, hidden=(8,), sde="vp", time_sampling="likelihood")
    s = model.draw_times(200_000, torch.float64)
    assert s.min() >= model.eps and s.max() <= 1
    grid = torch.linspace(model.eps, 1.0, 200_001, dtype=torch.float64)
    weight = model.schedule.g2(grid) / model.schedule.sigma(grid) ** 2
    cdf = torch.cumulative_trapezoid(weight, grid)
    for q in (0.01, 0.1, 0.5):
        expected = float(cdf[torch.searchsorted(grid[1:], torch.tensor(q, dtype=torch.float64))] / cdf[-1])
        assert abs(float((s <= q).double().mean()) - expected) < 0.005
    assert float((s <= 0.01).double().mean()) > 0.1  # uniform: 0.009; the weight piles up near the data end
    ve = px.Diffusion(2, hidden=(8,), sde="ve", time_sampling="likelihood")
    assert abs(float(ve.draw_times(100_000, torch.float64).mean()) - 0.5) < 0.01  # g²/σ² is constant
    with pytest.raises(ValueError, match="time_sampling"):
        px.Diffusion(2, time_sampling="beta")
    loss = model.dsm_loss(torch.randn(16, 2))
    assert torch.isfinite(loss)


def test_maximum_likelihood_with_solver_settings():
    from pyro_xform.objectives import MaximumLikelihood

    data = px.datasets.toy("moons", n=512)
    fm = px.FlowMatching(2, hidden=(32,), time_features=4)
    px.fit(fm, data, steps=50, progress=False, seed=0)
    calls = []
    original = fm.forward

    def spy(context=None, **settings):
        calls.append(settings)
        return original(context, **settings)

    fm.forward = spy
    objective = MaximumLikelihood(solver="rk4", steps=4, trace="hutchinson")
    result = px.fit(
        fm, data, objective=objective, steps=20, lr=1e-3, validation=0.2, eval_every=10, progress=False
    )
    assert calls and all(c == {"solver": "rk4", "steps": 4, "trace": "hutchinson"} for c in calls)
    assert result.val_losses[-1] < result.val_losses[0] + 0.05
    with pytest.raises(TypeError):
        px.fit(px.MAF(2), data, objective=MaximumLikelihood(solver="rk4"), steps=1, progress=False)


def test_regression_objectives_can_validate_by_likelihood():
    from pyro_xform.objectives import ConditionalFlowMatching, DenoisingScoreMatching, Reconstruction

    data = px.datasets.toy("moons", n=256)
    for model, objective in (
        (px.FlowMatching(2, hidden=(16,)), ConditionalFlowMatching),
        (px.Diffusion(2, hidden=(16,)), DenoisingScoreMatching),
    ):
        by_nll = objective(validation="nll", solver="rk4", steps=4)
        result = px.fit(model, data, objective=by_nll, steps=6, eval_every=3, validation=0.25, progress=False)
        assert len(result.val_losses) == 2 and result.best_step in (3, 6)
        # the figure is the model's negative log-likelihood under those solver settings
        with torch.no_grad():
            nll = -model(solver="rk4", steps=4).log_prob(data[:32]).mean()
            assert float(by_nll.validation_loss(model, data[:32], None)) == pytest.approx(
                float(nll), rel=1e-5
            )
            assert float(objective().validation_loss(model, data[:32], None)) != pytest.approx(float(nll))
    with pytest.raises(ValueError, match="'loss' or 'nll'"):
        ConditionalFlowMatching(validation="likelihood")
    with pytest.raises(ValueError, match="validation='nll' only"):
        DenoisingScoreMatching(solver="rk4")
    with pytest.raises(TypeError):
        Reconstruction(validation="nll")


# ------------------------------------------------- Gaussian skip and regression standardization
@pytest.mark.parametrize(
    "make",
    [
        lambda: px.FlowMatching(3, path="condot", gaussian_skip=True, standardize=False),
        lambda: px.FlowMatching(3, path="cosine", gaussian_skip=True, standardize=False),
        lambda: px.Diffusion(3, gaussian_skip=True, standardize=False),
    ],
    ids=["fm-condot", "fm-cosine", "diffusion-vp"],
)
def test_gaussian_skip_starts_as_the_standard_gaussian(make):
    """With the network at its zero start, the field is the exact one between standard
    Gaussians, so the density is N(0, I) and samples are N(0, I)."""
    torch.manual_seed(0)
    model = make().double()
    x = torch.randn(50, 3, dtype=torch.float64) * 1.5
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    got = model(rtol=1e-9, atol=1e-9).log_prob(x)
    assert (got - expected).abs().max() < 1e-4
    draws = model.sample((4000,), solver="rk4", steps=20)
    assert draws.mean(0).abs().max() < 0.08 and (draws.std(0) - 1).abs().max() < 0.05


def test_gaussian_skip_is_in_the_training_loss():
    """The regression losses train the whole field: at the zero start and on Gaussian data,
    the skip alone is the optimal field, so its loss is below a plain zero field's."""
    torch.manual_seed(0)
    data = torch.randn(4096, 2, dtype=torch.float64)
    for cls, name in ((px.FlowMatching, "cfm_loss"), (px.Diffusion, "dsm_loss")):
        losses = []
        for skip in (True, False):
            model = cls(2, gaussian_skip=skip, standardize=False).double()
            torch.nn.init.zeros_(model.network.net.rest[-1].weight)
            torch.nn.init.zeros_(model.network.net.rest[-1].bias)
            torch.manual_seed(1)
            with torch.no_grad():
                losses.append(float(getattr(model, name)(data)))
        assert losses[0] < 0.8 * losses[1], (name, losses)


def test_regression_standardization_learns_the_linear_part_from_the_context():
    torch.manual_seed(0)
    ctx = torch.randn(2000, 2)
    weight = torch.tensor([[2.0, -1.0], [0.5, 0.0], [0.0, 3.0]])
    data = ctx @ weight.T + 1.0 + 0.2 * torch.randn(2000, 3)
    model = px.FlowMatching(3, 2, hidden=(8,), standardize="regression", gaussian_skip=True)
    px.fit(model, data, context=ctx, steps=1, batch_size=64, progress=False, seed=0)
    layer = model.standardizer
    # fit initializes from every row, not from the first minibatch of 64
    assert torch.allclose(layer.weight, weight, atol=0.03) and torch.allclose(
        layer.loc, torch.ones(3), atol=0.03
    )
    assert torch.allclose(layer.scale_tril.diagonal(), torch.full((3,), 0.2), atol=0.02)
    # Before training moves it far, the model is the linear-Gaussian fit of x | c.
    c = torch.tensor([1.0, -1.0])
    draws = model.sample((4000,), c, solver="rk4", steps=10)
    assert torch.allclose(draws.mean(0), weight @ c + 1, atol=0.05)


def test_standardize_auto_regresses_conditional_models_only(tmp_path):
    from pyro_xform.transforms import ConditionalStandardize, Standardize

    kinds = {
        "conditional FM": (px.FlowMatching(2, 3, hidden=(8,)), ConditionalStandardize),
        "conditional diffusion": (px.Diffusion(2, 3, hidden=(8,)), ConditionalStandardize),
        "unconditional": (px.FlowMatching(2, hidden=(8,)), Standardize),
        "guided": (px.FlowMatching(2, 3, hidden=(8,), guidance_dropout=0.1), Standardize),
        "guided diffusion": (px.Diffusion(2, 3, hidden=(8,), guidance_dropout=0.1), Standardize),
        "True (older files)": (px.Diffusion(2, 3, hidden=(8,), standardize=True, sde="vp"), Standardize),
    }
    for name, (model, kind) in kinds.items():
        assert type(model.standardizer) is kind, name
    # A conditional diffusion model starts as the linear-Gaussian posterior; a saved one without it stays so.
    assert kinds["conditional diffusion"][0].ode.field.gaussian_skip
    assert not kinds["True (older files)"][0].ode.field.gaussian_skip
    assert not px.Diffusion(2, hidden=(8,), sde="vp").ode.field.gaussian_skip
    assert px.Diffusion(2, hidden=(8,)).ode.field.gaussian_skip  # EDM's c_skip
    model = kinds["conditional FM"][0]
    assert model.config["standardize"] == "auto"
    px.save(model, tmp_path / "fm.pt")
    assert type(px.load(tmp_path / "fm.pt").standardizer) is ConditionalStandardize


def test_regression_standardization_refuses_what_it_cannot_do():
    from pyro_xform.transforms import ConditionalStandardize

    with pytest.raises(ValueError, match="context"):
        px.FlowMatching(2, standardize="regression")
    with pytest.raises(ValueError, match="standardize"):
        px.Diffusion(2, 1, standardize="whiten")
    with pytest.raises(ValueError, match="guidance"):
        px.FlowMatching(2, 1, standardize="regression", guidance_dropout=0.1)
    with pytest.raises(ValueError, match="context"):
        ConditionalStandardize(2, 1).initialize(torch.randn(10, 2))
    # Too few rows to regress on a 4-D context: the intercept alone.
    layer = ConditionalStandardize(2, 4)
    layer.initialize(torch.randn(6, 2) + 5, torch.randn(6, 4))
    assert bool(layer.initialized) and not layer.weight.any() and (layer.loc > 3).all()


@pytest.mark.parametrize("per_row_time", [False, True])
def test_film_field_divergence_is_the_jacobian_trace(per_row_time):
    from pyro_xform.nn import TimeMLP

    torch.manual_seed(0)
    net = TimeMLP(3, context=2, hidden=(8, 8), film=True).double()
    with torch.no_grad():
        assert torch.equal(net.film.weight, torch.zeros_like(net.film.weight))  # starts as no FiLM
        net.film.weight.normal_()
        net.film.bias.normal_()
    x, c = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64) if per_row_time else torch.tensor(0.4, dtype=torch.float64)
    v, div = net.forward_and_divergence(x, t, c)
    jac = torch.func.vmap(torch.func.jacrev(lambda y, s, k: net(y, s, k)))(x, t.expand(4), c)
    assert torch.allclose(v, net(x, t, c))
    assert torch.allclose(div, jac.diagonal(dim1=-2, dim2=-1).sum(-1), atol=1e-10)


@pytest.mark.parametrize("film", [False, True])
def test_field_dropout_acts_in_training_only_and_its_divergence_is_exact(film):
    """A dropped field's divergence is that of the same draw of the mask; outside training
    the field is the one without dropout."""
    from pyro_xform.nn import TimeMLP

    torch.manual_seed(0)
    net = TimeMLP(3, hidden=(16, 16), film=film, dropout=0.5).double()
    plain = TimeMLP(3, hidden=(16, 16), film=film).double()
    plain.load_state_dict(net.state_dict())
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)

    def dropped(y):
        torch.manual_seed(1)
        return net.forward_and_divergence(y, t, divergence=False)[0]

    torch.manual_seed(1)
    v, div = net.forward_and_divergence(x, t)
    jac = torch.func.jacrev(dropped)(x).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    assert torch.allclose(v, dropped(x))
    assert torch.allclose(div, jac.diagonal(dim1=-2, dim2=-1).sum(-1), atol=1e-10)
    assert not torch.allclose(v, plain(x, t))
    net.eval()
    assert torch.equal(net(x, t), plain(x, t))
    assert torch.allclose(net.forward_and_divergence(x, t)[1], plain.forward_and_divergence(x, t)[1])
    # An ODE solve sees one field: dropout rests inside it, in training too.
    model = px.FlowMatching(2, hidden=(8,), dropout=0.5).double()
    with torch.no_grad():  # a field away from its start, where it is zero in places
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(5, 2, dtype=torch.float64)
    assert model.training and model.network.net.rest.dropout0.training
    training = model().log_prob(x)
    assert model.network.net.rest.dropout0.training
    model.eval()
    assert torch.equal(training, model().log_prob(x))
    for family, shape in ((px.FlowMatching, 2), (px.Diffusion, (1, 8, 8))):
        with pytest.raises(ValueError, match="dropout"):
            family(shape, dropout=1.0)
    assert px.Diffusion((1, 8, 8), channels=8, dropout=0.1).network.down[0].dropout.p == 0.1


def test_continuous_families_vector_fields_are_film_modulated_by_default_and_the_unet_is_not():
    from pyro_xform.infer import ESTIMATORS

    assert px.FlowMatching(2, hidden=(8,)).network.film is not None
    assert px.FlowMatching(2, hidden=(8,), film=False).network.film is None
    assert px.Diffusion(2, hidden=(8,), sde="vp").network.film is not None
    # EDM's skip leaves the network a small departure to learn, which FiLM stalls on.
    assert px.Diffusion(2, hidden=(8,)).network.film is None
    assert px.Diffusion(2, hidden=(8,), film=True).network.film is not None
    for family in (px.FlowMatching, px.Diffusion):
        assert not hasattr(family((1, 8, 8), channels=8).network, "film")
    # The posterior estimators keep the field they were measured with.
    assert ESTIMATORS["flow_matching"].family_defaults["film"] is False
    assert ESTIMATORS["diffusion"].family_defaults["film"] is False
    assert ESTIMATORS["diffusion"].family_defaults["sde"] == "vp"
