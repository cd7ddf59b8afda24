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
# # A VAE with three priors, and a GAN, on digits
#
# A VAE is a *stochastic* transform of a base distribution: $z \sim p(z)$,
# $x \sim p_\theta(x \mid z)$. Its prior $p(z)$ is itself a distribution we can learn — and
# in pyro_xform any family with an exact density can be that prior: a normalizing flow, a
# flow-matching model or a diffusion model (which makes it a *latent diffusion* model).
#
# In this notebook we
#
# 1. train a VAE on scikit-learn's 8x8 digits (dequantized) with Pyro's SVI through `fit`,
# 2. measure it by its importance-weighted bound (IWAE), in bits per dimension,
# 3. swap its Gaussian prior for a neural spline flow and for a diffusion model, each fitted
#    to the VAE's aggregate posterior, and compare the three bounds — the encoder and decoder
#    are the same, only the prior changes,
# 4. train a GAN on the same data; it has no density, so we compare it by its samples.
#
# With the environment variable `CI` set, every loop runs only a few steps (smoke mode).

# %%
import copy
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # run as a script: no window, files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import pyro_xform as px
from pyro_xform.datasets import bits_per_dim
from pyro_xform.metrics import sliced_wasserstein

SMOKE = bool(os.environ.get("CI"))
torch.manual_seed(0)
torch.set_num_threads(2)

split = px.datasets.digits()
train, test = split.train, split.test
if SMOKE:
    test = test[:40]
print(train.shape, test.shape)

# %% [markdown]
# ## 1. A VAE, trained by the ELBO
# `VAE(features, latent=...)` is a Pyro model/guide pair (`vae.model`, `vae.guide`); `fit`
# minimizes the negative ELBO with Pyro's `TraceMeanField_ELBO` (analytic KL: both prior and
# posterior are Gaussian). The decoder gives a mean and a scale per pixel. Two things matter on
# 1437 images: fresh dequantization noise in every minibatch (`augment=Dequantize(17)`), and
# early stopping on a held-out 15% (`validation=0.15`), which keeps the best parameters.

# %%
steps = 30 if SMOKE else 4000
vae = px.VAE(64, latent=16, hidden=(512, 256), prior=None, particles=10 if SMOKE else 1000)
result = px.fit(
    vae,
    train,
    steps=steps,
    lr=1e-3,
    batch_size=128,
    schedule="cosine",
    validation=0.15,
    patience=15,
    eval_every=10 if SMOKE else 50,
    augment=px.datasets.Dequantize(17),
    progress=False,
    seed=0,
)
print(result)

# %% [markdown]
# ## 2. The importance-weighted bound
# Calling the VAE gives its marginal $p(x)$ as a distribution. Its `log_prob` is the IWAE
# estimate with $K$ posterior samples, $\log \frac1K \sum_k p(x\mid z_k)p(z_k)/q(z_k\mid x)$:
# `log_prob_kind == "estimate"`, a lower bound in expectation that tightens as $K$ grows,
# against the single-sample ELBO.


# %%
def bpd(model, particles=None):
    torch.manual_seed(0)
    with torch.no_grad():
        return bits_per_dim(-float(model(particles=particles).log_prob(test).mean()), 64)


with torch.no_grad():
    torch.manual_seed(0)
    elbo = bits_per_dim(-float(vae.elbo(test).mean()), 64)
print(f"ELBO {elbo:.3f} bits/dim; IWAE K=10: {bpd(vae, 10):.3f}; K={vae.particles}: {bpd(vae):.3f}")
print(vae().log_prob_kind)

# %% [markdown]
# ## 3. Learned priors: a flow and a diffusion model in latent space
# The prior that makes the ELBO tightest is the *aggregate posterior*
# $q(z) = \frac1N\sum_i q(z \mid x_i)$, which is rarely Gaussian. `px.fit_prior(vae, prior, data)`
# draws codes from it and fits any exact family to them with that family's own objective
# (maximum likelihood for a flow, denoising score matching for diffusion), then plugs it in.
# The diffusion prior's density is the exact probability-flow ODE density, so the IWAE bound
# stays a bound.

