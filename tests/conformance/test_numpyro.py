"""Every exportable registry entry against its NumPyro twin, in float64 (and float32)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import pyro_xform as px  # noqa: E402
from pyro_xform.numpyro import export_bijector, to_numpyro  # noqa: E402

from .registry import REGISTRY, D  # noqa: E402
from .test_conformance import build, context_for, data_for, features  # noqa: E402

EXPORTABLE = [e for e in REGISTRY if e.invertible and e.exact and not e.discrete and e.numpyro]
ids = [e.name for e in EXPORTABLE]


def j(t: torch.Tensor | None):
    return None if t is None else jnp.asarray(t.detach().numpy())


def close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=tol, atol=tol)


def some_data(entry, module, n):
    """Data in the entry's support, off the standard normal where it is unbounded."""
    if entry.data is not None:
        return data_for(entry, module, n)
    return torch.randn(n, *module.event_shape, dtype=torch.float64) * 2 + 1


def prepared(entry):
    module = build(entry)
    ctx = context_for(entry)
    if entry.kind == "family":  # data statistics and data-dependent layers set from data
        module.initialize(some_data(entry, module, 64), context_for(entry, (64,)))
    return module, ctx


@pytest.mark.parametrize("entry", EXPORTABLE, ids=ids)
def test_twin_matches_torch_in_float64(entry):
    module, ctx = prepared(entry)
    n = features(entry, module)
    z = torch.randn(4, n, dtype=torch.float64)
    if entry.kind == "transform":
        twin = export_bijector(module, j(ctx))
        with torch.no_grad():
            x, ladj = module.forward_and_ladj(z, ctx)
            back, back_ladj = module.inverse_and_ladj(x, ctx)
        jx, jladj = twin.compiled("forward")(j(z))
        close(jx, x, 1e-5)
        close(jladj, ladj, 1e-5)
        jz, jback = twin.compiled("inverse")(j(x))
        close(jz, back, 1e-5)
        close(jback, back_ladj, 1e-5)
        assert twin.domain is constraints.real_vector and twin.codomain.event_dim == 1
        # The same support: the checks agree inside and far outside.
        probes = torch.cat([x, x + 10.0])
        assert np.array_equal(
            np.asarray(twin.codomain(j(probes))), module.condition(ctx).codomain.check(probes)
        )
        return
    dist = module(ctx)
    twin = to_numpyro(module, ctx)
    assert twin.batch_shape == tuple(dist.batch_shape) and twin.event_shape == tuple(dist.event_shape)
    events = len(module.event_shape)
    assert twin.support.event_dim == events and twin.log_prob_kind == "exact"
    with torch.no_grad():
        x = module.unflatten(dist.bijector.forward_and_ladj(z, ctx)[0])  # where the density is not flat
        logp = dist.log_prob(x)
        data = some_data(entry, module, 4)
        logp_data = dist.log_prob(data)
        probes = torch.cat([x, x + 10.0])
        assert np.array_equal(np.asarray(twin.support(j(probes))), dist.support.check(probes))
    close(twin.log_prob(j(x)), logp, 1e-5)
    close(twin.log_prob(j(data)), logp_data, 1e-5)
    # The same base draws give the same samples: equal in distribution.
    close(twin.bijector.compiled("forward")(j(z))[0], module.flatten(x), 1e-5)
    close(twin.base_dist.base_dist.scale, dist.base_dist.stddev, 1e-12)
    # One pass: drawing and scoring agree with scoring the draw.
    shape = () if twin.batch_shape else (4,)  # (4, D) draws: shapes already compiled
    draw, lp = twin.sample_and_log_prob(jax.random.key(1), shape)
    np.testing.assert_allclose(lp, twin.log_prob(draw), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["NSF-cond", "MAF-cond-lu-actnorm", "FlowMatching-vp-cond"])
def test_twin_matches_torch_in_float32(name):
    entry = next(e for e in EXPORTABLE if e.name == name)
    module, ctx = prepared(entry)
    module, ctx = module.float(), ctx.float()
    x = torch.randn(4, D, dtype=torch.float32) * 2 + 1
    twin = to_numpyro(module, ctx)
    assert twin.log_prob(j(x)).dtype == jnp.float32
    close(twin.log_prob(j(x)), module(ctx).log_prob(x).detach(), 1e-4)


