"""Embedding networks of observations, the family that conditions on them, and the
posterior estimator that trains both."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_xform as px
from pyro_xform.infer import PosteriorEstimator
from pyro_xform.nn import EMBEDDINGS, embedding_network

SHAPES = {"mlp": (3, 4), "deepset": (6, 2), "conv1d": (2, 16), "conv2d": (1, 8, 8)}


@pytest.mark.parametrize("name", sorted(EMBEDDINGS))
def test_embeddings_map_flat_observations_to_summaries(name):
    shape = SHAPES[name]
    net = embedding_network(name, shape, features=5)
    size = torch.Size(shape).numel()
    assert net(torch.randn(7, size)).shape == (7, 5)
    assert net(torch.randn(2, 3, size)).shape == (2, 3, 5)
    with pytest.raises(ValueError, match=f"takes {size} numbers"):
        net(torch.randn(7, size + 1))


def test_embedding_refuses_an_unknown_name_and_a_wrong_shape():
    with pytest.raises(ValueError, match="unknown embedding"):
        embedding_network("transformer", (3,))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        embedding_network("deepset", (12,))
    with pytest.raises(ValueError, match="takes"):
        embedding_network("conv2d", (2, 3, 4, 5))


def test_the_set_embedding_ignores_the_order_of_the_elements():
    net = embedding_network("deepset", (10, 3), features=4)
    x = torch.randn(5, 10, 3)
    shuffled = x[:, torch.randperm(10)]
    assert torch.allclose(net(x.flatten(-2)), net(shuffled.flatten(-2)), atol=1e-6)
    assert not torch.allclose(net(x.flatten(-2)), net(torch.randn(5, 30)), atol=1e-3)


def test_embedded_refuses_what_it_cannot_condition():
    with pytest.raises(ValueError, match="conditional family"):
        px.Embedded(px.NSF(2, hidden=(8,)), "mlp", 3)
    with pytest.raises(ValueError, match="exact density and a bijection"):
        px.Embedded(px.GAN(2, 3, latent=2, hidden=(8,)), "mlp", 3)
    with pytest.raises(ValueError, match="exact density and a bijection"):
        px.Embedded(px.DiscreteAutoregressive(2, 3, hidden=(8,)), "mlp", 3)
    with pytest.raises(ValueError, match="maps"):
        px.Embedded(px.NSF(2, 4, hidden=(8,)), torch.nn.Linear(3, 5), 3)
    model = px.Embedded(px.NSF(2, 4, hidden=(8,)), "mlp", (2, 3))
    with pytest.raises(ValueError, match="context has shape"):
        model(torch.randn(5, 5))


def test_fit_trains_the_embedding_with_the_family_and_checkpoints_keep_both(tmp_path):
    torch.manual_seed(0)
    model = px.Embedded(px.NSF(2, 4, transforms=2, hidden=(8,)), "deepset", (5, 2))
    context = torch.randn(400, 10)
    theta = context.view(400, 5, 2).mean(1) + 0.1 * torch.randn(400, 2)
    before = [p.clone() for p in model.embedding.parameters()]
    px.fit(model, theta, context=context, steps=30, progress=False, seed=0)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.embedding.parameters(), strict=True))
    px.save(model, tmp_path / "embedded.pt")
    again = px.load(tmp_path / "embedded.pt")
    x = torch.randn(3, 2)
    assert torch.equal(again(context[:3]).log_prob(x), model(context[:3]).log_prob(x))


@pytest.mark.parametrize("family", [px.FlowMatching, px.Diffusion])
def test_continuous_families_take_an_embedding(family):
    model = px.Embedded(family(2, 4, hidden=(8,), solver="rk4", steps=4), "conv1d", (1, 16))
    context = torch.randn(200, 16)
    before = [p.clone() for p in model.embedding.parameters()]
    px.fit(model, torch.randn(200, 2), context=context, steps=3, progress=False, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.embedding.parameters(), strict=True))
    assert model(context[:4]).log_prob(torch.randn(4, 2)).shape == (4,)
    # Draws by the family's own sampler, given the raw context.
    settings = {"sampler": "heun", "steps": 3} if family is px.Diffusion else {}
    assert model.sample((5,), context[:4], **settings).shape == (5, 4, 2)


def _iid(x=None, n=8):
    # A mean of 8 i.i.d. 2-D observations: the observation site has shape (8, 2).
    mu = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    return pyro.sample(
        "x", dist.Normal(mu.unsqueeze(-2).expand(*mu.shape[:-1], n, 2), 0.5).to_event(2), obs=x
    )


def test_posterior_estimator_with_a_set_embedding():
    npe = PosteriorEstimator(_iid, "flow", embedding="deepset", hidden=(16,), transforms=2)
    npe.train(600, steps=20, progress=False, seed=0)
    assert npe.x_shape == (8, 2) and isinstance(npe.family, px.Embedded)
    # The standardization is shared over the set's elements, so the posterior is the same
    # for any order of the observations.
    assert torch.allclose(npe.x_loc.view(8, 2), npe.x_loc.view(8, 2)[:1].expand(8, 2))
    x_obs = torch.randn(8, 2)
    theta = torch.randn(5, 2)
    a = npe.posterior(x_obs).log_prob(theta)
    b = npe.posterior(x_obs.flip(0)).log_prob(theta)
    assert a.shape == (5,) and torch.allclose(a, b, atol=1e-5)
    # Observations given flat or in the site's shape, one or a batch.
    assert torch.allclose(npe.posterior(x_obs.flatten()).log_prob(theta), a)
    assert npe.posterior(torch.randn(3, 8, 2)).batch_shape == (3,)


def test_posterior_estimator_refuses_an_unknown_embedding():
    with pytest.raises(ValueError, match="unknown embedding"):
        PosteriorEstimator(_iid, "flow", embedding="transformer")
    with pytest.raises(ValueError, match="built model"):
        PosteriorEstimator(_iid, px.NSF(2, 16), embedding="mlp")


def test_estimators_save_and_load_with_their_embedding_and_support(tmp_path):
    npe = PosteriorEstimator(_iid, "flow", embedding="mlp", hidden=(8,), transforms=1)
    npe.train(300, steps=5, progress=False, seed=0)
    npe.save(tmp_path / "npe.pt")
    again = PosteriorEstimator.load(tmp_path / "npe.pt", _iid)
    x_obs, theta = torch.randn(8, 2), torch.randn(4, 2)
    assert torch.equal(again.posterior(x_obs).log_prob(theta), npe.posterior(x_obs).log_prob(theta))
    assert again.x_shape == (8, 2) and isinstance(again.family, px.Embedded)
    # A bounded prior: the truncation to its box comes back too.
    moons = PosteriorEstimator(px.infer.simulators.two_moons, "flow", hidden=(8,), transforms=1)
    moons.train(300, steps=5, progress=False, seed=0)
    moons.save(tmp_path / "moons.pt")
    loaded = PosteriorEstimator.load(tmp_path / "moons.pt")
    assert torch.equal(loaded.prior_support.upper, moons.prior_support.upper)
    assert loaded.posterior(torch.zeros(2)).sample((500,)).abs().max() <= 1
    px.save(px.NSF(2, 16), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="holds a model"):
        PosteriorEstimator.load(tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match="train"):
        PosteriorEstimator(_iid).save(tmp_path / "untrained.pt")
