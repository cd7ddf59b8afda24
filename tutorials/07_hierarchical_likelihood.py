# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A learned likelihood inside a hierarchical model
#
# Amortized posterior estimators answer one question: $p(\theta \mid x)$ under the prior
# they were trained with. A *likelihood* estimator learns $q(x \mid \theta)$ instead, and a
# learned likelihood is exactly what a probabilistic program needs: it can sit at the
# observation site of any Pyro model, under any prior, inside plates of subjects and
# trials, and NUTS samples the whole model. Only an estimator that *is* a Pyro
# distribution can do this.
#
# The example: a reaction-time-like simulator whose noise is skewed (a Gumbel), for $J$
# subjects with their own parameters drawn from a population. We learn the single-trial
# likelihood once from simulations, then fit the population model by NUTS, and check it
# against NUTS with the true likelihood and against the simulator by `Predictive`.
#
# With the environment variable `CI` set, every loop runs only a few steps (smoke mode).

# %%
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # run as a script: no window, files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, Predictive

from pyro_xform.infer import LikelihoodEstimator

SMOKE = bool(os.environ.get("CI"))
torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. The simulator of one trial, and a broad proposal to learn it on
# $\theta = (\mu, \log s)$; a trial is $x = \mu + s\,g$ with $g$ a standard Gumbel draw.
# The likelihood estimator is trained on simulations under a broad box of parameters, wide
# enough to hold every subject we will meet: the prior of the model we fit later is ours to
# choose afterwards. By default the estimator trains an NSF and a MAF on the same
# simulations and keeps the one whose held-out likelihood is better (`nle.selection`).


# %%
BOX = dist.Uniform(torch.tensor([-3.0, -2.0]), torch.tensor([3.0, 0.5])).to_event(1)


def simulator():
    theta = pyro.sample("theta", BOX)
    mu, log_s = theta[..., 0], theta[..., 1]
    return pyro.sample("x", dist.Gumbel(mu.unsqueeze(-1), log_s.exp().unsqueeze(-1)).to_event(1))


nle = LikelihoodEstimator(simulator)
result = nle.train(2000 if SMOKE else 20_000, progress=False, seed=0, **({"steps": 20} if SMOKE else {}))
print(f"validation NLL by family: {nle.selection}; kept {type(nle.family).__name__}, {result.steps} steps")

# %% [markdown]
# ## 2. The population model, with the learned likelihood at its observation site
# $\mu_{pop} \sim \mathcal N(0, 1.5^2)$, $\tau \sim \mathrm{HalfNormal}(1)$,
# $\mu_j \sim \mathcal N(\mu_{pop}, \tau^2)$, $\log s_j \sim \mathcal N(-0.7, 0.3^2)$, and
# $n$ trials per subject. The same model takes either likelihood.

# %%
J, N = 8, 10 if SMOKE else 25


def population(x=None, likelihood=None):
    mu_pop = pyro.sample("mu_pop", dist.Normal(0.0, 1.5))
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("subjects", J):
        mu = pyro.sample("mu", dist.Normal(mu_pop, tau))
        log_s = pyro.sample("log_s", dist.Normal(-0.7, 0.3))
        theta = torch.stack([mu, log_s], -1)
        with pyro.plate("trials", N, dim=-2):
            if likelihood is None:  # the true likelihood
                gumbel = dist.Gumbel(mu.unsqueeze(-1), log_s.exp().unsqueeze(-1)).to_event(1)
                return pyro.sample("x", gumbel, obs=x)
            return pyro.sample("x", likelihood(theta), obs=x)


# A data set from the model itself, with known subject parameters.
truth = Predictive(population, num_samples=1, return_sites=["mu_pop", "tau", "mu", "log_s", "x"])()
x_obs = truth["x"][0]
print("observations:", tuple(x_obs.shape), " true mu:", truth["mu"][0].numpy().round(2))

# %% [markdown]
# ## 3. NUTS with the learned likelihood, and with the true one for reference

# %%
samples, warmup = (30, 30) if SMOKE else (600, 400)
runs = {}
for name, likelihood in (("learned", nle.likelihood), ("true", None)):
    pyro.set_rng_seed(1)
    mcmc = MCMC(NUTS(population), num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(x_obs, likelihood)
    runs[name] = mcmc.get_samples()
    print(
        f"{name:8s} mu_pop {runs[name]['mu_pop'].mean():+.2f} ± {runs[name]['mu_pop'].std():.2f}, "
        f"tau {runs[name]['tau'].mean():.2f}"
    )

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for name, draws in runs.items():
    axes[0].hist(draws["mu_pop"].numpy(), bins=30, alpha=0.5, density=True, label=name)
    axes[1].errorbar(range(J), draws["mu"].mean(0), yerr=draws["mu"].std(0), fmt="o", alpha=0.7, label=name)
axes[1].scatter(range(J), truth["mu"][0], color="k", marker="x", label="truth", zorder=3)
axes[0].set_title("population mean", fontsize=9)
axes[1].set_title("subject means", fontsize=9)
axes[1].legend(fontsize=8)
fig.savefig("hierarchical_posteriors.png", dpi=70, bbox_inches="tight")

# %% [markdown]
# ## 4. Checked against the simulator
# `Predictive` runs the model forward from the posterior draws with the *true* simulator,
# and the replicated data should look like the observations: here the spread of each
# subject's trials.

# %%
replicated = Predictive(population, posterior_samples=runs["learned"], return_sites=["x"])()["x"]
observed_spread = x_obs.std(0).squeeze(-1)
replicated_spread = replicated.std(1).squeeze(-1)
inside = ((replicated_spread < observed_spread).double().mean(0)).numpy().round(2)
print("posterior predictive p-values of each subject's spread:", inside)
