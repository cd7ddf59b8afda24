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
# # Amortized posterior estimation: three estimators on two moons, and their calibration
#
# Simulation-based inference starts from a simulator we can run but whose likelihood we
# cannot evaluate. Written as a Pyro model — a prior on $\theta$ and a simulator that samples
# $x$ — it gives pairs $(\theta, x)$; a *conditional* generative model trained on them is
# an estimate of $p(\theta \mid x)$ for every $x$ at once (amortized).
#
# In pyro_xform the estimator is one word: `"flow"` (neural posterior estimation, a spline
# flow by maximum likelihood), `"flow_matching"` (flow-matching posterior estimation) or
# `"diffusion"` (score-based posterior estimation). We train all three on the two-moons task
# and compare them with the exact posterior by a classifier two-sample test (C2ST: 0.5 means
# indistinguishable).
#
# With the environment variable `CI` set, every loop runs only a few steps (smoke mode).

# %%
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # run as a script: no window, files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from pyro_xform.infer import (
    PosteriorEstimator,
    expected_coverage,
    plot_coverage,
    plot_sbc,
    posterior_predictive,
    sbc,
    simulate,
    simulators,
    tarp,
    to_inference_data,
)
from pyro_xform.metrics import c2st

SMOKE = bool(os.environ.get("CI"))
torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. The simulator, in Pyro
# `simulators.two_moons` is an ordinary Pyro model: `theta` is uniform on $[-1, 1]^2$, and
# $x$ is a point on a crescent, shifted by a function of $\theta$. Two different $\theta$
# explain each $x$ — the posterior has two moons.

# %%
theta, x = simulate(simulators.two_moons, 1000 if SMOKE else 10_000, seed=0)
print(theta.shape, x.shape)
x_obs = torch.tensor([0.0, 0.0])
reference = simulators.two_moons_posterior(x_obs, 200 if SMOKE else 5000)

# %% [markdown]
# ## 2. Three estimators, one call each
# `PosteriorEstimator(model, estimator).train(...)` simulates (or takes given pairs) and
# fits the conditional family with `pyro_xform.fit` (validation split, early stopping);
# `posterior(x)` is a distribution over $\theta$ that samples and scores.

# %%
# Each estimator trains with its defaults (`pyro_xform.infer.ESTIMATORS`; any argument
# overrides them): the flow on minibatches of 1024 with early stopping; flow matching and
# diffusion for up to 30,000 minibatch steps, validating a moving average of their
# parameters by its exact likelihood, halving the learning rate whenever that stops
# improving by 0.02 nats, stopping at the second such validation in a row, and keeping
# the best one. Their field learns only what a linear-Gaussian fit of $\theta \mid x$
# misses: $\theta$ is standardized by its least-squares regression on $x$
# (`standardize="regression"`) and the field starts as the exact one for Gaussian data
# (`gaussian_skip=True`) — on two moons that fit is poor and the network does the work; on
# a Gaussian posterior it is already the answer.
estimators, posteriors, scores = {}, {}, {}
for name in ("flow", "flow_matching", "diffusion"):
    estimator = estimators[name] = PosteriorEstimator(simulators.two_moons, name)
    estimator.train(theta=theta, x=x, progress=False, seed=0, **({"steps": 30} if SMOKE else {}))
    with torch.no_grad():
        posteriors[name] = estimator.posterior(x_obs).sample((len(reference),))
    scores[name] = c2st(posteriors[name], reference, max_iter=200 if SMOKE else 1000)
    print(f"{name:14s} C2ST {scores[name]:.3f}")

# %% [markdown]
# ## 3. The posteriors side by side

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3), sharex=True, sharey=True)
for ax, (name, draws) in zip(axes, [("exact", reference), *posteriors.items()], strict=True):
    ax.scatter(*draws.T, s=1, alpha=0.3)
    ax.set_title(name if name == "exact" else f"{name} (C2ST {scores[name]:.2f})", fontsize=9)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
fig.savefig("amortized_posteriors.png", dpi=70)

# %% [markdown]
# ## 4. Can the posterior be trusted? Calibration over many observations
# A C2ST needs the true posterior, which a real simulator never gives. What a Bayesian
# workflow can always check is *calibration* over fresh simulations $(\theta_i, x_i)$ from
# the model: averaged over the prior, the true $\theta_i$ must look like one more draw of
# $q(\theta \mid x_i)$. Amortization makes this cheap: one batched posterior for all $x_i$.
#
# - **Simulation-based calibration** (`sbc`): the rank of each true coordinate among $L$
#   posterior draws is uniform; a U shape means overconfident, a hump underconfident.
# - **Expected coverage** (`expected_coverage`): the fraction of true parameters inside the
#   $\alpha$ highest-density region must be $\alpha$ (it uses the exact density).
# - **TARP** (`tarp`): the same for balls about random points, from draws alone; it is
#   necessary and sufficient for calibration.

# %%
theta_test, x_test = simulate(simulators.two_moons, 100 if SMOKE else 1000, seed=1)
draws = 20 if SMOKE else 100
ranks = sbc(estimators["flow"], theta_test, x_test, num_draws=draws)
print("SBC p-values per coordinate:", ranks.p_values.numpy().round(3))
axes = plot_sbc(ranks)
axes[0].figure.savefig("sbc_ranks.png", dpi=70)
coverage = {
    f"{name} HPD": expected_coverage(estimators[name], theta_test, x_test, num_draws=draws)
    for name in ("flow", "flow_matching")
}
coverage["flow TARP"] = tarp(estimators["flow"], theta_test, x_test, num_draws=draws)
for name, result in coverage.items():
    print(f"{name:20s} largest coverage error {result.error:.3f}")
ax = plot_coverage(coverage)
ax.figure.savefig("expected_coverage.png", dpi=70, bbox_inches="tight")

# %% [markdown]
# ## 5. The posterior predictive check, against the simulator
# Draws of $\theta$ from the posterior, run through the simulator again, should reproduce
# the observation. `posterior_predictive` does exactly that with the estimator's own Pyro
# model, and the draws go to ArviZ like any other posterior (`to_inference_data`; with
# ArviZ's plotting, `az.plot_ppc(idata)`). Amortization means a new observation costs one
# more call, no retraining.

# %%
predictive = posterior_predictive(estimators["flow"], x_obs, 200 if SMOKE else 2000, seed=0)
idata = to_inference_data(
    {"theta": predictive["theta"]},
    observed_data={"x": x_obs},
    posterior_predictive={"x": predictive["x"]},
)
print(idata.posterior["theta"].shape, idata.posterior_predictive["x"].shape)
fig, ax = plt.subplots(figsize=(3, 3))
ax.scatter(*predictive["x"].T, s=1, alpha=0.3, label="posterior predictive")
ax.scatter(*x_obs, color="C3", marker="x", s=60, label="observation")
ax.legend(fontsize=8)
fig.savefig("posterior_predictive.png", dpi=70, bbox_inches="tight")
