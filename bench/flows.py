"""Discrete flows against zuko and nflows, same architecture, one run.

2-D, 4 layers, 2x64 hidden, 8 bins (linear tails on [-5, 5]), batch 512, checkerboard.
Prints the median train-step time of each model and its ratio to the peers' (our NSF also
compiled with ``flow.compile()``, torch's inductor; for fairness zuko's NSF compiled by
``torch.compile`` too), the overhead
of fitting through Pyro's SVI (``pyro_xform.fit``) over a raw torch loop on the same flow,
and the test NLL of each model after a fixed number of steps.

    pip install -e ".[bench]"
    python bench/flows.py [--threads 1] [--steps 600] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import pyro_xform as px

H, BINS, BOUND, LAYERS, BATCH = (64, 64), 8, 5.0, 4, 512


def peers():
    """Peer models built lazily; zuko switches off torch's argument validation on import."""
    import nflows.distributions
    import nflows.flows
    import nflows.nn.nets
    import nflows.transforms as nt
    import zuko

    def nflows_flow(blocks):
        layers = []
        for i in range(LAYERS):
            if i:
                layers.append(nt.ReversePermutation(2))
            layers.append(blocks())
        return nflows.flows.Flow(nt.CompositeTransform(layers), nflows.distributions.StandardNormal([2]))

    class Net(torch.nn.Module):  # nflows' coupling passes a context argument
        def __init__(self, i, o):
            super().__init__()
            self.net = nflows.nn.nets.MLP([i], [o], hidden_sizes=list(H))

        def forward(self, x, context=None):
            return self.net(x)

    mlp = Net
    return {
        "zuko NSF (AR)": lambda: _Zuko(zuko.flows.NSF(2, transforms=LAYERS, hidden_features=H, bins=BINS)),
        "zuko MAF": lambda: _Zuko(zuko.flows.MAF(2, transforms=LAYERS, hidden_features=H)),
        "nflows NSF (coupling)": lambda: _NFlows(
            nflows_flow(
                lambda: nt.PiecewiseRationalQuadraticCouplingTransform(
                    torch.tensor([1, 0]), mlp, num_bins=BINS, tails="linear", tail_bound=BOUND
                )
            )
        ),
        "nflows NSF (AR)": lambda: _NFlows(
            nflows_flow(
                lambda: nt.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    2,
                    H[0],
                    num_blocks=1,
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                    use_residual_blocks=False,
                )
            )
        ),
        "nflows MAF": lambda: _NFlows(
            nflows_flow(
                lambda: nt.MaskedAffineAutoregressiveTransform(
                    2, H[0], num_blocks=1, use_residual_blocks=False
                )
            )
        ),
    }


class _Zuko(torch.nn.Module):
    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def log_prob(self, x):
        return self.flow().log_prob(x)


class _NFlows(torch.nn.Module):
    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def log_prob(self, x):
        return self.flow.log_prob(x)


class _Ours(torch.nn.Module):
    def __init__(self, xform):
        super().__init__()
        self.xform = xform

    def log_prob(self, x):
        return self.xform().log_prob(x)


def _compiled_ours():
    flow = OURS["pyro_xform NSF (coupling)"]()
    flow.compile()
    return _Ours(flow)


class _CompiledPeer(torch.nn.Module):
    def __init__(self, peer):
        super().__init__()
        self.peer = peer
        self.score = torch.compile(peer.log_prob)

    def log_prob(self, x):
        return self.score(x)


OURS = {
    "pyro_xform NSF (coupling)": lambda: px.NSF(2, transforms=LAYERS, hidden=H, bins=BINS, bound=BOUND),
    "pyro_xform NSF (AR)": lambda: px.NSF(
        2, transforms=LAYERS, hidden=H, bins=BINS, bound=BOUND, variant="autoregressive"
    ),
    "pyro_xform MAF": lambda: px.MAF(2, transforms=LAYERS, hidden=H),
}


