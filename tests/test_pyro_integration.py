"""XformDistribution as a model-side Pyro site: SVI autoguides, NUTS, Predictive, plates."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

import pyro_xform as px


@pytest.fixture(scope="module")
def prior():
    """A flow fitted to a shifted Gaussian N((2, -1), 0.5^2 I)."""
    torch.manual_seed(0)
    data = torch.randn(2000, 2) * 0.5 + torch.tensor([2.0, -1.0])
    flow = px.NSF(2, transforms=2, hidden=(32, 32))
    px.fit(flow, data, steps=300, batch_size=256, lr=5e-3, progress=False, seed=0)
    return flow.eval()


def model_with(prior, y=None):
    z = pyro.sample("z", prior())
    return pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=y)


@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDiagonalNormal])
def test_svi_with_autoguides(prior, guide_cls):
    y = torch.tensor([2.0, -1.0])
    guide = guide_cls(lambda y: model_with(prior, y))
    svi = SVI(lambda y: model_with(prior, y), guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(y) for _ in range(150)]
    assert all(torch.isfinite(torch.tensor(losses)))
    # prior N(m, 0.25) and likelihood N(z, 1) at y = m: the posterior mean is m
    mean = guide.median(y)["z"]
    assert torch.allclose(mean, y, atol=0.35)


def test_nuts(prior):
    y = torch.tensor([2.0, -1.0])
    kernel = NUTS(lambda y: model_with(prior, y), max_tree_depth=4)
    mcmc = MCMC(kernel, num_samples=60, warmup_steps=40, disable_progbar=True)
    mcmc.run(y)
    z = mcmc.get_samples()["z"]
    assert z.shape == (60, 2) and torch.isfinite(z).all()
    assert torch.allclose(z.mean(0), y, atol=0.4)


def test_predictive_and_plates(prior):
    pred = Predictive(lambda: model_with(prior), num_samples=500)()
    assert pred["z"].shape == (500, 2) and pred["y"].shape == (500, 2)
    assert torch.allclose(pred["z"].mean(0), torch.tensor([2.0, -1.0]), atol=0.15)

    def plated():
        with pyro.plate("n", 7):
            return pyro.sample("z", prior())

    assert Predictive(plated, num_samples=3)()["z"].shape == (3, 7, 2)


def test_context_broadcasts_under_plates():
    flow = px.MAF(2, context=3, hidden=(8,))
    ctx = torch.randn(5, 3)

    def model():
        with pyro.plate("outer", 4, dim=-2), pyro.plate("inner", 5, dim=-1):
            return pyro.sample("x", flow(ctx))

    x = Predictive(model, num_samples=2)()["x"]
    assert x.shape == (2, 4, 5, 2)
    d = flow(ctx)
    assert d.log_prob(torch.randn(6, 1, 2)).shape == (6, 5)  # value batch broadcasts too
    assert d.expand((4, 5)).batch_shape == (4, 5)


def _count_inversions(flow) -> dict[str, int]:
    """Counts the calls of the flow's inverse from now on, in the returned dict."""
    calls = {"inverse": 0}
    original = flow.transform.inverse_and_ladj

    def counting(*args, **kwargs):
        calls["inverse"] += 1
        return original(*args, **kwargs)

    flow.transform.inverse_and_ladj = counting
    return calls


def test_log_prob_of_a_fresh_sample_does_not_invert_again():
    flow = px.NSF(2, hidden=(8,))
    calls = _count_inversions(flow)
    d = flow()
    x = d.rsample((10,))
    d.log_prob(x)
    assert calls["inverse"] == 0
    x = d.sample((10,))
    with torch.no_grad():
        d.log_prob(x)
    assert calls["inverse"] == 0
    d.log_prob(x.clone())
    assert calls["inverse"] == 1
    # a draw without a graph is not reused when a differentiable log_prob is asked for
    d.log_prob(x)
    assert calls["inverse"] == 2


def test_call_time_errors():
    with pytest.raises(ValueError, match="conditional"):
        px.MAF(2, context=3)()
    with pytest.raises(ValueError, match="unconditional"):
        px.MAF(2)(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        px.MAF(2, context=3)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="floating"):
        px.MAF(2, context=3)(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        px.NSF(0)
    with pytest.raises(ValueError, match="variant"):
        px.NSF(2, variant="nope")
    with pytest.raises(ValueError, match="linear"):
        px.MAF(2, linear="dense")


def test_support_and_kind():
    d = px.RealNVP(3)()
    assert d.support.event_dim == 1 and d.has_rsample
    assert d.log_prob_kind == "exact"
    assert isinstance(d, pyro.distributions.TorchDistribution)
    with pytest.raises(ValueError):
        px.XformDistribution(d.base_dist, px.RealNVP(3).transform, log_prob_kind="maybe")


def test_no_density_kind_raises_with_guidance():
    flow = px.MAF(2)
    d = px.XformDistribution(flow.base(), flow.transform, log_prob_kind=None)
    with pytest.raises(NotImplementedError, match="sample-based"):
        d.log_prob(torch.zeros(2))
    assert d.sample((3,)).shape == (3, 2)


def test_pyro_own_log_prob_path_reuses_the_one_draw_cache():
    flow = px.MAF(2, hidden=(4,))
    d = flow()
    calls = _count_inversions(flow)
    x = d.rsample((6,))
    # Pyro's TransformedDistribution.log_prob: inv and ladj from the one cache.
    pyro_lp = dist.TransformedDistribution.log_prob(d, x)
    assert calls["inverse"] == 0 and torch.allclose(pyro_lp, d.log_prob(x))
    transform = d.transforms[0]
    assert transform.with_cache() is transform  # Pyro's reparameterizers ask for a cache


def test_a_generated_distribution_expands_with_its_noise_and_holds_no_bijector():
    vae = px.VAE(3, latent=2, hidden=(4,))
    d = vae()
    assert not hasattr(d, "bijector") and d.latent_map is not None
    wide = d.expand((5,))
    assert type(wide) is type(d) and wide.batch_shape == (5,)
    assert wide.observe is d.observe and wide.log_prob_kind == d.log_prob_kind
    assert wide.sample().shape == (5, 3)
