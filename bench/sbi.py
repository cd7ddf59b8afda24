"""Amortized inference on the sbibm tasks side by side with sbi, and a flow guide on a funnel.

    python bench/sbi.py [--simulations 10000] [--observations 5] [--samples 5000]
        [--tasks two_moons slcp ...] [--estimators flow NPE ...]

1. The tasks two moons, Gaussian linear (10-D), SLCP, Gaussian mixture, Bernoulli GLM
   and SIR, written in Pyro (``pyro_xform.infer.simulators``, from sbibm's definitions).
   One set of simulations per task (``--seed``, 0 by default, which also seeds every
   training) trains every estimator: ours with their defaults
   (``pyro_xform.infer.ESTIMATORS``: ``flow`` = NPE with an NSF, ``flow_matching``,
   ``diffusion``) and sbi's counterparts with theirs (``NPE``, its default MAF;
   ``FMPE``; ``NPSE``). Each posterior is compared with the reference posterior by C2ST
   (sbibm's classifier: an MLP of two 10-d layers, 5 folds) at sbibm's first
   ``--observations`` observations, ``--samples`` draws against as many reference draws;
   the mean is printed with the training time. Observations and reference draws are the
   files that sbibm's wheel ships (``pip install --no-deps sbibm``: its pinned sbi is
   older than ours, its files are all we read); without it, two moons and Gaussian
   linear fall back to our own observations and exact references (quadrature, closed
   form) and the other tasks are skipped. ``flow,maf`` is NPE by whichever of the two
   has the better validation likelihood. ``flow+deepset`` (any estimator ``+`` an
   embedding name) trains the estimator with that embedding network of the observation,
   on tasks whose observation is a set (SLCP: four 2-D draws). ``nle`` is our likelihood
   estimator of x given theta in the task's Pyro model (the NSF or the MAF, whichever
   has the better validation likelihood; ``nle:flow``, ``nle:maf`` take one), its
   posterior sampled by NumPyro's compiled NUTS with its defaults (``--nuts`` draws).
   Published NPE figures at 10^4 simulations (Lueckmann et al., 2021, arXiv:2101.04653)
   beside.
2. Sequential rounds (``--only sequential``, ``--sequential flow nle``): truncated
   sequential NPE and sequential NLE (``pyro_xform.infer.train_rounds``, ``--rounds``
   rounds sharing ``--simulations``), one training per observation, against the amortized
   estimators of section 1.
3. A 5-D funnel (v ~ N(0, 3^2), x_i ~ N(0, e^v)): SVI with AutoNormal and with
   AutoXformGuide (NSF), compared by PSIS k-hat (< 0.7: usable).
4. Pyro's overhead per SVI step with an XformDistribution prior against the same flow as a
   hand-built torch ``TransformedDistribution`` (median over repeats).
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import functools
import importlib.util
import io
import math
import statistics
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on the path and this file would shadow the
# sbi package it compares with.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_xform.infer import (
    AutoXformGuide,
    LikelihoodEstimator,
    PosteriorEstimator,
    psis_khat,
    simulate,
    simulators,
    train_rounds,
)
from pyro_xform.metrics import c2st

#: Published NPE C2ST at 10^4 simulations (Lueckmann et al., 2021).
PUBLISHED = {
    "two_moons": 0.606,
    "gaussian_linear": 0.552,
    "slcp": 0.901,
    "gaussian_mixture": 0.661,
    "bernoulli_glm": 0.678,
    "sir": 0.680,
}


def _glm_prior() -> dist.MultivariateNormal:
    """Bernoulli GLM's prior (sbibm's): the offset N(0, 2), the 9-tap filter smooth (a
    precision penalizing its second differences)."""
    m = 9
    d = torch.eye(m) - torch.diag(torch.ones(m - 1), -1)
    f = d @ d + torch.diag(torch.arange(m) / m) ** 0.5
    precision = torch.zeros(m + 1, m + 1)
    precision[0, 0] = 0.5
    precision[1:, 1:] = f.T @ f
    return dist.MultivariateNormal(torch.zeros(m + 1), precision_matrix=precision)


@functools.cache
def _glm_files() -> tuple[torch.Tensor, torch.Tensor]:
    files = sbibm_files("bernoulli_glm")
    if files is None:
        raise SystemExit("the Bernoulli GLM task reads sbibm's design matrix: pip install --no-deps sbibm")
    load = functools.partial(torch.load, weights_only=True)
    return load(files / "design_matrix.pt"), load(files / "stimulus_I.pt")


def bernoulli_glm(x: torch.Tensor | None = None) -> torch.Tensor:
    """Bernoulli GLM (sbibm's): a spike train of 100 bins, spiking with probability
    sigmoid(design @ theta), summarized by its spike count and its spike-triggered average
    of the stimulus (9 lags). The design matrix and stimulus are sbibm's files."""
    design, stimulus = _glm_files()
    theta = pyro.sample("theta", _glm_prior())
    spikes = pyro.sample("spikes", dist.Bernoulli(logits=theta @ design.T).to_event(1))
    flat = spikes.reshape(-1, 1, spikes.shape[-1])
    sta = torch.nn.functional.conv1d(flat, stimulus.reshape(1, 1, -1), padding=8)[:, 0, -9:]
    summary = torch.cat([spikes.sum(-1, keepdim=True), sta.reshape(*spikes.shape[:-1], 9)], -1)
    return pyro.deterministic("x", summary, event_dim=1)


#: The tasks: (model, parameter site, observation site).
TASKS = {**simulators.SIMULATORS, "bernoulli_glm": (bernoulli_glm, "theta", "x")}

#: The tasks' priors, for sbi (the simulators hold them too).
PRIORS = {
    "two_moons": lambda: dist.Uniform(-torch.ones(2), torch.ones(2)).to_event(1),
    "gaussian_linear": lambda: dist.MultivariateNormal(torch.zeros(10), 0.1 * torch.eye(10)),
    "slcp": lambda: dist.Uniform(-3 * torch.ones(5), 3 * torch.ones(5)).to_event(1),
    "gaussian_mixture": lambda: dist.Uniform(-10 * torch.ones(2), 10 * torch.ones(2)).to_event(1),
    "bernoulli_glm": _glm_prior,
    "sir": lambda: dist.LogNormal(
        torch.tensor([math.log(0.4), math.log(0.125)]), torch.tensor([0.5, 0.2])
    ).to_event(1),
}

#: The observations that are sets of i.i.d. draws, as (elements, size): for an estimator
#: named with an embedding, e.g. ``flow+deepset``.
SETS = {"slcp": (4, 2)}

#: Our estimator against sbi's counterpart.
COUNTERPART = {"flow": "NPE", "flow_matching": "FMPE", "diffusion": "NPSE"}


def sbibm_files(task: str) -> Path | None:
    """The directory of a task's observation files in sbibm's installed wheel, or ``None``."""
    spec = importlib.util.find_spec("sbibm")  # located, not imported: its own imports are old
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tasks" / task / "files"
    return path if path.is_dir() else None


def _csv(path: Path) -> torch.Tensor:
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as f:
        return torch.from_numpy(np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)).float()


