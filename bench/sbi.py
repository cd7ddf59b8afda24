"""Amortized posterior estimation on the classic SBI tasks, and a flow guide on a funnel.

    python bench/sbi.py [--simulations 10000] [--observations 5] [--samples 5000]

1. Two moons and Gaussian linear (10-D), written in Pyro (``pyro_xform.infer.simulators``):
   each estimator (``flow`` = NPE with an NSF, ``flow_matching``, ``diffusion``) is trained
   on ``--simulations`` pairs with its defaults (``pyro_xform.infer.ESTIMATORS``), then its
   posterior is compared with the reference posterior (closed form for Gaussian linear,
   quadrature for two moons) by C2ST at several observations. ``nle`` is the likelihood
   estimator (an NSF of x given theta) in the task's Pyro model, sampled by NUTS (one chain,
   500 warm-up steps, ``--nuts`` draws, C2ST against as many reference draws). Published
   NPE figures at 10^4 simulations (Lueckmann et al., 2021, arXiv:2101.04653): two moons
   0.606, Gaussian linear 0.552.
2. A 5-D funnel (v ~ N(0, 3^2), x_i ~ N(0, e^v)): SVI with AutoNormal and with
   AutoXformGuide (NSF), compared by PSIS k-hat (< 0.7: usable).
3. Pyro's overhead per SVI step with an XformDistribution prior against the same flow as a
   hand-built torch ``TransformedDistribution`` (median over repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_xform.infer import (
    ESTIMATORS,
    AutoXformGuide,
    LikelihoodEstimator,
    PosteriorEstimator,
    psis_khat,
    simulate,
    simulators,
)
from pyro_xform.metrics import c2st

PUBLISHED = {"two_moons": 0.606, "gaussian_linear": 0.552}


def reference(task: str, x: torch.Tensor, n: int) -> torch.Tensor:
    if task == "two_moons":
        return simulators.two_moons_posterior(x, n)
    return simulators.gaussian_linear_posterior(x).sample((n,))


#: The tasks' priors, for the likelihood estimator's model (the simulators hold them too).
PRIORS = {
    "two_moons": lambda: dist.Uniform(-torch.ones(2), torch.ones(2)).to_event(1),
    "gaussian_linear": lambda: dist.Normal(torch.zeros(10), 0.1**0.5).to_event(1),
}


def nle_posterior(task: str, nle: LikelihoodEstimator, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` NUTS draws of the posterior with the learned likelihood in the task's model."""

    def model():
        theta = pyro.sample("theta", PRIORS[task]())
        pyro.sample("x", nle.likelihood(theta), obs=x)

    pyro.set_rng_seed(seed)
    mcmc = MCMC(NUTS(model), num_samples=n, warmup_steps=500, disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()["theta"].detach()


def sbi(args) -> None:
    tasks = {"two_moons": simulators.two_moons, "gaussian_linear": simulators.gaussian_linear}
    print(
        f"\nC2ST at {args.simulations} simulations (mean over {args.observations} observations; 0.5 is best)"
    )
    print(f"{'task':16s} {'estimator':14s} {'C2ST':>6s} {'published NPE':>14s} {'train s':>8s}")
    for task, model in tasks.items():
        if task not in args.tasks:
            continue
        _, observations = simulate(model, args.observations, seed=1000)
        for estimator in args.estimators:
            if estimator == "nle":  # the learned likelihood under NUTS (its time beside)
                nle = LikelihoodEstimator(model)
                started = time.perf_counter()
                nle.train(args.simulations, progress=False, seed=0)
                seconds = time.perf_counter() - started
                scores = [
                    c2st(nle_posterior(task, nle, x, args.nuts, i), reference(task, x, args.nuts), seed=i)
                    for i, x in enumerate(observations)
                ]
                mean = statistics.mean(scores)
                print(f"{task:16s} {'nle (NUTS)':14s} {mean:6.3f} {PUBLISHED[task]:14.3f} {seconds:8.0f}")
                continue
            pe = PosteriorEstimator(model, estimator)
            started = time.perf_counter()
            pe.train(args.simulations, progress=False, seed=0)
            seconds = time.perf_counter() - started
            scores = []
            for i, x in enumerate(observations):
                with torch.no_grad():
                    draws = pe.posterior(x).sample((args.samples,))
                scores.append(c2st(draws, reference(task, x, args.samples), seed=i))
            mean = statistics.mean(scores)
            print(
                f"{task:16s} {estimator:14s} {mean:6.3f} {PUBLISHED[task]:14.3f} {seconds:8.0f}", flush=True
            )


def funnel() -> None:
    def model():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        pyro.sample("x", dist.Normal(torch.zeros(4), torch.exp(v / 2).unsqueeze(-1)).to_event(1))

    print("\n5-D funnel: PSIS k-hat of the fitted guide (< 0.7 usable)")
    for name, make in (
        ("AutoNormal", lambda: AutoNormal(model)),
        ("AutoXformGuide(NSF)", lambda: AutoXformGuide(model, "NSF", hidden=(32, 32), transforms=4)),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = make()
        elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
        svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 5e-3, "lrd": 0.9995}), elbo)
        for _ in range(3000):
            svi.step()
        khat = psis_khat(model, guide, num_particles=5000)
        print(f"{name:22s} k-hat {khat:6.2f}")


def overhead() -> None:
    import pyro_xform as px

    flow = px.NSF(8, transforms=4, hidden=(64, 64)).requires_grad_(False)
    y = torch.randn(8)
    torch_dist = dist.TransformedDistribution(flow.base(), [flow.transform.condition(None)])

    def model_x():
        z = pyro.sample("z", flow())
        pyro.sample("y", dist.Normal(z, 0.5).to_event(1), obs=y)

    def model_t():
        z = pyro.sample("z", torch_dist)
        pyro.sample("y", dist.Normal(z, 0.5).to_event(1), obs=y)

    def step_time(model) -> float:
        pyro.clear_param_store()
        guide = AutoNormal(model)
        svi = SVI(
            model,
            guide,
            pyro.optim.Adam({"lr": 1e-2}),
            Trace_ELBO(num_particles=16, vectorize_particles=True),
        )
        for _ in range(20):
            svi.step()
        started = time.perf_counter()
        for _ in range(100):
            svi.step()
        return (time.perf_counter() - started) / 100

    ratios = []
    for _ in range(5):
        ratios.append(step_time(model_x) / step_time(model_t))
    print(
        "\nSVI step with an XformDistribution prior / with a torch TransformedDistribution: "
        f"{statistics.median(ratios):.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=10000)
    parser.add_argument("--observations", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--estimators", nargs="+", default=[*ESTIMATORS, "nle"])
    parser.add_argument("--nuts", type=int, default=2000, help="NUTS draws per observation for nle")
    parser.add_argument("--tasks", nargs="+", default=list(PUBLISHED))
    parser.add_argument("--only", choices=["sbi", "funnel", "overhead"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.only in (None, "sbi"):
        sbi(args)
    if args.only in (None, "funnel"):
        funnel()
    if args.only in (None, "overhead"):
        overhead()


if __name__ == "__main__":
    main()
