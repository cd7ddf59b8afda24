"""Diffusion designs and samplers on the demo's data and budget, one run.

    python bench/diffusion.py [--threads 1] [--steps 4500] [--designs "edm (default)" ...]

Each design is a ``Diffusion(2, ...)`` fitted to the checkerboard like ``pyro-xform demo``
fits it (20,000 points, batch 512, lr 5e-3 with a cosine schedule, seed 0). Reported: the
exact test NLL (probability-flow ODE, dopri5) and, for every sampler, the mean sliced W1 of
5,000 draws against the test set over ``--seeds`` draws (one draw's figure varies by about
0.015), beside that of as many fresh draws of the data. The issue's target: a sampler at
<= 20 network evaluations (NFE) as close to the data as the 1000-step reverse SDE.
"""

from __future__ import annotations

import argparse
import time

import torch

import pyro_xform as px
from pyro_xform import datasets
from pyro_xform.metrics import sliced_wasserstein

DESIGNS = {
    "edm (default)": {},
    "edm with FiLM": dict(film=True),
    "vp (the default before 2026-12-08)": dict(sde="vp"),
    "edm, sigma to 80": dict(sde="edm", sigma_max=80.0),
    "edm, sigma to 80, lognormal(-0.5,1.2)": dict(sde="edm", sigma_max=80.0, lognormal=(-0.5, 1.2)),
}

# name: (sample() keywords, network evaluations)
SAMPLERS = {
    "ode (dopri5)": (dict(sampler="ode"), None),
    "heun 10": (dict(sampler="heun", steps=10), 19),
    "dpm 20": (dict(sampler="dpm", steps=20), 20),
    "dpm 20, Karras grid": (dict(sampler="dpm", steps=20, grid="karras"), 20),
    "stochastic 18": (dict(sampler="stochastic", steps=18), 35),
    "heun 18": (dict(sampler="heun", steps=18), 35),
    "sde 1000": (dict(sampler="sde", steps=1000), 1000),
}


def draw(model: px.Diffusion, kwargs: dict, seed: int) -> torch.Tensor:
    """5,000 draws of a sampler (keywords of ``sample``)."""
    torch.manual_seed(seed)
    return model.sample((5_000,), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--designs", nargs="*", default=list(DESIGNS))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = datasets.load("checkerboard", n_train=20_000, n_test=5_000)
    seeds = range(1, args.seeds + 1)
    fresh = (datasets.toy("checkerboard", 5_000, seed=100 + i) for i in seeds)
    reference = sum(sliced_wasserstein(data, test) for data in fresh)
    print(
        f"checkerboard, {args.steps} steps; sliced W1, mean of {args.seeds} draws of 5,000; "
        f"fresh draws of the data: {reference / args.seeds:.3f}"
    )
    print(f"{'design':<40} {'NLL':>6} {'train s':>8} " + " ".join(f"{k:>20}" for k in SAMPLERS))
    for name in args.designs:
        torch.manual_seed(0)
        model = px.Diffusion(2, **DESIGNS[name])
        start = time.perf_counter()
        px.fit(
            model, train, steps=args.steps, batch_size=512, lr=5e-3, schedule="cosine", seed=0, progress=False
        )
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            nll = float(-model().log_prob(test).mean())
            distances = [
                sum(sliced_wasserstein(draw(model, kwargs, seed), test) for seed in seeds) / args.seeds
                for kwargs, _ in SAMPLERS.values()
            ]
        print(
            f"{name:<40} {nll:6.3f} {seconds:8.1f} " + " ".join(f"{d:20.3f}" for d in distances), flush=True
        )
    print("NFE per sampler: " + ", ".join(f"{k}: {n or 'adaptive'}" for k, (_, n) in SAMPLERS.items()))


if __name__ == "__main__":
    main()
