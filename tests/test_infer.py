"""pyro_xform.infer: base-space priors, generative guides, amortized posteriors, diagnostics."""

import functools
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_xform as px
from pyro_xform.infer import (
    AutoXformGuide,
    BaseReparam,
    LikelihoodEstimator,
    PosteriorEstimator,
    guides,
    psis_khat,
    simulate,
    simulators,
    to_inference_data,
)
from pyro_xform.metrics import c2st
from pyro_xform.transforms import ActNorm, TriangularAffine


def _frozen(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- base space
@pytest.mark.parametrize(
    "family, base_size",
    [
        (lambda: px.GAN(4, latent=2, hidden=(8,)), 2),
        (lambda: px.VAE(4, latent=2, hidden=(8,), prior=px.MAF(2, transforms=1, hidden=(8,))), 2),
        (lambda: px.Autoencoder(4, latent=3, hidden=(8,), density=px.NSF(3, transforms=1, hidden=(8,))), 3),
        (lambda: px.FlowMatching(4, hidden=(8,), solver="rk4", steps=4), 4),
    ],
    ids=["GAN", "VAE-flow-prior", "Autoencoder", "FlowMatching"],
)
def test_base_reparam_runs_inference_over_the_base_variable(family, base_size):
    prior = _frozen(family())
    A = torch.randn(2, 4)  # an underdetermined linear measurement

    def model(y):
        x = pyro.sample("x", prior())
        pyro.sample("y", dist.Normal(x @ A.T, 0.1).to_event(1), obs=y)

    reparam = pyro.poutine.reparam(model, config={"x": BaseReparam()})
    y = torch.randn(2)
    trace = pyro.poutine.trace(reparam).get_trace(y)
    z = trace.nodes["x_base"]["value"]
    assert z.shape == (base_size,) and trace.nodes["x"]["value"].shape == (4,)
    # The joint density is that of z and y: x is deterministic.
    stochastic = {
        n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["infer"].get("_deterministic")
    }
    assert {"x_base", "y"} <= stochastic
    mcmc = MCMC(NUTS(reparam), num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run(y)
    assert mcmc.get_samples()["x_base"].shape == (5, base_size)


def test_base_reparam_noise_site_and_refusals():
    vae = _frozen(px.VAE(4, latent=2, hidden=(8,)))

    def model():
        return pyro.sample("x", vae())

    trace = pyro.poutine.trace(pyro.poutine.reparam(model, config={"x": BaseReparam(noise=True)})).get_trace()
    assert "x_noise" in trace.nodes and torch.equal(
        trace.nodes["x"]["value"], trace.nodes["x_noise"]["value"]
    )

    def observed():
        pyro.sample("x", vae(), obs=torch.zeros(4))

    with pytest.raises(ValueError, match="latent sites"):
        pyro.poutine.trace(pyro.poutine.reparam(observed, config={"x": BaseReparam()})).get_trace()

    def plain():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="pyro_xform distribution"):
        pyro.poutine.trace(pyro.poutine.reparam(plain, config={"x": BaseReparam()})).get_trace()


# --------------------------------------------------------------------------- guides
def _correlated(y=None):
    y = torch.tensor(1.0) if y is None else y
    theta = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.3))
    pyro.sample("y", dist.Normal(theta.sum(-1), 0.1 * scale), obs=y)


def _final_elbo(guide, steps=500):
    svi = SVI(
        _correlated,
        guide,
        pyro.optim.Adam({"lr": 0.02}),
        Trace_ELBO(num_particles=4, vectorize_particles=True),
    )
    losses = [svi.step() for _ in range(steps)]
    return sum(losses[-40:]) / 40


