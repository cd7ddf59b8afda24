import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pyro_xform as px


def data2d(n=256, dtype=torch.float64):
    return px.datasets.toy("moons", n, seed=3, dtype=dtype)


def test_mle_agrees_step_for_step_with_a_hand_written_pyro_svi_loop():
    data = data2d(128)
    torch.manual_seed(1)
    ours = px.MAF(2, transforms=2, hidden=(16,)).double()
    theirs = px.MAF(2, transforms=2, hidden=(16,)).double()
    theirs.load_state_dict(ours.state_dict())

    def model(x):
        pyro.module("flow", theirs)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", theirs(), obs=x)

    svi = SVI(model, lambda x: None, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    hand = [svi.step(data) / data.shape[0] for _ in range(5)]
    result = px.fit(ours, data, steps=5, batch_size=128, lr=1e-2, progress=False, seed=0)
    assert result.losses == pytest.approx(hand, rel=1e-10)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10), name


def test_fit_improves_and_is_reproducible_with_a_seed():
    data = data2d(512, torch.get_default_dtype())
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = px.NSF(2, transforms=2, hidden=(16, 16))
        results.append((px.fit(model, data, steps=30, batch_size=64, lr=5e-3, seed=7, progress=False), model))
    (r1, m1), (r2, m2) = results
    assert r1.losses == r2.losses
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters(), strict=True))
    assert sum(r1.losses[-5:]) < sum(r1.losses[:5])
    assert r1.steps == 30 and len(r1.losses) == 30


def test_validation_keeps_best_parameters_and_stops_early():
    data = data2d(300)
    model = px.MAF(2, transforms=2, hidden=(32, 32)).double()
    # A huge learning rate makes the validation loss worsen after a few evaluations.
    result = px.fit(
        model,
        data,
        steps=400,
        batch_size=32,
        lr=0.05,
        validation=0.3,
        eval_every=5,
        patience=3,
        progress=False,
        seed=0,
    )
    assert result.best_step is not None
    assert result.best_val == min(result.val_losses)
    # The model holds the best parameters: its validation loss equals the best one.
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    val = data[order[:90]]
    with torch.no_grad():
        assert float(-model().log_prob(val).mean()) == pytest.approx(result.best_val, rel=1e-9)
    if result.stopped_early:
        assert result.steps < 400


def test_checkpoint_resume_is_bit_exact(tmp_path):
    data = data2d(200)
    torch.manual_seed(0)
    straight = px.RealNVP(2, transforms=2, hidden=(16,)).double()
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    full = px.fit(straight, data, steps=12, batch_size=64, seed=3, progress=False)

    path = tmp_path / "run.pt"
    first = px.RealNVP(2, transforms=2, hidden=(16,)).double()
    first.load_state_dict(init)
    px.fit(first, data, steps=7, batch_size=64, seed=3, progress=False, checkpoint=path)
    second = px.RealNVP(2, transforms=2, hidden=(16,)).double()  # a fresh process would build anew
    resumed = px.fit(second, data, steps=12, batch_size=64, seed=3, progress=False, checkpoint=path)
    assert resumed.losses == full.losses
    for a, b in zip(second.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)
    # the checkpoint loads as a model with weights_only=True
    loaded = px.load(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), straight.parameters(), strict=True))


def test_checkpoint_for_another_model_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    px.fit(px.MAF(2, hidden=(8,)).double(), data2d(64), steps=2, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="another model"):
        px.fit(px.NSF(2, hidden=(8,)).double(), data2d(64), steps=4, progress=False, checkpoint=path)


def _bad_inputs():
    good = data2d(10)
    nan = good.clone()
    nan[4, 1] = float("nan")
    inf = good.clone()
    inf[6, 0] = float("inf")
    return [
        (nan, None, "row 4"),
        (inf, None, "row 6"),
        (good[:, :1], None, "shape"),
        (good.long(), None, "floating"),
        (good[:0], None, "empty"),
        (good.float(), None, "dtype"),
        (good, torch.zeros(10, 3, dtype=torch.float64), "unconditional"),
    ]