def observations(task: str, count: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x_obs, reference draws)`` for sbibm's first ``count`` observations; without sbibm,
    our own observations with ``None`` (the exact reference is drawn on demand)."""
    files = sbibm_files(task)
    if files is not None:
        return [
            (
                _csv(files / f"num_observation_{i}" / "observation.csv")[0],
                _csv(files / f"num_observation_{i}" / "reference_posterior_samples.csv.bz2"),
            )
            for i in range(1, count + 1)
        ]
    if task not in ("two_moons", "gaussian_linear"):
        return []
    _, xs = simulate(TASKS[task][0], count, seed=1000)
    return [(x, None) for x in xs]


def reference(task: str, x: torch.Tensor, draws: torch.Tensor | None, n: int, seed: int) -> torch.Tensor:
    if draws is not None:
        g = torch.Generator().manual_seed(seed)
        return draws[torch.randperm(len(draws), generator=g)[:n]]
    if task == "two_moons":
        return simulators.two_moons_posterior(x, n, seed=seed)
    return simulators.gaussian_linear_posterior(x).sample((n,))


def _nle_draws(nle: LikelihoodEstimator, x_obs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """NUTS draws of the posterior with the learned likelihood under the task's prior, by
    NumPyro's compiled NUTS with its defaults (``pyro_xform.numpyro.sample_posterior``:
    100 chains adapted one by one, started by sampling-importance resampling from the
    prior, as sbi starts its chains, so that SLCP's four modes are weighted by many
    chains)."""
    from pyro_xform.numpyro import sample_posterior  # JAX only where the NLE runs

    return sample_posterior(nle, x_obs, n, seed=seed)


def train_ours(task, estimator, theta, x, args):
    """Train one of our estimators; returns (seconds, draw(x_obs, n, seed))."""
    model = TASKS[task][0]
    if estimator.startswith("nle"):  # "nle" chooses its family; "nle:maf" takes that one
        _, _, family = estimator.partition(":")
        nle = LikelihoodEstimator(model, *([family] if family else []))
        started = time.perf_counter()
        nle.train(theta=theta, x=x, progress=False, seed=args.seed)
        seconds = time.perf_counter() - started
        if nle.selection:
            print(f"  {task}: the NLE's validation NLL by family {nle.selection}", flush=True)
        return seconds, functools.partial(_nle_draws, nle)
    name, _, embedding = estimator.partition("+")
    if embedding:  # the observation as the set (or series) it is, for the embedding network
        if task not in SETS:
            raise SystemExit(f"{estimator}: {task}'s observation is not a set ({sorted(SETS)} are)")
        x = x.reshape(len(x), *SETS[task])
    # "flow,maf": the candidates the estimator chooses from by validation likelihood.
    pe = PosteriorEstimator(
        model, tuple(name.split(",")) if "," in name else name, embedding=embedding or None
    )
    started = time.perf_counter()
    result = pe.train(theta=theta, x=x, progress=False, seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"  {task}: {estimator}'s validation NLL {result.best_val:.3f}", flush=True)

    @torch.no_grad()
    def draw(x_obs, n, seed):
        torch.manual_seed(seed)
        return pe.posterior(x_obs).sample((n,))

    return seconds, draw


def train_sbi(task, name, theta, x, seed):
    """Train sbi's estimator ``name`` with its defaults; returns (seconds, draw)."""
    import sbi.inference

    torch.manual_seed(seed)
    inference = getattr(sbi.inference, name)(prior=PRIORS[task](), show_progress_bars=False)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its "converged after n epochs"
        inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - started
    posterior = inference.build_posterior()

    @torch.no_grad()
    def draw(x_obs, n, seed):
        torch.manual_seed(seed)
        return posterior.sample((n,), x=x_obs.unsqueeze(0), show_progress_bars=False).reshape(n, -1)

    return seconds, draw