def test_every_guide_parameter_trains_after_the_first_step():
    """SVI optimizes the parameters its step's trace saw: a chain kept from the first step
    must not hide the affine map's parameters from later steps."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoXformGuide(_correlated, "IAF", hidden=(8,), transforms=1)
    svi = SVI(_correlated, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step()
    before = {name: p.detach().clone() for name, p in guide.named_parameters()}
    for _ in range(3):
        svi.step()
    frozen = [name for name, p in guide.named_parameters() if torch.equal(p.detach(), before[name])]
    assert not frozen and any(name.startswith("affine") for name in before)


def test_flow_guide_beats_mean_field_on_a_correlated_posterior():
    pyro.set_rng_seed(0)
    flow_loss = _final_elbo(AutoXformGuide(_correlated, "NSF", hidden=(16,), transforms=2))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    normal_loss = _final_elbo(AutoNormal(_correlated))
    assert flow_loss < normal_loss - 0.5, (flow_loss, normal_loss)


def test_guide_affine_is_a_cholesky_factor_up_to_its_limit_and_diagonal_beyond(monkeypatch):
    guide = AutoXformGuide(_correlated, "MAF", hidden=(4,), init_scale=0.2)
    guide()
    assert isinstance(guide.affine, TriangularAffine)
    assert torch.allclose(guide.affine.scale_tril(), 0.2 * torch.eye(3))
    diagonal = AutoXformGuide(_correlated, "MAF", hidden=(4,), linear="diagonal")
    diagonal()
    assert isinstance(diagonal.affine, ActNorm)
    monkeypatch.setattr(guides, "_TRIANGULAR_UP_TO", 2)  # three latents: beyond the limit
    beyond = AutoXformGuide(_correlated, "MAF", hidden=(4,))
    beyond()
    assert isinstance(beyond.affine, ActNorm)
    with pytest.raises(ValueError, match="linear must be"):
        AutoXformGuide(_correlated, "MAF", linear="full")


def test_guide_api_median_quantiles_any_family_and_checks():
    guide = AutoXformGuide(_correlated, "FlowMatching", hidden=(8,), settings={"solver": "rk4", "steps": 2})
    guide()
    median = guide.median(num_samples=50)
    assert set(median) == {"theta", "scale"} and median["scale"] > 0
    q = guide.quantiles([0.1, 0.9], num_samples=200)
    assert q["theta"].shape == (2, 2) and (q["theta"][0] < q["theta"][1]).all()
    assert guide.get_posterior().log_prob_kind == "exact"
    with pytest.raises(ValueError, match="exact density"):
        AutoXformGuide(_correlated, "VAE")()
    with pytest.raises(ValueError, match="unknown family"):
        AutoXformGuide(_correlated, "Nope")()


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 3)

    def forward(self, y):
        return self.linear(y.reshape(1))


def test_amortized_guide_conditions_on_the_data_and_trains_its_encoder():
    encoder = _Encoder()
    before = encoder.linear.weight.detach().clone()
    guide = AutoXformGuide(_correlated, "MAF", encoder=encoder, hidden=(8,))
    svi = SVI(_correlated, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for y in torch.linspace(-2, 2, 5):
        svi.step(y)
    assert not torch.equal(encoder.linear.weight, before)
    with torch.no_grad():
        a = guide.get_posterior(torch.tensor(-2.0)).sample((200,)).mean(0)
        b = guide.get_posterior(torch.tensor(2.0)).sample((200,)).mean(0)
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------- amortized
@pytest.mark.parametrize("name", sorted(simulators.SIMULATORS))
def test_simulators_simulate(name):
    model, parameters, observed = simulators.SIMULATORS[name]
    theta, x = simulate(model, 64, parameters=parameters, observed=observed, seed=0)
    assert theta.shape[0] == x.shape[0] == 64 and torch.isfinite(x).all()


def test_two_moons_reference_posterior_is_on_the_moons():
    theta, x = simulate(simulators.two_moons, 1, seed=1)
    draws = simulators.two_moons_posterior(x[0], 2000)
    assert draws.abs().max() <= 1
    # Both modes: the posterior is symmetric in the sign of theta1 + theta2 only approximately,
    # but the true parameter lies within the reference draws' spread.
    assert (draws - theta[0]).norm(dim=-1).min() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["flow", "maf", "flow_matching", "diffusion"])
def test_posterior_estimators_recover_the_gaussian_linear_posterior(estimator):
    model = functools.partial(simulators.gaussian_linear, dim=2)
    kwargs = {
        "flow": dict(hidden=(32, 32), transforms=3),
        "maf": dict(hidden=(32, 32), transforms=3),
        "flow_matching": dict(hidden=(64, 64)),
        "diffusion": dict(hidden=(64, 64)),
    }[estimator]
    pe = PosteriorEstimator(model, estimator, **kwargs)
    pe.train(4000, steps=1500, batch_size=256, lr=2e-3, progress=False, seed=0)
    x_obs = torch.tensor([0.3, -0.4])
    draws = pe.posterior(x_obs).sample((500,))
    reference = simulators.gaussian_linear_posterior(x_obs).sample((500,))
    assert (draws.mean(0) - x_obs / 2).abs().max() < 0.1
    assert c2st(draws, reference) < 0.7


def test_posterior_estimator_checks():
    pe = PosteriorEstimator(simulators.two_moons, "flow", hidden=(8,), transforms=1)
    with pytest.raises(RuntimeError, match="train"):
        pe.posterior(torch.zeros(2))
    with pytest.raises(ValueError, match="unknown estimator"):
        PosteriorEstimator(simulators.two_moons, "npe")
    theta, x = simulate(simulators.two_moons, 50, seed=0)
    x[3, 1] = math.nan
    with pytest.raises(ValueError, match="row 3"):
        pe.train(theta=theta, x=x, steps=1, progress=False)
    pe.train(theta=theta[:10], x=x[:10].nan_to_num(), steps=1, progress=False)
    with pytest.raises(ValueError, match="3 numbers"):
        pe.posterior(torch.zeros(3))
    assert pe.posterior(torch.zeros(4, 2)).batch_shape == (4,)
    # A family built by the user trains and gives posteriors just as a named one.
    built = PosteriorEstimator(simulators.two_moons, px.NSF(2, context=2, hidden=(8,), transforms=1))
    built.train(theta=theta[:10], x=x[:10].nan_to_num(), steps=1, progress=False)
    assert built.posterior(torch.zeros(4, 2)).sample().shape == (4, 2)


# --------------------------------------------------------------------------- diagnostics
def test_to_inference_data_from_mcmc_draws_and_a_posterior():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mcmc = MCMC(NUTS(model), num_samples=20, warmup_steps=10, disable_progbar=True)
    mcmc.run(torch.tensor(1.0))
    idata = to_inference_data(mcmc, observed_data={"y": torch.tensor([1.0])})
    assert idata.posterior["mu"].shape == (1, 20)
    assert "observed_data" in idata.groups()
    flow = px.MAF(2, hidden=(4,))
    assert to_inference_data(flow(), num_samples=30).posterior["theta"].shape == (1, 30, 2)
    with pytest.raises(ValueError, match="MCMC"):
        to_inference_data(3)


def test_psis_khat_flags_a_mean_field_guide_on_a_funnel():
    def funnel():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        pyro.sample("x", dist.Normal(torch.zeros(4), torch.exp(v / 2).unsqueeze(-1)).to_event(1))

    pyro.set_rng_seed(0)
    guide = AutoNormal(funnel)
    svi = SVI(funnel, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step()
    with pytest.warns(UserWarning, match="k-hat"):
        assert psis_khat(funnel, guide, num_particles=2000) > 0.7


def test_psis_khat_of_the_exact_posterior_is_not_positive_and_warns_not():
    def model(y):
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    posterior = dist.Normal(torch.tensor(0.5), math.sqrt(0.5))  # exact for y = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Equal weights up to rounding: Pyro's fit gives inf or a negative value by chance.
        for seed in range(4):
            pyro.set_rng_seed(seed)
            assert psis_khat(model, posterior, torch.tensor(1.0)) <= 0
    far = dist.Normal(torch.tensor(8.0), 0.05)  # almost no mass where the posterior is
    with pytest.warns(UserWarning, match="k-hat"):
        assert psis_khat(model, far, torch.tensor(1.0)) > 0.7


def test_estimator_defaults_apply_and_yield_to_the_user(monkeypatch):
    from pyro_xform.infer import amortized
    from pyro_xform.nn import Residual
    from pyro_xform.transforms import Standardize

    seen = {}
    real_fit = amortized.fit

    def spy(model, data, **kwargs):
        seen.update(kwargs)
        return real_fit(model, data, **kwargs)

    monkeypatch.setattr(amortized, "fit", spy)
    pe = PosteriorEstimator(simulators.gaussian_linear, "flow", hidden=(8, 8))
    pe.train(100, steps=2, progress=False, seed=0)
    assert seen["batch_size"] == 1024 and seen["lr"] == 2e-3 and seen["steps"] == 2
    assert seen["schedule"] == "plateau" and seen["patience"] == 3
    assert isinstance(pe.family.transform[-1], Standardize) and bool(pe.family.transform[-1].initialized)
    # "full" batches: every training simulation (100 less the 10 held out) in each step.
    PosteriorEstimator(simulators.gaussian_linear, "flow", hidden=(8,)).train(
        100, steps=1, batch_size="full", progress=False, seed=0
    )
    assert seen["batch_size"] == 90
    residuals = [m for m in pe.family.modules() if isinstance(m, Residual)]
    assert residuals and all(m.body[1].in_features == 8 for m in residuals)
    pe = PosteriorEstimator(simulators.gaussian_linear, "flow_matching", hidden=(8,))
    pe.train(100, steps=2, batch_size=32, progress=False, seed=0)
    assert seen["batch_size"] == 32 and seen["patience"] == 2 and seen["min_delta"] == 0.02
    assert seen["objective"].name == "cfm" and seen["objective"].validation == "nll"
    assert seen["schedule"] == "plateau"
    mle = px.objectives.MaximumLikelihood(solver="rk4", steps=2)
    pe.train(100, steps=1, objective=mle, progress=False, seed=0)
    assert seen["objective"] is mle


def test_a_seed_fixes_the_estimators_initialization_whatever_was_drawn_before():
    theta, x = simulate(simulators.gaussian_linear, 100, seed=1)
    trained = []
    for draws in (0, 3):
        torch.randn(draws)  # a script that drew something before
        pe = PosteriorEstimator(simulators.gaussian_linear, "flow", hidden=(8,), transforms=1)
        pe.train(theta=theta, x=x, steps=2, progress=False, seed=0)
        trained.append(pe.family.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


# ------------------------------------------------------------------ likelihood estimation
def _noisy_identity(x=None):
    theta = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    return pyro.sample("x", dist.Normal(theta, 0.5).to_event(1), obs=x)


def test_likelihood_estimator_is_the_likelihood_of_a_pyro_model_under_nuts():
    """q(x | theta) learns N(theta, 0.5^2); as the observation site of a model with five
    i.i.d. trials under a plate, NUTS gives the exact conjugate posterior N(4 sum x / 21, 1/21)."""
    pyro.set_rng_seed(0)
    nle = LikelihoodEstimator(_noisy_identity, hidden=(32, 32), transforms=2)
    nle.train(2000, steps=300, progress=False, seed=0)
    theta = torch.randn(200, 2)
    x = theta + 0.5 * torch.randn(200, 2)
    with torch.no_grad():
        error = nle.likelihood(theta).log_prob(x) - dist.Normal(theta, 0.5).to_event(1).log_prob(x)
    assert float(error.abs().mean()) < 0.3

    x_obs = torch.tensor([0.8, -0.4]) + 0.5 * torch.randn(5, 2)

    def model(x_obs):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("trials", len(x_obs)):
            pyro.sample("x", nle.likelihood(theta), obs=x_obs)

    mcmc = MCMC(NUTS(model), num_samples=150, warmup_steps=100, disable_progbar=True)
    mcmc.run(x_obs)
    draws = mcmc.get_samples()["theta"]
    assert torch.allclose(draws.mean(0), 4 * x_obs.sum(0) / 21, atol=0.15)
    assert torch.allclose(draws.std(0), torch.full((2,), 21**-0.5), rtol=0.35)
    # The same posterior by the estimator's own NUTS under the simulator's prior: chains in
    # one plate, the trials as i.i.d. rows.
    draws = nle.sample_posterior(x_obs, 300, chains=4, warmup=100, seed=0)
    assert draws.shape == (300, 2)
    assert torch.allclose(draws.mean(0), 4 * x_obs.sum(0) / 21, atol=0.15)
    assert torch.allclose(draws.std(0), torch.full((2,), 21**-0.5), rtol=0.35)


def test_likelihood_estimator_keeps_the_candidate_with_the_best_validation_likelihood(tmp_path):
    """Several estimators train on one validation split; the one of least validation NLL is
    kept (and recorded with the others), later trainings continue it, and it saves alone."""
    nle = LikelihoodEstimator(_noisy_identity, ("flow", "maf"), hidden=(8,), transforms=1)
    assert nle.family is None and nle.selection == {}
    result = nle.train(500, steps=40, progress=False, seed=0)
    assert set(nle.selection) == {"flow", "maf"}
    chosen = min(nle.selection, key=nle.selection.get)
    assert type(nle.family).__name__ == {"flow": "NSF", "maf": "MAF"}[chosen]
    assert result.best_val == nle.selection[chosen]
    family = nle.family
    nle.train(500, steps=2, progress=False, seed=1)
    assert nle.family is family and set(nle.selection) == {"flow", "maf"}
    nle.save(tmp_path / "nle.pt")
    again = LikelihoodEstimator.load(tmp_path / "nle.pt", _noisy_identity)
    assert type(again.family) is type(family)


def test_posterior_estimator_chooses_among_candidates_each_with_its_own_embedding():
    embedding = torch.nn.Linear(2, 3)
    before = embedding.weight.detach().clone()
    pe = PosteriorEstimator(
        simulators.two_moons, ("flow", "maf"), embedding=embedding, hidden=(8,), transforms=1
    )
    assert pe.estimator == ("flow", "maf")
    pe.train(300, steps=20, progress=False, seed=0)
    assert set(pe.selection) == {"flow", "maf"}
    assert pe.estimator == min(pe.selection, key=pe.selection.get)
    # Each candidate trained a copy of the module; the kept one's is the estimator's.
    assert torch.equal(embedding.weight, before)
    assert pe.family.embedding is pe.embedding and pe.embedding is not embedding
    assert not torch.equal(pe.embedding.weight, before)
    assert pe.posterior(torch.zeros(2)).sample((5,)).shape == (5, 2)


def test_likelihood_estimator_refuses_candidates_it_cannot_compare():
    fm = px.FlowMatching(2, context=2, hidden=(8,))
    before = {k: v.clone() for k, v in fm.state_dict().items()}
    with pytest.raises(ValueError, match="not validated by its likelihood"):
        LikelihoodEstimator(_noisy_identity, ("flow", fm)).train(100, steps=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in fm.state_dict().items())
    with pytest.raises(ValueError, match="validation fraction"):
        LikelihoodEstimator(_noisy_identity).train(100, steps=1, validation=None, progress=False)
    with pytest.raises(ValueError, match="own objective"):
        LikelihoodEstimator(_noisy_identity).train(100, steps=1, objective="mle", progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        LikelihoodEstimator(_noisy_identity, [])


def _hierarchical(x=None):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    theta = pyro.sample("theta", dist.Normal(torch.zeros(2), scale).to_event(1))
    return pyro.sample("x", dist.Normal(theta, 0.5).to_event(1), obs=x)


def test_likelihood_estimator_refuses_bad_input():
    hierarchical = LikelihoodEstimator(_hierarchical, parameters="theta", hidden=(8,), transforms=1)
    hierarchical.train(100, steps=2, progress=False, seed=0)
    with pytest.raises(ValueError, match="changes between runs"):
        hierarchical.sample_posterior(torch.zeros(2), 10)
    nle = LikelihoodEstimator(_noisy_identity, hidden=(8,), transforms=1)
    with pytest.raises(RuntimeError, match="train"):
        nle.likelihood(torch.zeros(2))
    with pytest.raises(ValueError, match="both"):
        nle.train(theta=torch.zeros(10, 2))
    nle.train(100, steps=2, progress=False, seed=0)
    assert nle.family.features == 2 and nle.family.context_features == 2
    with pytest.raises(ValueError, match="3 numbers per draw"):
        nle.likelihood(torch.zeros(3))
    for bad, match in ((torch.zeros(1, 1, 2), "x_obs must be"), (torch.full((2,), math.nan), "NaN")):
        with pytest.raises(ValueError, match=match):
            nle.sample_posterior(bad, 10)
    with pytest.raises(ValueError, match="chains"):
        nle.sample_posterior(torch.zeros(2), 10, chains=0)
    with pytest.raises(ValueError, match="NaN"):
        nle.train(theta=torch.full((10, 2), math.nan), x=torch.zeros(10, 2), steps=1, progress=False)
