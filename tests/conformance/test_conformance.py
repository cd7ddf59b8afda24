"""Generic tests run over every entry of the registry, in float64."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_xform as px
from pyro_xform.checkpoint import config_of

from .registry import REGISTRY, C, D

TRANSFORMS = [e for e in REGISTRY if e.kind == "transform"]
FAMILIES = [e for e in REGISTRY if e.kind == "family"]
ids = lambda entries: [e.name for e in entries]  # noqa: E731


def build(entry):
    """The entry in float64 with every parameter moved off its (often zero) initial value."""
    module = entry.factory().double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def features(entry, module):
    return getattr(module, "features", D)


def context_for(entry, batch=(4,)):
    return torch.randn(*batch, C, dtype=torch.float64) if entry.conditional else None


# ----------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("entry", TRANSFORMS, ids=ids(TRANSFORMS))
def test_transform_shapes_round_trip(entry):
    t = build(entry)
    ctx = context_for(entry)
    z = torch.randn(5, 4, D, dtype=torch.float64)
    x, ladj = t.forward_and_ladj(z, ctx)
    assert x.shape == (5, 4, D) and ladj.shape == (5, 4)
    z2, ladj2 = t.inverse_and_ladj(x, ctx)
    assert (z2 - z).abs().max() < 1e-5
    assert (ladj2 - ladj).abs().max() < 1e-5 * (1 + ladj.abs().max())


@pytest.mark.parametrize("entry", TRANSFORMS, ids=ids(TRANSFORMS))
def test_transform_logdet_matches_autograd_jacobian(entry):
    t = build(entry)
    ctx = context_for(entry, batch=())
    for _ in range(3):
        z = torch.randn(D, dtype=torch.float64) * 1.5
        jac = torch.autograd.functional.jacobian(lambda v: t.forward_and_ladj(v, ctx)[0], z)
        expected = torch.linalg.slogdet(jac).logabsdet
        assert abs(float(t.forward_and_ladj(z, ctx)[1].detach() - expected)) < 1e-6


@pytest.mark.parametrize("entry", TRANSFORMS, ids=ids(TRANSFORMS))
def test_transform_as_torch_transform(entry):
    """condition(context) gives a torch Transform usable in Pyro's TransformedDistribution."""
    t = build(entry)
    ctx = context_for(entry, batch=())
    base = pyro.distributions.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1)
    d = pyro.distributions.TransformedDistribution(base, [t.condition(ctx)])
    x = d.sample((6,))
    ours = px.XformDistribution(base, t, ctx).log_prob(x.clone())
    assert torch.allclose(d.log_prob(x.clone()), ours, atol=1e-8)


@pytest.mark.parametrize(
    "entry", [e for e in TRANSFORMS if e.conditional], ids=ids([e for e in TRANSFORMS if e.conditional])
)
def test_transform_uses_context(entry):
    t = build(entry)
    z = torch.randn(4, D, dtype=torch.float64)
    a = t.forward_and_ladj(z, context_for(entry))[0]
    b = t.forward_and_ladj(z, context_for(entry))[0]
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------- families
INVERTIBLE = [e for e in FAMILIES if e.invertible]
WITH_DENSITY = [e for e in FAMILIES if e.density is not None]
CONTINUOUS_DENSITY = [e for e in WITH_DENSITY if not e.discrete]


def data_for(entry, model, n):
    if entry.data is not None:
        return entry.data(n, model.event_shape)
    return torch.randn(n, *model.event_shape, dtype=torch.float64)


@pytest.mark.parametrize("entry", FAMILIES, ids=ids(FAMILIES))
def test_family_shapes(entry):
    m = build(entry)
    event = tuple(m.event_shape)
    assert m.features == m.event_shape.numel()
    for batch in [(4,), (2, 3)] if entry.conditional else [()]:
        dist = m(context_for(entry, batch))
        assert dist.batch_shape == batch and dist.event_shape == event
        assert dist.log_prob_kind == m.log_prob_kind == entry.density
        x = dist.sample((5,))
        assert x.shape == (5, *batch, *event)
        assert dist.support.check(x).all()
        assert dist.expand((7, *batch)).sample().shape == (7, *batch, *event)
        if dist.log_prob_kind is None:
            with pytest.raises(NotImplementedError, match="log_prob_kind is None"):
                dist.log_prob(x)
            continue
        assert dist.log_prob(x).shape == (5, *batch)
        x1, lp1 = dist.rsample_and_log_prob()
        assert x1.shape == (*batch, *event) and lp1.shape == batch


@pytest.mark.parametrize("entry", INVERTIBLE, ids=ids(INVERTIBLE))
def test_family_fused_equals_separate_and_round_trip(entry):
    m = build(entry)
    dist = m(context_for(entry))
    x, lp = dist.rsample_and_log_prob((6,))
    assert torch.equal(dist.log_prob(x), lp)  # a sample just drawn is not inverted again
    separate = dist.log_prob(x.clone())  # a new tensor is inverted
    assert (separate - lp).abs().max() < 1e-5 * (1 + lp.abs().max())
    z, _ = m.transform.inverse_and_ladj(m.flatten(x), dist.context)  # the transform works flat
    x2, _ = m.transform.forward_and_ladj(z, dist.context)
    assert (m.unflatten(x2) - x).abs().max() < 1e-5 * (1 + x.abs().max())