def score(task, draw, cases, n) -> float:
    scores = [
        c2st(draw(x_obs, n, i), reference(task, x_obs, ref, n, i), seed=i)
        for i, (x_obs, ref) in enumerate(cases)
    ]
    return statistics.mean(scores)


def sbi(args) -> None:
    has_sbi = importlib.util.find_spec("sbi") is not None
    source = "sbibm's files" if sbibm_files("two_moons") is not None else "our own (sbibm not installed)"
    print(
        f"\nC2ST at {args.simulations} simulations (mean over {args.observations} observations, "
        f"{args.samples} draws; observations and references: {source}; 0.5 is best)"
    )
    print(f"{'task':17s} {'estimator':14s} {'C2ST':>6s} {'train s':>8s}   published NPE 10^4")
    for task in args.tasks:
        cases = observations(task, args.observations)
        if not cases:
            print(f"{task:17s} skipped: its reference posteriors need sbibm's files")
            continue
        model = TASKS[task][0]
        theta, x = simulate(model, args.simulations, seed=args.seed)
        for estimator in args.estimators:
            if estimator in COUNTERPART.values():
                if not has_sbi:
                    print(f"{task:17s} sbi {estimator:10s} skipped: pip install sbi")
                    continue
                seconds, draw = train_sbi(task, estimator, theta, x, args.seed)
                label = f"sbi {estimator}"
            else:
                seconds, draw = train_ours(task, estimator, theta, x, args)
                label = estimator
            n = args.nuts if estimator.startswith("nle") else args.samples
            mean = score(task, draw, cases, n)
            print(f"{task:17s} {label:14s} {mean:6.3f} {seconds:8.0f}   {PUBLISHED[task]:.3f}", flush=True)