@pytest.mark.parametrize("data, context, message", _bad_inputs())
def test_bad_input_is_refused_before_any_parameter_changes(data, context, message):
    model = px.MAF(2, hidden=(8,)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        px.fit(model, data, context=context, steps=3, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_context_is_refused():
    model = px.MAF(2, context=3, hidden=(8,)).double()
    data = data2d(10)
    for ctx, message in [
        (None, "conditional"),
        (torch.zeros(10, 2, dtype=torch.float64), r"\(\.\.\., 3\)"),
        (torch.zeros(9, 3, dtype=torch.float64), "one row per data row"),
        (torch.full((10, 3), float("nan"), dtype=torch.float64), "row 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            px.fit(model, data, context=ctx, steps=2, progress=False)


def test_conditional_fit_uses_the_context():
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (400, 1)).double()
    data = torch.randn(400, 2, dtype=torch.float64) * 0.3 + 3 * (2 * labels - 1)
    model = px.NSF(2, context=1, transforms=2, hidden=(16,)).double()
    px.fit(model, data, context=labels, steps=150, batch_size=100, lr=1e-2, progress=False, seed=0)
    with torch.no_grad():
        lo = model(torch.zeros(1, dtype=torch.float64)).sample((200,)).mean(0)
        hi = model(torch.ones(1, dtype=torch.float64)).sample((200,)).mean(0)
    assert (lo < -1).all() and (hi > 1).all()


def test_nan_loss_mid_fit_keeps_last_good_parameters():
    model = px.MAF(2, hidden=(8,)).double()
    data = data2d(64)
    calls = {"n": 0}
    original = model.forward

    def poisoned(context=None):
        calls["n"] += 1
        dist = original(context)
        if calls["n"] == 4:  # the fourth step's loss becomes NaN
            with torch.no_grad():
                model.base_scale.fill_(float("nan"))
        return dist

    model.forward = poisoned
    snapshot = {}

    def remember():
        snapshot.update({k: v.clone() for k, v in model.named_parameters()})

    model.register_forward_pre_hook(lambda *a: remember())
    with pytest.raises(FloatingPointError, match="step 4"):
        px.fit(model, data, steps=10, batch_size=64, progress=False)
    for k, v in model.named_parameters():
        assert torch.isfinite(v).all()
        assert torch.equal(v, snapshot[k]), k


def test_bad_arguments():
    model = px.MAF(2, hidden=(8,)).double()
    with pytest.raises(ValueError, match="steps"):
        px.fit(model, data2d(8), steps=0, progress=False)
    with pytest.raises(ValueError, match="unknown objective"):
        px.fit(model, data2d(8), objective="nope", progress=False)
    with pytest.raises(ValueError, match="lr"):
        px.fit(model, data2d(8), lr=math.nan, progress=False)
    with pytest.raises(ValueError, match="validation"):
        px.fit(model, data2d(8), validation=1.5, progress=False)
    with pytest.raises(ValueError, match="schedule"):
        px.fit(model, data2d(8), schedule="linear", progress=False)


def test_cosine_schedule_decays_the_learning_rate_and_resumes_exactly(tmp_path):
    data = data2d(100)
    torch.manual_seed(0)
    a = px.MAF(2, hidden=(8,)).double()
    init = {k: v.clone() for k, v in a.state_dict().items()}
    full = px.fit(a, data, steps=10, batch_size=50, lr=1e-2, schedule="cosine", progress=False, seed=1)
    b = px.MAF(2, hidden=(8,)).double()
    b.load_state_dict(init)
    calls = {"n": 0}
    original = b.forward

    def crash_in_step_six(context=None):  # the run dies after its checkpoint at step 4
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(context)

    b.forward = crash_in_step_six
    with pytest.raises(KeyboardInterrupt):
        px.fit(
            b,
            data,
            steps=10,
            batch_size=50,
            lr=1e-2,
            schedule="cosine",
            progress=False,
            seed=1,
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=4,
        )
    c = px.MAF(2, hidden=(8,)).double()
    again = px.fit(
        c,
        data,
        steps=10,
        batch_size=50,
        lr=1e-2,
        schedule="cosine",
        progress=False,
        seed=1,
        checkpoint=tmp_path / "c.pt",
    )
    assert again.losses == full.losses
    constant = px.MAF(2, hidden=(8,)).double()
    constant.load_state_dict(init)
    flat = px.fit(constant, data, steps=10, batch_size=50, lr=1e-2, progress=False, seed=1)
    assert flat.losses[0] == full.losses[0] and flat.losses[-1] != full.losses[-1]


def test_plateau_schedule_halves_the_learning_rate_when_validation_stalls(monkeypatch):
    import importlib

    fit_module = importlib.import_module("pyro_xform.fit")
    data = data2d(200)
    model = px.MAF(2, hidden=(8,)).double()
    lrs, scores = [], iter([3.0, 2.0, 2.5, 2.4, 1.0, 1.5] + [9.0] * 10)
    monkeypatch.setattr(fit_module, "_validate", lambda *args: next(scores))
    original = fit_module.GuardedStep.__call__

    def spy(self, loss):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        return original(self, loss)

    monkeypatch.setattr(fit_module.GuardedStep, "__call__", spy)
    result = px.fit(
        model,
        data,
        steps=12,
        batch_size=50,
        lr=0.1,
        schedule="plateau",
        validation=0.2,
        eval_every=2,
        patience=10,
        progress=False,
        seed=0,
    )
    # validations at steps 2, 4, ...: 3.0 best, 2.0 best, 2.5 and 2.4 worse (halve twice),
    # 1.0 best, 1.5 worse (halve once more)
    assert result.best_step == 10
    assert lrs == [0.1] * 6 + [0.05] * 2 + [0.025] * 4
    with pytest.raises(ValueError, match="give validation"):
        px.fit(model, data, schedule="plateau", progress=False)


def test_min_delta_counts_only_real_improvements(monkeypatch):
    import importlib

    fit_module = importlib.import_module("pyro_xform.fit")
    data = data2d(200)
    model = px.MAF(2, hidden=(8,)).double()
    # A loss that creeps down by 0.005 a measurement: 3.0 counts; 2.995 and 2.99 are better
    # but by less than 0.02 (two bad measurements: patience 2 stops the run); the best
    # parameters are still the 2.99 ones. Without min_delta every measurement counts.
    creep = [3.0 - 0.005 * i for i in range(20)]
    scores = iter(creep)
    monkeypatch.setattr(fit_module, "_validate", lambda *args: next(scores))
    kwargs = dict(steps=20, batch_size=50, validation=0.2, eval_every=2, patience=2, progress=False, seed=0)
    result = px.fit(model, data, min_delta=0.02, **kwargs)
    assert result.stopped_early and result.steps == 6
    assert result.best_step == 6 and result.best_val == creep[2]
    scores = iter(creep)
    assert not px.fit(px.MAF(2, hidden=(8,)).double(), data, **kwargs).stopped_early
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="min_delta"):
            px.fit(model, data, min_delta=bad, **kwargs)


def test_augment_is_applied_to_training_batches_only_and_checked():
    data = px.datasets.digits().train[:200]
    seen = []

    def augment(batch):
        seen.append(batch.shape[0])
        return px.datasets.Dequantize(17)(batch)

    flow = px.MAF(64, transforms=1, hidden=(8,))
    result = px.fit(
        flow, data, steps=3, batch_size=50, validation=0.2, eval_every=3, augment=augment, progress=False
    )
    assert seen == [50, 50, 50] and len(result.val_losses) == 1
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match="augmented batch has NaN"):
        px.fit(flow, data, steps=3, augment=lambda b: b * float("nan"), progress=False)
    with pytest.raises(ValueError, match="shape and dtype"):
        px.fit(flow, data, steps=3, augment=lambda b: b.to(torch.float16), progress=False)
    with pytest.raises(ValueError, match="augment must be a function"):
        px.fit(flow, data, steps=3, augment=17, progress=False)
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in before.items())


