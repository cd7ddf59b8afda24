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
# # A normalizing flow as a Pyro prior
#
# A pyro_xform family is a learned transform of a standard normal into the data, and a
# Pyro distribution. In this notebook we
#
# 1. fit a neural spline flow to the two-moons toy set with `pyro_xform.fit`,
# 2. plot its density and its samples,
# 3. use it as the prior of a small Pyro model — a noisy 2-D measurement of a point that
#    lies on the moons — and infer the point with SVI and with NUTS.
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
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro_xform as px

SMOKE = bool(os.environ.get("CI"))
torch.manual_seed(0)
pyro.set_rng_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. Fit a flow to data
# `datasets.load` returns a fixed train/test split; nothing is downloaded.

# %%
train, test = px.datasets.load("moons", n_train=10_000, n_test=2_000)
flow = px.NSF(features=2, transforms=4, hidden=(64, 64))
result = px.fit(
    flow, train, steps=20 if SMOKE else 2000, batch_size=512, lr=3e-3, validation=0.1, seed=0, progress=False
)
print(result)
with torch.no_grad():
    print("test NLL:", float(-flow().log_prob(test).mean()))

# %% [markdown]
# ## 2. Density and samples
# The flow's `log_prob` is exact, so the density can be drawn on a grid.

# %%
grid = torch.linspace(-4, 4, 200)
xx, yy = torch.meshgrid(grid, grid, indexing="xy")
points = torch.stack([xx, yy], -1)
with torch.no_grad():
    density = flow().log_prob(points).exp()
    samples = flow().sample((2000,))

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
axes[0].scatter(*test.T, s=1)
axes[0].set_title("data")
axes[1].pcolormesh(xx, yy, density, shading="auto")
axes[1].set_title("flow density")
axes[2].scatter(*samples.T, s=1, color="C1")
axes[2].set_title("flow samples")
for ax in axes:
    ax.set_xlim(-4, 4)
    ax.set_ylim(-4, 4)
    ax.set_aspect("equal")
fig.tight_layout()
fig.savefig("flow_prior_density.png", dpi=70)

# %% [markdown]
# ## 3. The flow as a prior
# A point $z$ lies on the moons, $z \sim p_\text{flow}$, and we see it through noise:
# $y = z + \varepsilon$, $\varepsilon \sim \mathcal N(0, 0.5^2 I)$. The flow goes straight
# into `pyro.sample`; freeze it with `eval()` so only the latent is inferred.

# %%
flow.eval().requires_grad_(False)
y_obs = torch.tensor([0.0, 1.0])


def model(y=None):
    z = pyro.sample("z", flow())
    return pyro.sample("y", dist.Normal(z, 0.5).to_event(1), obs=y)


# %% [markdown]
# ### SVI with an autoguide

# %%
guide = AutoNormal(model)
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
for _ in range(10 if SMOKE else 1500):
    loss = svi.step(y_obs)
svi_draws = Predictive(model, guide=guide, num_samples=1000, return_sites=["z"])(y_obs)["z"]
print("SVI posterior mean:", svi_draws.mean(0))

# %% [markdown]
# ### NUTS
# NUTS needs the gradient of the prior's log-density with respect to $z$; the flow gives it.

# %%
mcmc = MCMC(
    NUTS(model), num_samples=20 if SMOKE else 800, warmup_steps=20 if SMOKE else 400, disable_progbar=True
)
mcmc.run(y_obs)
nuts_draws = mcmc.get_samples()["z"]
print("NUTS posterior mean:", nuts_draws.mean(0))

# %%
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(*samples.T, s=1, color="0.8", label="prior (flow)")
ax.scatter(*nuts_draws.T, s=3, label="NUTS")
ax.scatter(*svi_draws[:300].T, s=3, label="SVI (AutoNormal)")
ax.scatter(*y_obs, marker="x", color="k", s=60, label="observation")
ax.legend(markerscale=4, fontsize=7)
ax.set_aspect("equal")
fig.savefig("flow_prior_posterior.png", dpi=70)

# %% [markdown]
# The NUTS posterior follows the moon's curved shape near the observation; the mean-field
# AutoNormal guide can only give an axis-aligned ellipse. A flow-shaped guide is the
# subject of a later tutorial.
#
# ## 4. The same posterior with NumPyro's NUTS
# Pyro trains the prior; NumPyro samples faster. `pyro_xform.numpyro.to_numpyro` copies the
# trained weights into a NumPyro distribution whose `log_prob` matches the torch one (see
# `bench/nuts.py` for the speed-up in effective samples per second). It needs the `jax`
# extra, `pip install "pyro-xform[jax]"`; `import pyro_xform` alone never loads JAX.

# %%
import arviz as az
import jax
import numpy as np
import numpyro
import numpyro.distributions as ndist

from pyro_xform.numpyro import to_numpyro

prior = to_numpyro(flow)  # the same flow, now a NumPyro distribution


def numpyro_model(y=None):
    z = numpyro.sample("z", prior)
    return numpyro.sample("y", ndist.Normal(z, 0.5).to_event(1), obs=y)


jax_mcmc = numpyro.infer.MCMC(
    numpyro.infer.NUTS(numpyro_model),
    num_warmup=20 if SMOKE else 400,
    num_samples=20 if SMOKE else 800,
    num_chains=1 if SMOKE else 2,  # in smoke mode one chain: each costs seconds of compiling
    progress_bar=False,
)
jax_mcmc.run(jax.random.key(0), jax.numpy.asarray(y_obs.numpy()))
jax_draws = jax_mcmc.get_samples(group_by_chain=True)["z"]  # (chains, draws, 2)
print("NumPyro NUTS posterior mean:", jax_draws.mean((0, 1)))

# %% [markdown]
# ArviZ summarizes both: effective sample sizes and $\hat R$ from the chains.
# (`from_dict` takes the groups as keywords in ArviZ 0.x and as one dict in 1.x.)

# %%
groups = {"posterior": {"z": np.asarray(jax_draws)}}
try:
    idata = az.from_dict(**groups)
except TypeError:
    idata = az.from_dict(groups)
print(az.summary(idata))

# %%
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(*samples.T, s=1, color="0.8", label="prior (flow)")
ax.scatter(*np.asarray(jax_draws).reshape(-1, 2).T, s=3, label="NumPyro NUTS")
ax.scatter(*nuts_draws.T, s=3, label="Pyro NUTS")
ax.scatter(*y_obs, marker="x", color="k", s=60, label="observation")
ax.legend(markerscale=4, fontsize=7)
ax.set_aspect("equal")
fig.savefig("flow_prior_numpyro.png", dpi=70)
