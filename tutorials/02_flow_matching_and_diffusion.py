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
# # One data set, three transforms: a flow, flow matching and diffusion
#
# In pyro_xform a flow-matching model and a diffusion model are distributions with an
# **exact** log-density, like a normalizing flow: both are the flow of an ODE from a
# Gaussian base to the data, and the instantaneous change of variables gives
# $\log p(x)$ in the same solve that maps $x$ back to the base. In this notebook we
#
# 1. fit a neural spline flow (maximum likelihood), flow matching (conditional flow
#    matching) and diffusion (denoising score matching) to the same 2-D data with the one
#    `fit` call,
# 2. compare their test log-likelihoods and plot their densities side by side,
# 3. trade accuracy for speed at sampling time (solver and number of function evaluations),
#    and draw diffusion samples with fixed-step samplers: Karras et al.'s Heun and
#    stochastic samplers, DPM-Solver++(2M), the reverse SDE and DDIM,
# 4. fine-tune the flow-matching model by maximum likelihood — possible only because its
#    density is differentiable.
#
# With the environment variable `CI` set, every loop runs only a few steps (smoke mode).

# %%
import os
import sys
import time

import matplotlib

if "ipykernel" not in sys.modules:  # run as a script: no window, files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import pyro_xform as px

SMOKE = bool(os.environ.get("CI"))
torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. Fit three families with one call
# Each family has a default objective: maximum likelihood for the NSF, `"cfm"` for flow
# matching, `"dsm"` for diffusion. A continuous-time step is cheaper than a spline-flow
# step, so the two get three times as many steps (about the same wall clock).

# %%
train, test = px.datasets.load("8gaussians", n_train=20_000, n_test=2_000)
steps = 20 if SMOKE else 1500
models = {
    "NSF": (px.NSF(2), steps),
    "FlowMatching": (px.FlowMatching(2, coupling="independent"), 3 * steps),
    # Karras et al.'s design (EDM), the default: on low-dimensional data it beats VP
    "Diffusion": (px.Diffusion(2), 3 * steps),
}
for name, (model, n) in models.items():
    result = px.fit(model, train, steps=n, batch_size=512, lr=5e-3, schedule="cosine", seed=0, progress=False)
    print(f"{name:<13} objective={result.objective:<4} {result.seconds:5.1f} s")

# %% [markdown]
# ## 2. Exact test log-likelihoods and densities
# `log_prob` of the continuous-time families integrates the ODE from the data to the base
# with an adaptive solver (dopri5) and the exact divergence of the velocity field.

# %%
with torch.no_grad():
    for name, (model, _) in models.items():
        start = time.perf_counter()
        nll = float(-model().log_prob(test).mean())
        print(f"{name:<13} test NLL {nll:.3f} nats ({time.perf_counter() - start:.1f} s)")

# %%
n_grid = 40 if SMOKE else 120
axis = torch.linspace(-4.5, 4.5, n_grid)
grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].hist2d(*test.T.numpy(), bins=80, range=[[-4.5, 4.5]] * 2, cmap="viridis")
axes[0].set_title("test data")
with torch.no_grad():
    for ax, (name, (model, _)) in zip(axes[1:], models.items(), strict=True):
        density = model().log_prob(grid).exp().reshape(n_grid, n_grid)
        ax.imshow(density.numpy(), origin="lower", extent=[-4.5, 4.5, -4.5, 4.5], cmap="viridis")
        ax.set_title(f"{name} density")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig("densities.png", dpi=80)

# %% [markdown]
# ## 3. Sampling: solvers, NFE and the diffusion samplers
# Calling a model takes the solver settings for that distribution: `solver`, `steps` or
# `nfe`, tolerances, and the trace estimator. The sliced Wasserstein distance to the test
# set measures sample quality whatever the sampler. A diffusion's fixed-step samplers
# cost one network evaluation a step (Heun and the stochastic sampler two): DPM-Solver++
# is the one to use at about 20 evaluations; the reverse SDE needs hundreds of steps but
# its noise corrects the errors of the learned score.

# %%
fm = models["FlowMatching"][0]
diffusion = models["Diffusion"][0]
n = test.shape[0]
with torch.no_grad():
    for solver, nfe in [("euler", 4), ("euler", 32), ("midpoint", 8), ("rk4", 8), ("rk4", 32)]:
        x = fm.sample((n,), solver=solver, nfe=nfe)
        print(
            f"flow matching, {solver:<8} NFE {nfe:>3}: sliced W1 {px.metrics.sliced_wasserstein(x, test):.3f}"
        )
    samplers = [
        ("ode", {}),
        ("heun", {"steps": 18}),
        ("stochastic", {"steps": 18}),
        ("dpm", {"steps": 20}),
        ("sde", {"steps": 200}),
        ("ddim", {"steps": 20}),
    ]
    for sampler, kwargs in samplers:
        x = diffusion.sample((n,), sampler=sampler, **kwargs)
        print(f"diffusion, {sampler:<10} sampler: sliced W1 {px.metrics.sliced_wasserstein(x, test):.3f}")

# %% [markdown]
# With Hutchinson's trace the log-density is an unbiased *estimate*, and the distribution
# says so: its `log_prob_kind` is `"estimate"`.

# %%
with torch.no_grad():
    d = fm(trace="hutchinson", probes=4)
    print(d.log_prob_kind, float(-d.log_prob(test[:500]).mean()))

# %% [markdown]
# ## 4. Fine-tune flow matching by maximum likelihood
# The log-density is differentiable in the parameters, so the same model can continue
# training with the exact likelihood (here with a cheap fixed-step solver).

# %%
fm_mle = px.FlowMatching(2, solver="rk4", steps=8)
fm_mle.load_state_dict(fm.state_dict())
with torch.no_grad():
    before = float(-fm_mle().log_prob(test).mean())
px.fit(
    fm_mle, train, objective="mle", steps=5 if SMOKE else 150, batch_size=256, lr=1e-4, seed=0, progress=False
)
with torch.no_grad():
    after = float(-fm_mle().log_prob(test).mean())
print(f"test NLL with rk4 x 8 steps: {before:.3f} before, {after:.3f} after maximum likelihood")