# %%
prior_steps = 20 if SMOKE else 2000
with_flow = copy.deepcopy(vae)
px.fit_prior(
    with_flow,
    px.NSF(16, transforms=4, hidden=(128, 128), bins=8, actnorm=True),
    train,
    per_row=16,
    steps=prior_steps,
    validation=0.15,
    progress=False,
    seed=0,
)
with_diffusion = copy.deepcopy(vae)
px.fit_prior(
    with_diffusion,
    px.Diffusion(16, hidden=(256, 256, 256), rtol=1e-4, atol=1e-4),
    train,
    per_row=16,
    steps=2 * prior_steps,
    batch_size=512,
    validation=0.15,
    progress=False,
    seed=0,
)
k = 10 if SMOKE else 100  # a diffusion prior costs one ODE solve per particle
table = {
    "Gaussian prior": bpd(vae, k),
    "NSF prior": bpd(with_flow, k),
    "diffusion prior": bpd(with_diffusion, k),
}
for name, value in table.items():
    print(f"{name:16s} IWAE (K={k}) {value:.3f} bits/dim")

# %% [markdown]
# Samples of the three VAEs: each decodes prior draws (with the decoder's noise).


# %%
def show(ax_row, samples, title):
    for ax, image in zip(ax_row, samples[: len(ax_row)], strict=True):
        ax.imshow(image.clamp(0, 1).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    ax_row[0].set_title(title, loc="left", fontsize=9)


torch.manual_seed(1)
with torch.no_grad():
    rows = {
        "data": test[:10],
        "VAE, Gaussian prior": vae().sample((10,)),
        "VAE, NSF prior": with_flow().sample((10,)),
        "VAE, diffusion prior": with_diffusion().sample((10,)),
    }
fig, axes = plt.subplots(len(rows) + 1, 10, figsize=(8, 1 * (len(rows) + 1)))
for ax_row, (title, samples) in zip(axes, rows.items(), strict=False):
    show(ax_row, samples, title)

# %% [markdown]
# ## 4. A GAN: samples, no density
# A GAN's generator is a deterministic transform of noise. It is an implicit model:
# `log_prob_kind is None`, and `log_prob` says so instead of returning a number. We train it
# with the adversarial objective (non-saturating loss with an R1 penalty, two Adam optimizers
# in the same `fit` loop) and compare it with the VAEs by a sample-based metric, the sliced
# Wasserstein distance to the test images.

# %%
gan = px.GAN(64, latent=16, hidden=(256, 256))
px.fit(
    gan,
    train,
    steps=30 if SMOKE else 5000,
    lr=2e-4,
    batch_size=128,
    augment=px.datasets.Dequantize(17),
    progress=False,
    seed=0,
)
try:
    gan().log_prob(test)
except NotImplementedError as error:
    print("log_prob:", error)
torch.manual_seed(1)
with torch.no_grad():
    gan_samples = gan().sample((test.shape[0],))
    for name, model in [("VAE, NSF prior", with_flow), ("GAN", gan)]:
        print(
            f"{name:16s} sliced W1 to test {sliced_wasserstein(model().sample((test.shape[0],)), test):.4f}"
        )
    print(f"{'train images':16s} sliced W1 to test {sliced_wasserstein(train[: test.shape[0]], test):.4f}")
show(axes[-1], gan_samples, "GAN")
fig.tight_layout()
fig.savefig("vae_priors_and_gan.png", dpi=90)

# %% [markdown]
# `bench/digits.py` runs the same comparison at full length for every family with a
# likelihood (NSF, MAF, flow matching, diffusion, the VAE with both priors, a discrete
# autoregressive model on binarized digits) against a Gaussian and a 10-component GMM.
