"""Generative guides against Pyro's own: ELBO, PSIS k-hat, posterior fit and time, one run.

    python bench/guides.py [--steps 2000] [--particles 8] [--threads 2] [--guides ...]

Every guide is trained by the same SVI loop (``Trace_ELBO`` with vectorized particles,
``ClippedAdam(lr=5e-3)``, the same seed) on four posteriors:

- ``eight_schools``: the centered eight-schools model (a funnel in ``tau``; 10 latents);
- ``funnel``: Neal's funnel in 5-D (``v ~ N(0, 3)``, four ``x_i ~ N(0, exp(v/2))``);
- ``correlated``: a 10-D Gaussian with correlations 0.95 and scales from 0.1 to 10;
- ``horseshoe``: sparse linear regression with a horseshoe prior (20 coefficients,
  41 latents; 40 observations, 20 held out).

Reported per guide: the final ELBO (4000 draws; higher is better), Pyro's PSIS k-hat
(below 0.7 usable, below 0.5 good), the held-out predictive log-likelihood where there
are held-out data, the error of the posterior's key scalar (mean and sd, in posterior
sd units) against NUTS (or the exact posterior), and the seconds per 100 SVI steps.
``--speed`` prints only the time per step of our IAF guide at ``AutoIAFNormal``'s size
against ``AutoIAFNormal`` on eight schools (interleaved rounds, medians).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import block_autoregressive, iterated
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal, AutoNormalizingFlow
from pyro.infer.importance import psis_diagnostic, vectorized_importance_weights

from pyro_xform.infer import AutoXformGuide

SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y_SCHOOLS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


def eight_schools(y=Y_SCHOOLS):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, SIGMA), obs=y)


def eight_schools_noncentered(y=Y_SCHOOLS):
    """The same posterior, parameterized for NUTS (no funnel): the reference's sampler."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        offset = pyro.sample("offset", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * offset, SIGMA), obs=y)


def funnel():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(4), torch.exp(v / 2).unsqueeze(-1)).to_event(1))


def _correlated_gaussian(d: int = 10) -> dist.MultivariateNormal:
    scales = torch.logspace(-1, 1, d)
    corr = torch.full((d, d), 0.95).fill_diagonal_(1.0)
    return dist.MultivariateNormal(torch.zeros(d), scales[:, None] * corr * scales[None])


CORRELATED = _correlated_gaussian()


def correlated():
    pyro.sample("z", CORRELATED)


def _regression_data(n: int = 60, d: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    beta = torch.zeros(d)
    beta[:3] = torch.tensor([3.0, -2.0, 1.5])
    y = X @ beta + 0.5 * torch.randn(n, generator=g)
    return X[:40], y[:40], X[40:], y[40:]


X_TRAIN, Y_TRAIN, X_TEST, Y_TEST = _regression_data()


def horseshoe(X=X_TRAIN, y=Y_TRAIN):
    d = X.shape[1]
    tau = pyro.sample("tau", dist.HalfCauchy(1.0))
    lam = pyro.sample("lam", dist.HalfCauchy(torch.ones(d)).to_event(1))
    beta = pyro.sample("beta", dist.Normal(0.0, tau.unsqueeze(-1) * lam).to_event(1))
    noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", X.shape[0]):
        # (..., d) * (n, d) summed: vectorized particles keep their own dimensions.
        pyro.sample("y", dist.Normal((beta * X).sum(-1), noise), obs=y)


def horseshoe_noncentered(X=X_TRAIN, y=Y_TRAIN):
    """The same posterior, parameterized for NUTS: the reference's sampler."""
    d = X.shape[1]
    tau = pyro.sample("tau", dist.HalfCauchy(1.0))
    lam = pyro.sample("lam", dist.HalfCauchy(torch.ones(d)).to_event(1))
    z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
    beta = tau.unsqueeze(-1) * lam * z
    noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal((beta * X).sum(-1), noise), obs=y)


def _horseshoe_heldout(draws: dict[str, torch.Tensor]) -> float:
    """log mean_s p(y_test | beta_s, noise_s), per held-out point, summed."""
    beta, noise = draws["beta"].reshape(-1, X_TEST.shape[1]), draws["noise"].reshape(-1, 1)
    mean = beta @ X_TEST.T
    lp = dist.Normal(mean, noise).log_prob(Y_TEST).sum(-1)
    return float(torch.logsumexp(lp, 0) - math.log(lp.shape[0]))


# name: (model, key scalar of the posterior (a function of the constrained draws), held-out)
PROBLEMS = {
    "eight_schools": (eight_schools, lambda d: d["tau"].clamp_min(1e-6).log(), None),
    "funnel": (funnel, lambda d: d["v"], None),
    "correlated": (correlated, lambda d: d["z"][..., 0], None),
    "horseshoe": (horseshoe, lambda d: d["beta"][..., 0], _horseshoe_heldout),
}


def _bnaf(model):
    return AutoNormalizingFlow(model, functools.partial(iterated, 2, block_autoregressive))