def step_times(models: dict, data: torch.Tensor, rounds: int, per_round: int = 10, fused: bool = False):
    """Median time of a train step, models interleaved round by round to share the noise."""
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3, fused=fused) for k, m in models.items()}
    times = {k: [] for k in models}
    g = torch.Generator().manual_seed(0)
    for r in range(rounds):
        for name, model in models.items():
            for _ in range(per_round):
                x = data[torch.randint(0, data.shape[0], (BATCH,), generator=g)]
                t0 = time.perf_counter()
                loss = -model.log_prob(x).mean()
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def pyro_overhead(data: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median step of fit's objective (a Pyro trace, validation off as inside ``fit``, which
    validates the data once up front) vs a raw torch loop, same flow and optimizer."""
    import pyro

    from pyro_xform.objectives import MaximumLikelihood

    objective = MaximumLikelihood()
    flow = px.NSF(2, transforms=LAYERS, hidden=H, bins=BINS, bound=BOUND)
    opt = torch.optim.Adam(flow.parameters(), 1e-3, fused=True)
    variants = {
        "raw torch loop, validation on": (True, lambda x: -flow().log_prob(x).sum()),
        "raw torch loop, validation off": (False, lambda x: -flow().log_prob(x).sum()),
        "fit: Pyro trace of the observed model, validation off": (
            False,
            lambda x: objective.loss(flow, x, None),
        ),
    }
    times = {k: [] for k in variants}
    g = torch.Generator().manual_seed(0)
    for r in range(rounds):
        for name, (validate, fn) in variants.items():
            with pyro.validation_enabled(validate):
                for _ in range(10):
                    x = data[torch.randint(0, data.shape[0], (BATCH,), generator=g)]
                    t0 = time.perf_counter()
                    loss = fn(x)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if r:
                        times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def test_nll(build, train, test, steps: int, lr: float, ours: bool, schedule: str) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build()
    t0 = time.perf_counter()
    if ours:
        px.fit(model, train, steps=steps, batch_size=BATCH, lr=lr, schedule=schedule, seed=0, progress=False)
        scorer = _Ours(model)
    else:
        scorer = model
        opt = torch.optim.Adam(model.parameters(), lr)
        g = torch.Generator().manual_seed(0)
        for step in range(steps):
            if schedule == "cosine":  # the same schedule as fit's
                opt.param_groups[0]["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            x = train[torch.randint(0, train.shape[0], (BATCH,), generator=g)]
            loss = -scorer.log_prob(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        return float(-scorer.log_prob(test).mean()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = px.datasets.load("checkerboard", n_train=50_000, n_test=20_000)

    validation = torch.distributions.Distribution._validate_args
    peer = peers()
    torch.distributions.Distribution.set_default_validate_args(validation)  # undo zuko's switch
    models = {k: _Ours(f()) for k, f in OURS.items()} | {k: f() for k, f in peer.items()}
    models["pyro_xform NSF (coupling), compiled"] = _compiled_ours()
    models["zuko NSF (AR), compiled"] = _CompiledPeer(peer["zuko NSF (AR)"]())
    print(f"threads={args.threads}, batch={BATCH}, 2-D, {LAYERS} layers, 2x64 hidden, {BINS} bins\n")
    print("train step (forward, backward, Adam), median ms, models interleaved in one run")
    for fused in (False, True):
        ms = step_times(models, train, args.rounds, fused=fused)
        print(f"\n  Adam({'fused' if fused else 'default'})")
        for k, v in ms.items():
            print(f"  {k:<36} {v:7.2f} ms")
        for ours, peers_ in [
            ("pyro_xform NSF (coupling)", ["zuko NSF (AR)", "nflows NSF (coupling)"]),
            (
                "pyro_xform NSF (coupling), compiled",
                ["zuko NSF (AR)", "nflows NSF (coupling)", "zuko NSF (AR), compiled"],
            ),
            ("pyro_xform NSF (AR)", ["zuko NSF (AR)", "nflows NSF (AR)"]),
            ("pyro_xform MAF", ["zuko MAF", "nflows MAF"]),
        ]:
            print("  " + ours + ": " + ", ".join(f"{ms[ours] / ms[p]:.2f}x {p}" for p in peers_))

    overhead = pyro_overhead(train, 2 * args.rounds)
    print("\nPyro SVI maximum likelihood vs a raw torch loop (NSF, fused Adam), median ms per step")
    fit_ms = overhead["fit: Pyro trace of the observed model, validation off"]
    for k, v in overhead.items():
        print(f"  {k:<54} {v:6.2f} ms   fit / this = {fit_ms / v:.3f}x")

    for lr, schedule in [(args.lr, "constant"), (1e-2, "cosine")]:
        print(
            f"\ncheckerboard test NLL after {args.steps} steps (Adam lr {lr}, {schedule} schedule, batch "
            f"{BATCH}, the same for every model); entropy bound ln 32 = 3.466"
        )
        for k, f in OURS.items():
            nll, s = test_nll(f, train, test, args.steps, lr, True, schedule)
            print(f"  {k:<28} {nll:7.3f} nats  ({s:.1f} s, via pyro_xform.fit)")
        for k, f in peer.items():
            nll, s = test_nll(f, train, test, args.steps, lr, False, schedule)
            print(f"  {k:<28} {nll:7.3f} nats  ({s:.1f} s)")


if __name__ == "__main__":
    main()
