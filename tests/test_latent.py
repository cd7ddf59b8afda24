"""The latent-variable, implicit and discrete families: VAE, Autoencoder, GAN,
DiscreteAutoregressive, and their objectives."""

from __future__ import annotations

import copy
import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch import nn

import pyro_xform as px
from pyro_xform.objectives import ELBO, Adversarial, get_objective


class _Linear(nn.Module):
    """A linear decoder, so that a VAE's marginal is a known Gaussian."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, z, context=None):
        return z @ self.weight.T + self.bias


def _linear_vae():
    torch.manual_seed(0)
    vae = px.VAE(3, latent=2, hidden=(32,), scale=0.5).double()
    # Orthogonal columns: the exact posterior is a diagonal Gaussian, which the guide can match.
    q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64)).Q
    w, b = q[:, :2] * torch.tensor([2.0, 0.7], dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    vae.decoder = _Linear(w, b)
    exact = torch.distributions.MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(3, dtype=torch.float64))
    return vae, exact


# ----------------------------------------------------------------------------- VAE
def test_vae_iwae_converges_to_the_exact_marginal_and_bounds_it():
    vae, exact = _linear_vae()
    x = exact.sample((6,))
    truth = exact.log_prob(x)
    # Fit the encoder a little so the proposal is reasonable; the decoder stays put.
    vae.decoder.requires_grad_(False)
    opt = torch.optim.Adam(vae.encoder.parameters(), lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        (-vae.elbo(x, particles=4).sum()).backward()
        opt.step()
    with torch.no_grad():
        elbo = vae.elbo(x, particles=2000)
        iwae_small = vae.iwae(x, particles=2)
        iwae_big = vae.iwae(x, particles=20000, chunk=1000)
        marginal = vae().log_prob(x)  # the model's own particles (100)
    # A bound in expectation: the 2000-particle average may cross it by its Monte Carlo error
    # where the encoder has made the gap tiny.
    assert (elbo < truth + 0.01).all() and (truth - elbo).mean() > 0
    assert (iwae_big - truth).abs().max() < 0.02
    assert iwae_big.mean() > elbo.mean() and iwae_small.shape == (6,)
    assert (marginal - truth).abs().max() < 0.2


def test_vae_analytic_kl_when_both_gaussian_and_kl_weight():
    vae = px.VAE(4, latent=2, hidden=(8,), prior=None)
    assert vae.analytic_kl and isinstance(ELBO().elbo(vae), TraceMeanField_ELBO)
    iaf = px.VAE(4, latent=2, hidden=(8,), prior=None, posterior="iaf")
    assert not iaf.analytic_kl and type(ELBO().elbo(iaf)) is Trace_ELBO
    objective = ELBO(beta=0.5, anneal_steps=10)
    assert objective.kl_weight(0) == 0.0 and objective.kl_weight(5) == 0.25 and objective.kl_weight(50) == 0.5
    x = torch.randn(16, 4)
    losses = []
    for weight in (0.0, 0.5, 1.0):  # with the same draw, the loss grows with the (positive) KL weight
        torch.manual_seed(1)
        losses.append(float(objective.loss(vae, x, None, kl_weight=weight).detach()))
    assert losses[0] < losses[1] < losses[2]


def test_vae_defaults_a_flow_prior_and_a_scale_that_fits_the_code_size(tmp_path):
    """The default prior is a learned flow; the noise is shared and starts precise where the
    code can hold the datum, and an output of the decoder where the code compresses."""
    small, large = px.VAE(2, latent=2, hidden=(8,)), px.VAE(6, latent=2, hidden=(8,))
    assert isinstance(small.prior, px.NSF) and not small.analytic_kl
    assert not small.heteroscedastic and large.heteroscedastic
    assert isinstance(small.log_scale, torch.nn.Parameter)
    # Only the normal likelihood has a scale: no parameter that never gets a gradient.
    assert not isinstance(px.VAE(2, latent=2, likelihood="bernoulli").log_scale, torch.nn.Parameter)
    data = torch.randn(256, 2) * torch.tensor([3.0, 0.5])
    small.initialize(data)
    assert torch.allclose(small.log_scale.exp(), 0.05 * data.std(0))
    small.initialize(data * 10)  # once: a second fit continues from the learned scale
    assert torch.allclose(small.log_scale.exp(), 0.05 * data.std(0))
    px.save(small, tmp_path / "vae.pt")
    assert torch.equal(px.load(tmp_path / "vae.pt").log_scale, small.log_scale)
    with pytest.raises(ValueError, match="prior"):
        px.VAE(2, prior="gaussian")
    with pytest.raises(ValueError, match="scale"):
        px.VAE(2, scale="calibrated")


def test_vae_model_and_guide_in_a_users_svi_loop():
    vae = px.VAE(4, latent=2, hidden=(16,))
    x = torch.randn(64, 4) * torch.tensor([3.0, 1.0, 0.5, 0.1])
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    first = svi.evaluate_loss(x)
    for _ in range(100):
        svi.step(x)
    assert svi.evaluate_loss(x) < first
    assert any(name.startswith(f"{vae.name}$$$encoder") for name in pyro.get_param_store().keys())
    trace = pyro.poutine.trace(vae.guide).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (64, 2)


def test_vae_data_checks_and_options():
    with pytest.raises(ValueError, match="binary"):
        px.fit(px.VAE(3, likelihood="bernoulli"), torch.rand(8, 3), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        px.fit(px.VAE(3, likelihood="continuous_bernoulli"), torch.randn(8, 3), steps=1, progress=False)
    with pytest.raises(ValueError, match="latent"):
        px.VAE(3, latent=2, prior=px.MAF(3))
    with pytest.raises(ValueError, match="exact"):
        px.VAE(3, latent=2, prior=px.GAN(2))
    with pytest.raises(ValueError, match="scale"):
        px.VAE(3, likelihood="bernoulli", scale=0.1)
    with pytest.raises(ValueError, match="context"):
        px.VAE(3, 2, latent=2, prior=px.MAF(2, 5))
    d = px.VAE(3, likelihood="bernoulli", hidden=(8,))()
    x = d.sample((50,))
    assert set(x.unique().tolist()) <= {0.0, 1.0} and not d.has_rsample


def test_vae_fit_prior_two_stage_and_save_load(tmp_path):
    data = px.datasets.toy("rings", n=512)
    data = torch.cat([data, -data], 1)  # 4-D data on a 2-D ring set
    vae = px.VAE(4, latent=2, hidden=(32, 32))
    px.fit(vae, data, steps=150, lr=3e-3, progress=False, seed=0)
    prior = px.MAF(2, transforms=2, hidden=(16, 16))
    result = px.fit_prior(vae, prior, data, per_row=2, steps=100, progress=False, seed=0)
    assert result.steps == 100 and vae.prior is prior and vae.config["prior"]["family"] == "MAF"
    assert vae.codes(data[:10], per_row=3).shape == (30, 2)
    px.save(vae, tmp_path / "vae.pt")
    again = px.load(tmp_path / "vae.pt")
    assert isinstance(again.prior, px.MAF)
    for model in (vae, again):
        torch.manual_seed(0)
        model.value = model().log_prob(data[:5])
    assert torch.equal(vae.value, again.value)


def test_latent_diffusion_prior():
    data = torch.randn(64, 4)
    vae = px.VAE(4, latent=2, hidden=(16,))
    px.fit(vae, data, steps=5, progress=False, seed=0)
    diffusion = px.Diffusion(2, hidden=(16,), time_features=4, solver="rk4", steps=8)
    px.fit_prior(vae, diffusion, data, steps=5, progress=False, seed=0)
    d = vae()
    assert d.sample((3,)).shape == (3, 4) and torch.isfinite(d.log_prob(data[:3])).all()


def test_conditional_vae_shapes_with_conditional_prior():
    vae = px.VAE(3, 2, latent=2, hidden=(8,), prior=px.NSF(2, 2, transforms=1, hidden=(8,)), particles=5)
    c = torch.randn(4, 2)
    x = torch.randn(4, 3)
    assert vae.elbo(x, c).shape == (4,) and vae(c).log_prob(x).shape == (4,)
    assert vae(c).sample((6,)).shape == (6, 4, 3)


# ----------------------------------------------------------------------------- Autoencoder
def test_autoencoder_two_stages():
    data = px.datasets.toy("moons", n=512)
    data = torch.cat([data, data @ torch.tensor([[1.0, -1.0], [0.5, 2.0]])], 1)
    ae = px.Autoencoder(4, latent=2, hidden=(32, 32))
    result = px.fit(ae, data, steps=200, lr=3e-3, progress=False, seed=0)
    assert result.objective == "reconstruction"
    with torch.no_grad():
        error = (ae.decode(ae.encode(data)) - data).pow(2).sum(-1).mean()
    assert error < 0.1 * data.var(0).sum()
    latent = px.fit_latent(ae, data, steps=50, progress=False, seed=0)
    assert latent.steps == 50
    with pytest.raises(NotImplementedError, match="noise"):
        ae().log_prob(data[:3])
    noisy = px.Autoencoder(4, latent=2, hidden=(8,), noise=0.3, particles=50)
    assert noisy().log_prob_kind == "estimate" and noisy().log_prob(data[:3]).shape == (3,)


# ----------------------------------------------------------------------------- GAN
def test_gan_learns_and_refuses_a_density():
    data = px.datasets.toy("8gaussians", n=2048)
    gan = px.GAN(2, latent=2, hidden=(64, 64))
    with pytest.raises(NotImplementedError, match="implicit"):
        gan().log_prob(data[:2])
    px.fit(gan, data[:8], steps=1, progress=False)  # sets the data scale
    torch.manual_seed(0)
    before = px.metrics.sliced_wasserstein(gan().sample((1000,)), data[:1000])
    px.fit(gan, data, steps=400, batch_size=128, lr=2e-3, progress=False, seed=0)
    torch.manual_seed(0)
    after = px.metrics.sliced_wasserstein(gan().sample((1000,)), data[:1000])
    assert after < 0.5 * before
    x = gan().rsample((4,))
    x.sum().backward()  # reparameterized in the generator's parameters
    assert gan.generator.first.weight.grad is not None


def test_adversarial_steps_counts_and_wgan_gp():
    data = torch.randn(64, 3)
    gan = px.GAN(3, 2, latent=2, hidden=(8,))
    c = torch.randn(64, 2)
    objective = Adversarial(loss="wgan-gp", d_steps=3)
    result = px.fit(gan, data, context=c, objective=objective, steps=4, batch_size=16, progress=False)
    assert result.objective == "adversarial" and len(result.losses) == 4
    g_opt, d_opt = objective.parameter_groups(gan)
    assert {id(p) for p in g_opt}.isdisjoint({id(p) for p in d_opt})
    assert len(g_opt) + len(d_opt) == len(list(gan.parameters()))
    with pytest.raises(ValueError, match="loss"):
        Adversarial(loss="hinge")
    with pytest.raises(ValueError, match="adversarial"):
        get_objective("adversarial", px.MAF(2))


def test_two_optimizer_checkpoint_resumes_bit_for_bit(tmp_path):
    data = px.datasets.toy("moons", n=256)
    path = tmp_path / "gan.pt"
    torch.manual_seed(0)
    first = px.GAN(2, latent=2, hidden=(8,))
    torch.manual_seed(0)
    second = px.GAN(2, latent=2, hidden=(8,))
    px.fit(first, data, steps=8, batch_size=32, progress=False, seed=3)
    px.fit(second, data, steps=4, batch_size=32, progress=False, seed=3, checkpoint=path)
    px.fit(second, data, steps=8, batch_size=32, progress=False, seed=3, checkpoint=path)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- discrete
@pytest.mark.parametrize("categories", [2, 3])
def test_discrete_autoregressive_is_normalized_and_sampled_by_inverse_cdf(categories):
    model = px.DiscreteAutoregressive(3, 2, categories=categories, hidden=(16,)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    c = torch.randn(2, dtype=torch.float64)
    every = torch.tensor(list(itertools.product(range(categories), repeat=3)), dtype=torch.float64)
    with torch.no_grad():
        probs = model(c).log_prob(every).exp()
    assert abs(float(probs.sum()) - 1) < 1e-10
    draws = model(c).sample((20000,))
    index = (draws * torch.tensor([categories**2, categories, 1.0], dtype=torch.float64)).sum(-1).long()
    freq = torch.bincount(index, minlength=categories**3).double() / 20000
    assert (freq - probs).abs().max() < 4 * math.sqrt(0.25 / 20000) + 1e-3
    # The inverse CDF: u in the first category's share of position 0 gives x_0 = 0.
    p0 = torch.softmax(model.logits(torch.zeros(3, dtype=torch.float64), c)[0], -1)[0].detach()
    u = torch.tensor([float(p0) * 0.99, 0.5, 0.5], dtype=torch.float64)
    assert model.inverse_cdf(u, c)[0] == 0


def test_discrete_autoregressive_in_pyro_and_fit():
    data = (px.datasets.digits().train > 0.5).to(torch.get_default_dtype())
    model = px.DiscreteAutoregressive(64, hidden=(128,))

    def program(x):
        pyro.module("ar", model)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", model(), obs=x)

    trace = pyro.poutine.trace(program).get_trace(data[:10])
    assert torch.equal(trace.nodes["x"]["fn"].log_prob(data[:10]), model().log_prob(data[:10]))
    result = px.fit(model, data, steps=100, lr=3e-3, progress=False, seed=0)
    assert result.losses[-1] < 0.7 * result.losses[0]
    with pytest.raises(ValueError, match="integers"):
        px.fit(model, data + 0.5, steps=1, progress=False)
    with pyro.validation_enabled(True), pytest.raises(ValueError):
        model().log_prob(torch.full((64,), 2.0))


@pytest.mark.parametrize("family", ["GAN", "Autoencoder", "VAE", "DiscreteAutoregressive"])
def test_every_new_family_is_a_pyro_sample_site_under_predictive(family):
    kwargs = {} if family == "DiscreteAutoregressive" else {"latent": 2}
    m = getattr(px, family)(3, hidden=(8,), **kwargs)

    def model():
        with pyro.plate("rows", 4):
            x = pyro.sample("x", m())
            pyro.sample("y", pyro.distributions.Normal(x.sum(-1), 1.0))

    draws = pyro.infer.Predictive(model, num_samples=5)()
    assert draws["x"].shape == (5, 4, 3) and draws["y"].shape == (5, 4)


def test_two_vaes_trained_by_a_users_svi_loop_both_train():
    """A shared default name in Pyro's param store would hand the second VAE the first one's
    parameters: its own would never change."""
    data = torch.randn(32, 4)
    first = px.VAE(features=4, latent=2, hidden=(8,))
    vaes = [first, px.VAE(features=4, latent=2, hidden=(8,)), copy.deepcopy(first)]
    assert len({vae.name for vae in vaes}) == 3
    assert copy.deepcopy(px.VAE(features=4, name="mine")).name == "mine"
    for vae in vaes:
        before = {k: v.detach().clone() for k, v in vae.named_parameters()}
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(5):
            svi.step(data)
        moved = [k for k, v in vae.named_parameters() if not torch.equal(v, before[k])]
        assert moved and set(moved) >= {k for k in before if k.startswith("decoder")}


def test_gan_loads_a_file_written_under_the_old_names():
    gan = px.GAN(3, latent=2, hidden=(8,))
    px.fit(gan, torch.randn(64, 3) * 2 + 1, steps=2, progress=False)  # sets the standardization
    old = {k.replace("discriminator.", "critic.", 1): v for k, v in gan.state_dict().items()}
    old = {
        k.replace("standardizer.", "data_", 1) if "standardizer.l" in k or "standardizer.s" in k else k: v
        for k, v in old.items()
    }
    old["initialized"] = old.pop("standardizer.initialized")
    again = px.GAN(3, latent=2, hidden=(8,))
    again.load_state_dict(old)
    x = torch.randn(5, 3)
    assert torch.equal(again.discriminate(x), gan.discriminate(x))
    assert torch.equal(again.standardizer.loc, gan.standardizer.loc) and bool(again.standardizer.initialized)


def test_autoencoder_records_its_default_density_and_loads_a_file_written_with_the_old_one(tmp_path):
    import json

    from pyro_xform import checkpoint

    ae = px.Autoencoder(4, latent=2, hidden=(8,))
    assert isinstance(ae.density, px.NSF) and ae.config["density"]["family"] == "NSF"
    px.save(ae, tmp_path / "new.pt")
    x = torch.randn(5, 4)
    assert torch.equal(
        px.load(tmp_path / "new.pt").density().log_prob(x[:, :2]), ae.density().log_prob(x[:, :2])
    )
    # A file written before 2026-12-08 records no density; its density was this MAF.
    old = px.Autoencoder(4, latent=2, hidden=(8,), density=px.MAF(2, transforms=4, hidden=(64, 64)))
    config = {"family": "Autoencoder", "kwargs": {**old.config, "density": None}}
    contents = {"format": checkpoint.FORMAT, "config": json.dumps(config), "state_dict": old.state_dict()}
    torch.save(contents, tmp_path / "old.pt")
    again = px.load(tmp_path / "old.pt")
    assert isinstance(again.density, px.MAF)
    assert torch.equal(again.decode(x[:, :2]), old.decode(x[:, :2]))
