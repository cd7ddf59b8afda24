"""Seeded quality checks (``-m slow``): a fit reaches a known NLL."""

import pytest
import torch

import pyro_xform as px


@pytest.mark.slow
def test_nsf_on_checkerboard_reaches_the_target_nll():
    torch.set_num_threads(2)
    train, test = px.datasets.load("checkerboard", n_train=50_000, n_test=20_000)
    flow = px.NSF(2, transforms=4, hidden=(64, 64), bins=8)
    px.fit(flow, train, steps=600, batch_size=512, lr=1e-2, schedule="cosine", seed=0, progress=False)
    with torch.no_grad():
        nll = float(-flow().log_prob(test).mean())
    assert 3.466 < nll <= 3.56  # ln 32 is the entropy bound


@pytest.mark.slow
def test_maf_on_moons_beats_a_gaussian():
    train, test = px.datasets.load("moons", n_train=10_000, n_test=5_000)
    flow = px.MAF(2)
    px.fit(flow, train, steps=800, batch_size=512, lr=5e-3, schedule="cosine", seed=0, progress=False)
    gauss = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    with torch.no_grad():
        assert float(-flow().log_prob(test).mean()) < float(-gauss.log_prob(test).mean()) - 0.5


@pytest.mark.slow
def test_vae_on_digits_beats_the_gmm_and_a_flow_prior_tightens_its_bound():
    torch.set_num_threads(2)
    split = px.datasets.digits()
    vae = px.VAE(64, latent=16, hidden=(512, 256), prior=None, particles=200)
    px.fit(
        vae,
        split.train,
        steps=3000,
        batch_size=128,
        schedule="cosine",
        validation=0.15,
        patience=15,
        eval_every=50,
        augment=px.datasets.Dequantize(17),
        progress=False,
        seed=0,
    )

    def bpd():
        torch.manual_seed(0)
        with torch.no_grad():
            return px.datasets.bits_per_dim(-float(vae().log_prob(split.test).mean()), 64)

    gaussian = bpd()
    prior = px.NSF(16, transforms=4, hidden=(128, 128), bins=8, actnorm=True)
    px.fit_prior(vae, prior, split.train, per_row=16, steps=1500, validation=0.15, progress=False, seed=0)
    flow = bpd()
    assert gaussian < 2.71  # the 10-component GMM of bench/digits.py
    assert flow < gaussian - 0.01


@pytest.mark.slow
@pytest.mark.parametrize(("family", "bound"), [(px.FlowMatching, 3.76), (px.Diffusion, 3.70)])
def test_continuous_families_defaults_on_checkerboard(family, bound):
    # The demo's budget; the fields without FiLM reached 3.816 and 3.877 here, and
    # Diffusion's VP design with FiLM 3.773 (EDM without FiLM: 3.643).
    torch.set_num_threads(2)
    train, test = px.datasets.load("checkerboard", n_train=20_000, n_test=5_000)
    torch.manual_seed(0)
    model = family(2)
    px.fit(model, train, steps=4500, batch_size=512, lr=5e-3, schedule="cosine", seed=0, progress=False)
    with torch.no_grad():
        nll = float(-model().log_prob(test).mean())
    assert 3.466 < nll <= bound


@pytest.mark.slow
def test_diffusion_default_learns_beyond_the_gaussian_on_rings_at_a_high_learning_rate():
    # With FiLM, EDM's skip stalled at the Gaussian here (3.587: the Gaussian fit's NLL);
    # the default reached 3.253.
    torch.set_num_threads(2)
    train, test = px.datasets.load("rings", n_train=20_000, n_test=5_000)
    torch.manual_seed(0)
    model = px.Diffusion(2)
    px.fit(model, train, steps=4500, batch_size=512, lr=5e-3, schedule="cosine", seed=0, progress=False)
    with torch.no_grad():
        nll = float(-model().log_prob(test).mean())
    assert nll <= 3.40
