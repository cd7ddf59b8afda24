"""Every registry entry on the ``meta`` device: a tensor made on the CPU inside a call (a
constant, a grid, an index) meets the model's meta tensors there and raises, as it would on
a GPU. Meta tensors have no values, so nothing that reads one on the host can run; an ODE
solve is such a thing (torchdiffeq compares times on the host), so continuous-time entries
are checked up to their fields and training losses."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_xform.families.continuous import ContinuousTimeXform
from pyro_xform.objectives import ELBO, get_objective
from pyro_xform.transforms.ode import ODETransform

from .registry import REGISTRY, C, D

META = torch.device("meta")
ids = [e.name for e in REGISTRY]


def _meta(entry):
    module = entry.factory()
    return module.to(META)


def _context(entry, batch):
    return torch.randn(*batch, C, device=META) if entry.conditional else None


def _data(entry, model, n):
    shape = model.event_shape
    x = entry.data(n, shape).float() if entry.data is not None else torch.randn(n, *shape)
    return x.to(META)


@pytest.mark.parametrize("entry", REGISTRY, ids=ids)
def test_entry_runs_on_the_meta_device(entry):
    module = _meta(entry)
    # Argument validation reads values (torch's own constraint checks); it is not the code under test.
    with pyro.validation_enabled(False):
        if entry.kind == "transform":
            _check_transform(entry, module)
        else:
            _check_family(entry, module)


def _check_transform(entry, t):
    if isinstance(t, ODETransform):
        x = torch.randn(5, D, device=META)
        v = t.field(x, torch.zeros((), device=META), _context(entry, (5,)))
        assert v.device == META and v.shape == x.shape
        return
    z = torch.randn(5, D, device=META)
    x, ladj = t.forward_and_ladj(z, _context(entry, (5,)))
    assert x.device == META and ladj.device == META and ladj.shape == (5,)
    z2, _ = t.inverse_and_ladj(x, _context(entry, (5,)))
    assert z2.device == META


def _check_family(entry, model):
    ctx = _context(entry, (4,))
    ode = any(isinstance(m, ContinuousTimeXform) for m in model.modules())
    if ode and not isinstance(model, ContinuousTimeXform):  # e.g. a VAE with a flow-matching prior
        z = model.posterior(_data(entry, model, 4), ctx).rsample()
        assert z.device == META
        return
    if not ode:
        dist = model(ctx)
        x = dist.sample((3,))
        assert x.device == META and x.shape == (3, *((4,) if entry.conditional else ()), *model.event_shape)
        if dist.log_prob_kind is not None:
            assert dist.log_prob(x).device == META
    objective = get_objective(None, model)
    batch = _data(entry, model, 4)
    if isinstance(objective, ELBO):
        # Pyro's ELBO reads its loss on the host (pyro.infer.util.torch_item): the VAE's own
        # bound is the same computation without that read.
        losses = [(0, model.elbo(batch, ctx).sum())]
    elif getattr(model, "coupling", None) == "ot":
        return  # the optimal-transport pairing is solved by SciPy on the host, by design
    else:
        losses = list(objective.losses(model, batch, ctx, step=1))
    assert losses and all(loss.device == META and loss.dim() == 0 for _, loss in losses)