def test_raw_and_typed_keys_draw_the_same_samples():
    twin = to_numpyro(build_nsf())
    raw = twin.sample(jax.random.PRNGKey(3), (5,))
    typed = twin.sample(jax.random.key(3), (5,))
    assert raw.shape == (5, 2)
    np.testing.assert_array_equal(raw, typed)


def build_nsf():
    flow = px.NSF(2, transforms=2, hidden=(8,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_solver_settings_and_bad_input():
    fm = px.FlowMatching(2, hidden=(8,)).double()
    twin = to_numpyro(fm, solver="rk4", steps=4)
    assert twin.bijector.parts[0].solver == "rk4" and twin.bijector.parts[0].steps == 4
    with pytest.raises(ValueError, match="exact"):
        to_numpyro(px.VAE(2, latent=1, hidden=(4,)))
    with pytest.raises(ValueError, match="context"):
        to_numpyro(px.MAF(2, 3, hidden=(4,)))  # a conditional model needs its context
    with pytest.raises(ValueError, match="not exact"):
        to_numpyro(fm, trace="hutchinson")


def test_pyro_xform_does_not_import_jax_and_a_missing_extra_is_named():
    code = (
        "import sys, pyro_xform\n"
        "print(sorted(m for m in ('jax', 'numpyro', 'arviz') if m in sys.modules))\n"
        "sys.modules['numpyro'] = None\n"
        "import pyro_xform.numpyro\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
    assert out.returncode != 0 and 'pip install "pyro-xform[jax]"' in out.stderr


def test_numpyro_nuts_agrees_with_pyro_nuts_and_the_exact_posterior():
    """A flow prior with a Gaussian likelihood, sampled by NumPyro NUTS on the exported
    prior and by Pyro NUTS on the torch one; both against quadrature on a grid."""
    import numpyro
    import numpyro.distributions as ndist
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import MCMC, NUTS

    torch.manual_seed(0)
    flow = px.MAF(2, transforms=2, hidden=(8,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.4 * torch.randn_like(p))
    flow.requires_grad_(False)
    y = torch.tensor([0.4, -0.2], dtype=torch.float64)
    noise = 0.6

    # The exact posterior moments, by quadrature on a fine grid.
    grid = torch.linspace(-5, 5, 401, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        logw = flow().log_prob(points) + torch.distributions.Normal(points, noise).log_prob(y).sum(-1)
    w = torch.softmax(logw, 0)[:, None]
    mean = (w * points).sum(0)
    sd = (w * (points - mean) ** 2).sum(0).sqrt()

    prior = to_numpyro(flow)

    def numpyro_model():
        x = numpyro.sample("x", prior)
        numpyro.sample("y", ndist.Normal(x, noise).to_event(1), obs=j(y))

    # The draws are cheap: compiling NUTS costs about 5 s on 2 cores with 20 draws as with 2,400,
    # so the chain stays long enough for the tolerances below to tell this posterior from the
    # likelihood alone (means 0.4 sd away) with room for sampling error.
    mcmc = numpyro.infer.MCMC(
        numpyro.infer.NUTS(numpyro_model), num_warmup=400, num_samples=2000, progress_bar=False
    )
    mcmc.run(jax.random.key(0))
    jax_draws = np.asarray(mcmc.get_samples()["x"])

    def pyro_model():
        x = pyro.sample("x", flow())
        pyro.sample("y", pdist.Normal(x, noise).to_event(1), obs=y)

    pyro.set_rng_seed(0)
    pyro_mcmc = MCMC(NUTS(pyro_model), warmup_steps=100, num_samples=250, disable_progbar=True)
    pyro_mcmc.run()
    pyro_draws = pyro_mcmc.get_samples()["x"].numpy()

    for draws, tol in ((jax_draws, 0.08), (pyro_draws, 0.15)):
        np.testing.assert_allclose(draws.mean(0), mean.numpy(), atol=tol * float(sd.max()) * 3)
        np.testing.assert_allclose(draws.std(0), sd.numpy(), rtol=0.2)
    np.testing.assert_allclose(jax_draws.mean(0), pyro_draws.mean(0), atol=0.5 * float(sd.max()))
