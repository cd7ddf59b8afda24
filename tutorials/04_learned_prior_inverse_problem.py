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
# # A learned prior for a Bayesian inverse problem: inpainting digits with NUTS
#
# We see only the left half of an 8x8 digit, with noise, $y = A x + \varepsilon$, and want
# the whole image *with its uncertainty*. A generative model trained on digits is the prior:
# here the decoder of a VAE, $x = G(z)$, $z \sim \mathcal N(0, I)$. The decoder is not
# invertible, so $x$ has no density in pixel space; but inference does not need one. With
# `pyro_xform.infer.BaseReparam` the site `x` becomes $z \sim \mathcal N(0, I)$ plus the
# deterministic $x = G(z)$, and NUTS samples the 8 numbers $z$ instead of 64 pixels.
#
# 1. train a VAE on digits (Pyro SVI through `fit`),
# 2. write the inverse problem as a Pyro model with the VAE as the prior of `x`,
# 3. run NUTS in base space, summarize with ArviZ, and look at the posterior images.
#
# With the environment variable `CI` set, every loop runs only a few steps (smoke mode).

# %%
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # run as a script: no window, files only
    matplotlib.use("Agg")
import arviz as az
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

import pyro_xform as px
from pyro_xform.infer import BaseReparam, to_inference_data

SMOKE = bool(os.environ.get("CI"))
torch.manual_seed(0)
torch.set_num_threads(2)
split = px.datasets.digits()

# %% [markdown]
# ## 1. The prior: a VAE trained on digits

# %%
vae = px.VAE(64, latent=8, hidden=(256, 256))
px.fit(
    vae,
    split.train,
    steps=20 if SMOKE else 3000,
    lr=1e-3,
    batch_size=128,
    validation=0.15,
    augment=px.datasets.Dequantize(17),
    progress=False,
    seed=0,
)
vae.eval().requires_grad_(False)

# %% [markdown]
# ## 2. The inverse problem as a Pyro model
# The measurement keeps the left four columns of the image and adds noise of standard
# deviation 0.05. `vae()` is the VAE's marginal distribution; under `BaseReparam` its value is
# the decoder's mean at $z$.

# %%
keep = torch.zeros(8, 8, dtype=torch.bool)
keep[:, :4] = True
keep = keep.flatten()
noise = 0.05


def model(y):
    x = pyro.sample("x", vae())
    pyro.sample("y", dist.Normal(x[..., keep], noise).to_event(1), obs=y)


truth = split.test[3]
y = truth[keep] + noise * torch.randn(int(keep.sum()))
base_model = pyro.poutine.reparam(model, config={"x": BaseReparam()})

# %% [markdown]
# ## 3. NUTS over $z$
# Two chains (one in smoke mode), so that ArviZ can compute $\hat R$.

# %%
mcmc = MCMC(
    NUTS(base_model),
    num_samples=10 if SMOKE else 500,
    warmup_steps=10 if SMOKE else 300,
    num_chains=1 if SMOKE else 2,
    disable_progbar=True,
)
mcmc.run(y)
idata = to_inference_data(mcmc)
print(az.summary(idata, var_names=["x_base"]).head(8))

# %% [markdown]
# Each posterior draw of $z$ decodes to a whole image (Pyro's `Predictive` replays the model
# at the draws). Their mean is the estimate; their standard deviation shows where the
# missing half is uncertain.

# %%
draws = pyro.infer.Predictive(base_model, posterior_samples=mcmc.get_samples(), return_sites=["x"])
decoded = draws(y)["x"]
mean, sd = decoded.mean(0), decoded.std(0)
observed = torch.full((64,), float("nan"))
observed[keep] = y
fig, axes = plt.subplots(1, 5, figsize=(10, 2.4))
for ax, image, title in zip(
    axes,
    [truth, observed, mean, sd, decoded[-1]],
    ["truth", "observed half", "posterior mean", "posterior sd", "one draw"],
    strict=True,
):
    ax.imshow(image.reshape(8, 8), cmap="gray_r")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
fig.savefig("inverse_problem.png", dpi=70)
print("error of the posterior mean on the hidden half:", float((mean - truth)[~keep].abs().mean()))
