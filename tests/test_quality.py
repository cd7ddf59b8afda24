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