def sequential(args) -> None:
    """Sequential rounds (``train_rounds``), one training per observation, at the total
    number of simulations of section 1's amortized rows (compare with those): truncated
    sequential NPE (``flow``) and sequential NLE (``nle``, proposals by NumPyro's
    compiled NUTS)."""
    print(
        f"\nSequential rounds ({args.rounds} x {args.simulations // args.rounds} simulations; NPE: "
        f"truncated prior, NLE: posterior) against one amortized round of {args.simulations}: "
        f"C2ST, mean over {args.observations} observations"
    )
    print(f"{'task':17s} {'estimator':22s} {'C2ST':>6s} {'train s':>8s}")
    for task in args.tasks:
        cases = observations(task, args.observations)
        if not cases:
            continue
        model = TASKS[task][0]
        for estimator in args.sequential:
            scores, seconds = [], 0.0
            for i, (x_obs, ref) in enumerate(cases):
                started = time.perf_counter()
                draw = _rounds(model, estimator, x_obs, args)
                seconds += time.perf_counter() - started
                n = args.nuts if estimator == "nle" else args.samples
                draws = draw(x_obs, n, i)
                scores.append(c2st(draws, reference(task, x_obs, ref, n, i), seed=i))
            label = f"{estimator} ({args.rounds} rounds)"
            mean = statistics.mean(scores)
            print(f"{task:17s} {label:22s} {mean:6.3f} {seconds / len(cases):8.0f}", flush=True)


def _rounds(model, estimator: str, x_obs: torch.Tensor, args):
    """Train ``estimator`` by rounds focused on ``x_obs``; returns draw(x_obs, n, seed)."""
    n = args.simulations // args.rounds
    if estimator == "nle":
        nle = LikelihoodEstimator(model)
        from pyro_xform.numpyro import sample_posterior  # the proposals by compiled NUTS

        train_rounds(nle, x_obs, rounds=args.rounds, num_simulations=n, seed=0, sampler=sample_posterior)
        return functools.partial(_nle_draws, nle)
    pe = PosteriorEstimator(model, estimator)
    train_rounds(pe, x_obs, rounds=args.rounds, num_simulations=n, seed=0)

    @torch.no_grad()
    def draw(x_obs, n, seed):
        torch.manual_seed(seed)
        return pe.posterior(x_obs).sample((n,))

    return draw


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
    parser.add_argument("--seed", type=int, default=0, help="seeds the simulations and every training")
    parser.add_argument(
        "--estimators", nargs="+", default=[e for pair in COUNTERPART.items() for e in pair] + ["nle"]
    )
    parser.add_argument("--nuts", type=int, default=5000, help="NUTS draws per observation for nle")
    parser.add_argument("--tasks", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the sequential section")
    parser.add_argument("--sequential", nargs="+", default=["flow", "nle"], choices=["flow", "nle"])
    parser.add_argument("--only", choices=["sbi", "sequential", "funnel", "overhead"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.only in (None, "sbi"):
        sbi(args)
    if args.only in (None, "sequential"):
        sequential(args)
    if args.only in (None, "funnel"):
        funnel()
    if args.only in (None, "overhead"):
        overhead()


if __name__ == "__main__":
    main()