@pytest.mark.parametrize("entry", INVERTIBLE, ids=ids(INVERTIBLE))
def test_family_logdet_matches_autograd_jacobian(entry):
    m = build(entry)
    ctx = context_for(entry, batch=())
    z = torch.randn(m.features, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: m.transform.forward_and_ladj(v, ctx)[0], z)
    got = m.transform.forward_and_ladj(z, ctx)[1]
    assert abs(float(got.detach() - torch.linalg.slogdet(jac).logabsdet)) < 1e-6


@pytest.mark.parametrize("entry", INVERTIBLE, ids=ids(INVERTIBLE))
def test_family_gradients_reach_every_parameter(entry):
    m = build(entry)
    ctx = context_for(entry, batch=(16,))
    data = data_for(entry, m, 16)
    x, lp = m(ctx).rsample_and_log_prob()
    (-m(ctx).log_prob(data).mean() + (x**2).sum() - lp.mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("entry", FAMILIES, ids=ids(FAMILIES))
def test_family_fit_moves_every_parameter(entry):
    """Two steps of ``fit`` with the family's default objective train every parameter."""
    m = build(entry)
    data = data_for(entry, m, 32)
    ctx = context_for(entry, batch=(32,))
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    result = px.fit(m, data, context=ctx, steps=2, batch_size=16, progress=False, seed=0)
    assert result.objective == m.default_objective and len(result.losses) == 2
    for name, p in m.named_parameters():
        assert torch.isfinite(p).all(), name
        assert not torch.equal(p, before[name]), f"{name} did not move"


@pytest.mark.parametrize("entry", FAMILIES, ids=ids(FAMILIES))
def test_family_save_load(entry, tmp_path):
    m = build(entry)
    path = tmp_path / "model.pt"
    px.save(m, path)
    again = px.load(path)
    assert type(again) is type(m)
    assert config_of(again) == config_of(m)
    ctx = context_for(entry)
    for model in (m, again):  # the same draws from the same seed
        torch.manual_seed(3)
        model.draws = model(ctx).sample((4,))
    assert torch.equal(again.draws, m.draws)
    if m.log_prob_kind is not None:
        x = data_for(entry, m, 4)
        values = []
        for model in (m, again):
            torch.manual_seed(4)
            values.append(model(ctx).log_prob(x))
        assert torch.equal(*values)
    assert torch.load(path, weights_only=True)["format"] == "pyro_xform/1"


@pytest.mark.parametrize("entry", WITH_DENSITY, ids=ids(WITH_DENSITY))
def test_family_one_svi_step(entry):
    m = build(entry)
    ctx = context_for(entry, batch=(8,))
    data = data_for(entry, m, 8)

    def model(data, ctx):
        pyro.module("xform", m)
        with pyro.plate("data", 8):
            pyro.sample("x", m(ctx), obs=data)

    svi = SVI(model, lambda data, ctx: None, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    loss = svi.step(data, ctx)
    assert torch.isfinite(torch.tensor(loss))
    if m(ctx).support.is_discrete:
        return

    def prior_model(ctx):  # the family as a latent site under an autoguide, in a plate
        with pyro.plate("batch", 8):
            z = pyro.sample("z", m(ctx))
            noise = pyro.distributions.Normal(z, 1.0).to_event(len(m.event_shape))
            pyro.sample("y", noise, obs=torch.zeros_like(z))

    guide = AutoNormal(prior_model)
    svi = SVI(prior_model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(ctx)))


@pytest.mark.parametrize("entry", FAMILIES, ids=ids(FAMILIES))
def test_family_validate_args_respected(entry):
    m = build(entry)
    bad = torch.full(m.event_shape, float("nan"), dtype=torch.float64)
    ctx = context_for(entry, batch=())
    if m.log_prob_kind is None:
        with pytest.raises(NotImplementedError, match=r"(?i)sample"):
            m(ctx).log_prob(bad)
        return
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError):
            m(ctx).log_prob(bad)
        with pytest.raises(ValueError):
            wrong = (*m.event_shape[:-1], m.event_shape[-1] + 1)
            m(ctx).log_prob(torch.zeros(wrong, dtype=torch.float64))
    with pyro.validation_enabled(False):
        assert torch.isnan(m(ctx).log_prob(bad)).all()


@pytest.mark.parametrize("entry", FAMILIES, ids=ids(FAMILIES))
def test_family_fit_refuses_bad_data_before_any_change(entry):
    m = build(entry)
    data = data_for(entry, m, 8)
    data[3, -1] = float("nan")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="NaN"):
        px.fit(m, data, context=context_for(entry, batch=(8,)), steps=1, progress=False)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