GUIDES = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoIAFNormal": AutoIAFNormal,
    "AutoNormalizingFlow(BNAF x2)": _bnaf,
    "AutoXformGuide() (IAF, scale 1)": AutoXformGuide,
    "AutoXformGuide(IAF, scale 0.1)": functools.partial(AutoXformGuide, family="IAF", init_scale=0.1),
    "AutoXformGuide(NSF)": functools.partial(AutoXformGuide, family="NSF"),
    "AutoXformGuide(NSF, scale 0.1)": functools.partial(AutoXformGuide, family="NSF", init_scale=0.1),
}


def train(model, make_guide, steps: int, particles: int, seed: int):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(model)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 5e-3}), elbo)
    start = time.perf_counter()
    for _ in range(steps):
        svi.step()
    return guide, (time.perf_counter() - start) / steps * 100


@torch.no_grad()
def evaluate(model, guide, n: int = 4000) -> tuple[float, dict[str, torch.Tensor]]:
    """The ELBO (mean log weight of ``n`` guide draws) and the draws, by site."""
    log_weights, model_trace, _ = vectorized_importance_weights(
        model, guide, num_samples=n, max_plate_nesting=1, normalized=False
    )
    draws = {
        name: site["value"]
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not name.startswith("_")
    }
    return float(log_weights.mean()), draws


def reference(name: str, model, key, samples: int) -> torch.Tensor:
    """The key scalar's reference draws: exact for the Gaussian and the funnel, NUTS else."""
    if name == "correlated":
        return CORRELATED.sample((20000,))[..., 0]
    if name == "funnel":
        return dist.Normal(0.0, 3.0).sample((20000,))
    # NUTS on a centered funnel is biased (and slow) where the scale is small.
    model = {"eight_schools": eight_schools_noncentered, "horseshoe": horseshoe_noncentered}.get(name, model)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model, target_accept_prob=0.95), samples, samples, disable_progbar=True)
    mcmc.run()
    draws = mcmc.get_samples()
    if "z" in draws:  # the non-centered horseshoe's coefficients
        draws["beta"] = draws["tau"].unsqueeze(-1) * draws["lam"] * draws["z"]
    return key(draws)


def step_ratio(rounds: int = 5, steps: int = 300, particles: int = 8) -> None:
    """Time per SVI step on centered eight schools of our IAF guide at Pyro's
    ``AutoIAFNormal`` size (one transform, 3D + 3 hidden units) against ``AutoIAFNormal``,
    in interleaved rounds (the median ratio)."""
    hidden = 3 * 10 + 3
    pair = {
        "AutoIAFNormal": AutoIAFNormal,
        "AutoXformGuide(IAF, same size)": functools.partial(
            AutoXformGuide, family="IAF", transforms=1, hidden=(hidden,)
        ),
    }
    times: dict[str, list[float]] = {label: [] for label in pair}
    sizes = {}
    for _ in range(rounds):
        for label, make in pair.items():
            # A short run first, so that one-time costs (first calls, allocations) stay out
            # of the timed one; each run builds its guide afresh.
            train(eight_schools, make, 20, particles, 0)
            guide, per100 = train(eight_schools, make, steps, particles, 0)
            times[label].append(per100 * 10)  # ms a step
            sizes[label] = sum(p.numel() for p in guide.parameters())
    print("\nSVI step time, centered eight schools (median of interleaved rounds)")
    for label, values in times.items():
        print(f"  {label:<32} {statistics.median(values):6.2f} ms  {sizes[label]} parameters")
    theirs, ours = (statistics.median(times[label]) for label in pair)
    print(f"  ours / AutoIAFNormal: {ours / theirs:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nuts", type=int, default=200, help="NUTS warm-up and draws")
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--guides", nargs="*", default=list(GUIDES))
    parser.add_argument("--speed", action="store_true", help="only the equal-size step-time ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    if args.speed:
        step_ratio(particles=args.particles)
        return
    print(
        f"{args.steps} SVI steps, {args.particles} vectorized particles, ClippedAdam(5e-3), seed {args.seed}"
    )
    for name in args.problems:
        model, key, heldout = PROBLEMS[name]
        ref = reference(name, model, key, args.nuts)
        ref_mean, ref_sd = float(ref.mean()), float(ref.std())
        print(f"\n{name}: key scalar mean {ref_mean:.3f}, sd {ref_sd:.3f} (reference)")
        header = ("ELBO", "k-hat", "held-out", "mean err", "sd ratio", "s/100")
        print(f"  {'guide':<32} " + " ".join(f"{h:>9}" for h in header))
        for label in args.guides:
            guide, per100 = train(model, GUIDES[label], args.steps, args.particles, args.seed)
            value, draws = evaluate(model, guide)
            khat = float(psis_diagnostic(model, guide, num_particles=2000, max_plate_nesting=1))
            k = key(draws)
            held = f"{heldout(draws):9.2f}" if heldout else f"{'':>9}"
            err, ratio = (float(k.mean()) - ref_mean) / ref_sd, float(k.std()) / ref_sd
            print(f"  {label:<32} {value:9.3f} {khat:9.2f} {held} {err:9.3f} {ratio:9.3f} {per100:9.2f}")


if __name__ == "__main__":
    main()
