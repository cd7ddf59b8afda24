"""NUTS with a learned flow prior: NumPyro on the exported prior vs Pyro on the torch one.

    python bench/nuts.py [--warmup 500] [--samples 1000] [--family NSF]

A flow is fitted to the moons toy set and used as the prior of a 2-D position observed
with Gaussian noise, ``y ~ N(x, 0.3^2 I)``. The same posterior is sampled by Pyro's NUTS
(torch prior) and by NumPyro's NUTS (``pyro_xform.numpyro.to_numpyro`` of the same weights),
one chain each, same warm-up and draws. Reported: minimum bulk ESS over the coordinates,
wall time, ESS per second and the ratio (NumPyro with and without its one-time compile),
and the posterior means of both (they should agree).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import torch
from numpyro.diagnostics import effective_sample_size
from pyro.infer import MCMC, NUTS

import pyro_xform as px
from pyro_xform.numpyro import to_numpyro

NOISE = 0.3
Y = [0.5, 0.25]


def min_ess(draws: np.ndarray) -> float:
    return float(np.min(effective_sample_size(draws[None])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--family", default="NSF", choices=["NSF", "MAF", "RealNVP"])
    parser.add_argument("--fit-steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)

    train, _ = px.datasets.load("moons")
    flow = getattr(px, args.family)(features=2)
    px.fit(flow, train, steps=args.fit_steps, progress=False, seed=0)
    flow.eval().requires_grad_(False)
    y = torch.tensor(Y)

    def pyro_model():
        x = pyro.sample("x", flow())
        pyro.sample("y", pdist.Normal(x, NOISE).to_event(1), obs=y)

    pyro.set_rng_seed(0)
    started = time.perf_counter()
    mcmc = MCMC(NUTS(pyro_model), warmup_steps=args.warmup, num_samples=args.samples, disable_progbar=True)
    mcmc.run()
    pyro_seconds = time.perf_counter() - started
    pyro_draws = mcmc.get_samples()["x"].numpy()

    prior = to_numpyro(flow)
    y_jax = jax.numpy.asarray(Y)

    def numpyro_model():
        x = numpyro.sample("x", prior)
        numpyro.sample("y", ndist.Normal(x, NOISE).to_event(1), obs=y_jax)

    kernel = numpyro.infer.NUTS(numpyro_model)
    times = []
    for run in range(2):  # the first run includes compilation
        jmcmc = numpyro.infer.MCMC(
            kernel, num_warmup=args.warmup, num_samples=args.samples, progress_bar=False
        )
        started = time.perf_counter()
        jmcmc.run(jax.random.key(run))
        jax_draws = np.asarray(jax.block_until_ready(jmcmc.get_samples()["x"]))
        times.append(time.perf_counter() - started)

    pyro_ess, jax_ess = min_ess(pyro_draws), min_ess(jax_draws)
    rows = [
        ("Pyro NUTS (torch prior)", pyro_ess, pyro_seconds),
        ("NumPyro NUTS, with compile", jax_ess, times[0]),
        ("NumPyro NUTS, compiled", jax_ess, times[1]),
    ]
    print(
        f"\n{args.family} prior fitted to moons, y = {Y}, noise {NOISE}; "
        f"{args.warmup} warm-up + {args.samples} draws"
    )
    print(f"{'sampler':30s} {'min ESS':>8s} {'seconds':>8s} {'ESS/s':>8s} {'vs Pyro':>8s}")
    base = pyro_ess / pyro_seconds
    for name, ess, seconds in rows:
        print(f"{name:30s} {ess:8.0f} {seconds:8.2f} {ess / seconds:8.1f} {ess / seconds / base:7.1f}x")
    print(f"\nposterior mean: Pyro {pyro_draws.mean(0).round(3)}, NumPyro {jax_draws.mean(0).round(3)}")
    print(f"posterior sd:   Pyro {pyro_draws.std(0).round(3)}, NumPyro {jax_draws.std(0).round(3)}")


if __name__ == "__main__":
    main()
