"""Options of the discrete flows that the conformance suite does not single out: residual
conditioners, data standardization and compilation."""

import copy

import pytest
import torch

import pyro_xform as px
from pyro_xform.nn import MLP, Residual
from pyro_xform.transforms import ConditionalStandardize, Standardize


def test_residual_mlp_starts_linear_and_needs_one_width():
    torch.manual_seed(0)
    net = MLP(3, 2, hidden=(16, 16), context=2, residual=True, zero_last=False)
    assert sum(isinstance(m, Residual) for m in net.rest) == 2
    x, c = torch.randn(50, 3), torch.randn(50, 2)
    # Near-identity blocks: f(a x + b y) = a f(x) + b f(y) up to the blocks' small start.
    y = torch.randn(50, 3)
    bias = net(torch.zeros(50, 3), c)
    lhs = net(0.3 * x + 0.7 * y, c) - bias
    rhs = 0.3 * (net(x, c) - bias) + 0.7 * (net(y, c) - bias)
    assert (lhs - rhs).abs().max() < 1e-2
    plain = MLP(3, 2, hidden=(16, 16), context=2, zero_last=False)
    bias = plain(torch.zeros(50, 3), c)
    gap = plain(0.3 * x + 0.7 * y, c) - bias - 0.3 * (plain(x, c) - bias) - 0.7 * (plain(y, c) - bias)
    assert gap.abs().max() > 1e-2
    with pytest.raises(ValueError, match="one width"):
        MLP(3, 2, hidden=(16, 8), residual=True)


def test_residual_is_for_coupling_nsf_only():
    with pytest.raises(ValueError, match="coupling"):
        px.NSF(3, residual=True, variant="autoregressive")


@pytest.mark.parametrize("make", [px.NSF, px.RealNVP, px.MAF])
def test_standardize_sets_from_the_data_and_keeps_the_density_of_x(make):
    torch.manual_seed(0)
    data = torch.randn(256, 3) * torch.tensor([10.0, 0.1, 1.0]) + torch.tensor([5.0, -2.0, 0.0])
    flow = make(3, transforms=2, hidden=(8, 8), standardize=True)
    layer = flow.transform[-1]
    assert isinstance(layer, Standardize) and not bool(layer.initialized)
    px.fit(flow, data, steps=1, batch_size=256, progress=False, seed=0)
    assert torch.allclose(layer.loc, data.mean(0)) and torch.allclose(layer.scale, data.std(0))
    # log p(x) = log p_blocks((x - mu) / sigma) - sum log sigma
    x = data[:5]
    loc, scale = layer.loc.clone(), layer.scale.clone()
    with torch.no_grad():
        actual = flow().log_prob(x)
        layer.loc.zero_()
        layer.scale.fill_(1.0)
        expected = flow().log_prob((x - loc) / scale) - scale.log().sum()
    assert torch.allclose(actual, expected, atol=1e-5)


def test_regression_standardize_removes_the_linear_fit_of_x_given_the_context():
    torch.manual_seed(0)
    context = torch.randn(512, 2)
    data = context @ torch.tensor([[3.0, 0.0], [1.0, -2.0]]) + 0.1 * torch.randn(512, 2) + 4.0
    flow = px.NSF(2, 2, transforms=2, hidden=(8,), residual=True, standardize="regression")
    layer = flow.transform[-1]
    assert isinstance(layer, ConditionalStandardize)
    px.fit(flow, data, context=context, steps=1, batch_size=512, progress=False, seed=0)
    # What reaches the blocks is the residual of the regression: white, whatever c is.
    z, _ = layer.inverse_and_ladj(data, context)
    assert z.mean(0).abs().max() < 0.05 and (z.std(0) - 1).abs().max() < 0.05
    with pytest.raises(ValueError, match="no"):
        px.NSF(2, standardize="regression")
    with pytest.raises(ValueError, match="standardize must be"):
        px.MAF(2, 2, standardize="affine")


def test_compiled_flow_scores_and_trains_like_the_eager_one():
    torch.manual_seed(0)
    eager = px.NSF(3, context=2, transforms=2, hidden=(8,), actnorm=True, linear="lu")
    compiled = px.NSF(3, context=2, transforms=2, hidden=(8,), actnorm=True, linear="lu")
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(backend="aot_eager")  # the same graph machinery, no code generation
    assert compiled.transform.compiled and not eager.transform.compiled
    # one batch size throughout: every new shape would compile again
    x, c = torch.randn(32, 3), torch.randn(32, 2)
    for model in (eager, compiled):
        model(c).log_prob(x).sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    data, context = torch.randn(64, 3), torch.randn(64, 2)
    runs = [
        px.fit(m, data, context=context, steps=4, batch_size=32, validation=None, seed=0, progress=False)
        for m in (eager, compiled)
    ]
    assert torch.allclose(torch.tensor(runs[0].losses), torch.tensor(runs[1].losses), rtol=1e-5)
    with torch.no_grad():
        assert torch.allclose(compiled(c).log_prob(x), eager(c).log_prob(x), atol=1e-5)
    # state dict, copies and pickles stay those of the eager module
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not copy.deepcopy(compiled).transform.compiled


def test_compile_is_refused_by_families_without_a_compiled_path():
    with pytest.raises(NotImplementedError, match="discrete flows"):
        px.FlowMatching(2, hidden=(8,)).compile()


@pytest.mark.parametrize("floors", [(1e-3, 1e-3, 1e-3), (0.05, 0.01, 0.02)])
def test_spline_hand_written_backward_passes_gradcheck(floors):
    """The data → base spline has a hand-written backward (the training path of every spline
    flow): float64 finite differences check it, inside the interval and on the tails, with
    equal and with unequal width/height floors."""
    from pyro_xform.transforms.elementwise import RQSpline, _RQDensity

    spline = RQSpline(bins=5, bound=2.0, min_width=floors[0], min_height=floors[1], min_derivative=floors[2])
    torch.manual_seed(1)
    m = 12
    x = torch.linspace(-2.6, 2.6, m, dtype=torch.float64).requires_grad_(True)
    pt = torch.randn(spline.params_per_dim, m, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, pt: _RQDensity.apply(x, pt, spline), (x, pt))


def test_affine_flows_default_sizes_differ_by_family_and_event_shape():
    def couplings(flow):
        return [b for b in flow.transform.bijectors if type(b).__name__ == "AffineCoupling"]

    assert len(couplings(px.RealNVP(2))) == 8 and len(couplings(px.RealNVP(2, transforms=3))) == 3

    def first_scale(flow):
        return len(flow.transform.bijectors[0].levels[0])  # the multi-scale flow, then the logit

    per_step = first_scale(px.RealNVP((1, 8, 8), channels=4, transforms=1))
    assert first_scale(px.RealNVP((1, 8, 8), channels=4)) == 6 * per_step  # 6 steps a scale
    made = {type(f).__name__: f.transform.bijectors[0].net.first.out_features for f in (px.MAF(2), px.IAF(2))}
    assert made == {"MAF": 128, "IAF": 64}
