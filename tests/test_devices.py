"""Models on another device than their data, and the random state of the model's device.

Without a GPU the ``meta`` device stands in for one where it can (a CPU tensor meeting a
meta tensor raises, as it would on a GPU); the tests marked ``cuda`` run where a GPU is
(``pytest --device cuda``) and are skipped elsewhere.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pyro_xform as px
from pyro_xform.distributed import World
from pyro_xform.fit import TrainState, _Averaged, _Batches
from pyro_xform.rng import fixed_seed, get_rng_states, set_rng_states

META = torch.device("meta")
cuda = pytest.mark.cuda


def test_minibatches_of_cpu_data_are_moved_to_the_models_device():
    data, context = torch.randn(10, 3), torch.randn(10, 2)
    state = TrainState(perm=torch.randperm(10))
    batches = _Batches(state, data, context, torch.Generator(), World.single(), 4, META)
    for _ in range(4):  # crosses an epoch: the new shuffle is moved too
        batch, ctx = batches.next()
        assert batch.device == META and ctx.device == META and batch.shape[1:] == (3,)
    rows, none = batches.take(torch.arange(3), data, None)
    assert rows.device == META and none is None


def test_a_resumed_parameter_average_follows_the_parameters():
    model = px.MAF(2, hidden=(4,)).to(META)
    saved = [torch.zeros(p.shape) for p in model.parameters()]  # as read from a file: on the CPU
    averaged = _Averaged(model, saved)
    assert all(a.device == META for a in averaged.average)
    averaged.update(0.9)  # mixing devices in one foreach call would raise


def test_fixed_seed_leaves_the_stream_outside_alone(device):
    torch.manual_seed(3)
    expected = [torch.randn(3, device=device), torch.randn(3, device=device)]
    torch.manual_seed(3)
    first = torch.randn(3, device=device)
    with fixed_seed(device):
        inside = torch.randn(3, device=device)
    with fixed_seed(device):
        again = torch.randn(3, device=device)
    assert torch.equal(first, expected[0]) and torch.equal(inside, again)
    assert torch.equal(torch.randn(3, device=device), expected[1])


def test_rng_states_round_trip(device):
    states = get_rng_states(device)
    a = torch.rand(4, device=device)
    set_rng_states(states, device)
    assert torch.equal(torch.rand(4, device=device), a)
    set_rng_states(states["cpu"], "cpu")  # a bare tensor: a file written before devices counted


@cuda
def test_cuda_validation_does_not_restart_the_models_noise_stream():
    """``torch.manual_seed`` inside a CPU-only fork would reseed every CUDA generator."""
    device = torch.device("cuda")
    torch.manual_seed(5)
    expected = [torch.randn(3, device=device) for _ in range(2)]
    torch.manual_seed(5)
    first = torch.randn(3, device=device)
    with fixed_seed(device):
        torch.randn(3, device=device)
    assert torch.equal(first, expected[0]) and torch.equal(torch.randn(3, device=device), expected[1])


@cuda
@pytest.mark.parametrize("family", ["NSF", "FlowMatching", "Diffusion"])
def test_cuda_fit_from_cpu_data_resumes_bit_exactly(family, tmp_path):
    device = torch.device("cuda")
    data = px.datasets.toy("moons", n=512)  # stays on the CPU
    kwargs = dict(steps=20, batch_size=64, progress=False, seed=0, validation=0.1, eval_every=5)

    def model():
        torch.manual_seed(0)
        return px.FAMILIES[family](2).to(device)

    whole = px.fit(model(), data, ema=0.9, **kwargs)
    path = tmp_path / "ckpt.pt"
    first = model()
    px.fit(first, data, ema=0.9, checkpoint=path, **{**kwargs, "steps": 10})
    resumed = px.fit(model(), data, ema=0.9, checkpoint=path, **kwargs)
    assert resumed.losses == whole.losses
    for a, b in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert a.device.type == "cuda" and torch.equal(a, b)


@cuda
def test_cuda_guide_follows_the_models_latents():
    def model():
        pyro.sample("a", dist.Normal(torch.zeros(2, device="cuda"), 1.0).to_event(1))

    guide = px.infer.AutoXformGuide(model, "NSF")  # the family is built on the CPU
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert math.isfinite(svi.step())
    assert next(guide.xform.parameters()).is_cuda
    assert guide.quantiles([0.25, 0.75])["a"].is_cuda