def test_ema_returns_the_moving_average_of_the_trajectory_and_resumes_exactly(tmp_path):
    data = data2d(200)
    torch.manual_seed(0)
    make = lambda: px.RealNVP(2, transforms=2, hidden=(16,)).double()  # noqa: E731
    init = {k: v.clone() for k, v in make().state_dict().items()}
    # The iterates after steps 1..4, by resuming one plain run step by step.
    path = tmp_path / "plain.pt"
    iterates = []
    for k in range(1, 5):
        model = make()
        model.load_state_dict(init)
        px.fit(model, data, steps=k, batch_size=64, seed=3, progress=False, checkpoint=path)
        iterates.append([p.detach().clone() for p in model.parameters()])
    decay = 0.9
    start = make()
    start.load_state_dict(init)
    average = [p.detach().clone() for p in start.parameters()]
    for t, params in enumerate(iterates, 1):
        d = min(decay, (1 + t) / (10 + t))
        average = [d * a + (1 - d) * p for a, p in zip(average, params, strict=True)]

    model = make()
    model.load_state_dict(init)
    px.fit(model, data, steps=4, batch_size=64, seed=3, progress=False, ema=decay)
    for a, p in zip(average, model.parameters(), strict=True):
        assert torch.allclose(a, p, atol=1e-12)
    assert not all(torch.equal(p, q) for p, q in zip(iterates[-1], model.parameters(), strict=True))

    # Interrupted after 2 steps and resumed: the same average.
    path = tmp_path / "ema.pt"
    first = make()
    first.load_state_dict(init)
    px.fit(first, data, steps=2, batch_size=64, seed=3, progress=False, ema=decay, checkpoint=path)
    second = make()
    px.fit(second, data, steps=4, batch_size=64, seed=3, progress=False, ema=decay, checkpoint=path)
    assert all(torch.equal(p, q) for p, q in zip(second.parameters(), model.parameters(), strict=True))
    with pytest.raises(ValueError, match="without an ema"):
        px.fit(
            make(),
            data,
            steps=6,
            batch_size=64,
            seed=3,
            progress=False,
            ema=decay,
            checkpoint=tmp_path / "plain.pt",
        )
    with pytest.raises(ValueError, match="ema must be"):
        px.fit(make(), data, steps=2, progress=False, ema=1.0)


def test_ema_validates_and_keeps_the_averaged_parameters():
    data, held_out = data2d(200), px.datasets.toy("moons", 100, seed=4, dtype=torch.float64)
    model = px.MAF(2, hidden=(8,)).double()
    result = px.fit(
        model,
        data,
        steps=30,
        batch_size=50,
        lr=1e-2,
        validation=held_out,
        eval_every=5,
        ema=0.9,
        progress=False,
        seed=0,
    )
    with torch.no_grad():
        nll = -model().log_prob(held_out).mean()
    assert math.isclose(float(nll), result.best_val, rel_tol=1e-9)
