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
# # Pyro's VAE tutorial our way, on Fashion-MNIST
#
# Three priors, flow matching and diffusion on the pixels, and inpainting with NUTS.
#
# Pyro's VAE tutorial trains a VAE on MNIST by SVI. Here it is done with pyro_xform on
# Fashion-MNIST, and taken further, because every family is a Pyro distribution over images
# of event shape `(1, 28, 28)`:
#
# 1. a convolutional VAE with three priors over its 16-dimensional code — the standard
#    normal of Pyro's tutorial, a normalizing flow trained jointly (our default) and a latent
#    diffusion model fitted to the codes afterwards — compared by their importance-weighted
#    bound (IWAE) on test images, in bits per dimension;
# 2. flow matching and diffusion on the pixels themselves, with a U-Net;
# 3. an image inverse problem: a garment seen only in its top half, through noise, restored
#    with the VAE as a learned prior and NUTS in the prior's base space.
#
# The images come from Debian's `dataset-fashion-mnist` package (`apt-get install
# dataset-fashion-mnist`); where it is absent, the 8x8 digits stand in as `(1, 8, 8)` images.
# Nothing is downloaded. With the environment variable `CI` set, every loop runs a few steps on
# a small subset (smoke mode). The full run is sized for a GPU; on a CPU it takes about an hour.

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
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
torch.set_num_threads(2)
try:
    data, name, levels = px.datasets.fashion_mnist(), "Fashion-MNIST", 256
except FileNotFoundError:
    data, name, levels = px.datasets.digits(image=True, labels=True), "digits", 17
train, test = data.train, data.test
if SMOKE:
    train, test = train[:512], test[:64]
shape = tuple(train.shape[1:])
dims = train[0].numel()
print(f"{name}: {len(train)} training and {len(test)} test images of shape {shape}")


def steps(full: int, cpu: int | None = None) -> int:
    """Training steps: a few in smoke mode, fewer on a CPU than on a GPU."""
    if SMOKE:
        return 3
    return full if device.type == "cuda" or cpu is None else cpu


def show(images, title, path, rows=8):
    """A grid of the first ``8 rows`` images, eight a row, saved to ``path``."""
    images = images[: 8 * rows].detach().cpu().clamp(0, 1)
    fig, axes = plt.subplots(rows, 8, figsize=(4, 0.5 * rows + 0.3))
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image[0], cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    for ax in list(axes.flat)[len(images) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


show(test, f"{name}: test images", "data.png")

# %% [markdown]
# ## 1. A convolutional VAE and its prior
#
# `px.VAE(shape)` picks a convolutional encoder and decoder for an image event shape. The
# model is Pyro's: `pyro.sample("z", prior)`, `pyro.sample("x", p(x | z), obs=x)` under a
# plate, with the amortized guide $q(z \mid x)$; `fit` runs SVI on the ELBO. Pixels are
# dequantized afresh in every batch, $x = (v + u)/L$ with $u \sim U[0, 1)$, so the
# density is of continuous data and its bits per dimension are comparable across families
# (`px.datasets.bits_per_dim`).
#
# Three priors over the same code: `prior=None` is Pyro's standard normal; the default is a
# small neural spline flow trained jointly with the encoder and decoder.

# %%
settings = dict(batch_size=64, lr=1e-3, augment=px.datasets.Dequantize(levels), progress=False, seed=0)
vaes = {}
for label, prior in (("normal prior", None), ("flow prior (default)", "flow")):
    torch.manual_seed(0)
    vaes[label] = px.VAE(shape, latent=16, prior=prior).to(device)
    px.fit(vaes[label], train, steps=steps(20_000, 3000), **settings)

# %% [markdown]
# The third prior is latent diffusion: the normal-prior VAE's encoder and decoder are kept and
# a `Diffusion` model is fitted to the codes' aggregate posterior
# $q(z) = \frac1N \sum_i q(z \mid x_i)$ (`px.fit_prior`, four draws per image), then made the
# VAE's prior. Its density is the probability-flow ODE's, so the bound stays a bound.

# %%
latent_diffusion = px.VAE(shape, latent=16, prior=None).to(device)
latent_diffusion.load_state_dict(vaes["normal prior"].state_dict())
px.fit_prior(
    latent_diffusion,
    px.Diffusion(16).to(device),
    train.to(device),
    per_row=4,
    steps=steps(20_000, 4000),
    batch_size=512,
    progress=False,
    seed=0,
)
vaes["latent diffusion prior"] = latent_diffusion

# %% [markdown]
# The importance-weighted bound with $K$ posterior draws,
# $\log p(x) \ge \mathbb E \log \frac1K \sum_k p(x \mid z_k) p(z_k) / q(z_k \mid x)$,
# tightens as $K$ grows; lower bits per dimension is better.

# %%
particles = 10 if SMOKE else 1000
scored = test[:16] if SMOKE else test[:1000]
print(f"test bits/dim, IWAE K={particles}, {len(scored)} test images")
for label, vae in vaes.items():
    vae.eval()
    with torch.no_grad():
        bound = torch.cat([vae.iwae(b.to(device), particles=particles, chunk=50) for b in scored.split(50)])
    print(f"  VAE, {label:<24} {px.datasets.bits_per_dim(-float(bound.mean()), dims, levels):.3f}")
    with torch.no_grad():
        drawn = vae.decode(vae.prior_distribution().sample((64,)))
    show(drawn, f"VAE, {label}", f"vae_{label.split()[0]}.png")

# %% [markdown]
# ## 2. Flow matching and diffusion on the pixels
#
# For an image event shape `FlowMatching` and `Diffusion` take a U-Net velocity (or noise)
# network with the time embedded at every residual block. Both are
# `TransformedDistribution`s whose transform is an ODE from the base normal to the images, so
# they also have a density (Hutchinson's estimate of the divergence makes it cheap at 784
# dimensions; `trace="exact"` is there too).
#
# The flow-matching model is class-conditional: the one-hot label is its context, dropped
# one time in ten in training (`guidance_dropout=0.1`), so the one network is both
# $v(x, t \mid c)$ and $v(x, t)$, and `model(c, guidance=w)` samples the classifier-free
# guided field $v_\varnothing + w (v_c - v_\varnothing)$: $w = 1$ is the conditional model,
# larger $w$ trades diversity for class fidelity.

# %%
labels = torch.nn.functional.one_hot(data.train_labels[: len(train)], 10).to(train.dtype)
flow_matching = px.FlowMatching(shape, context=10, guidance_dropout=0.1).to(device)
diffusion = px.Diffusion(shape).to(device)
torch.manual_seed(0)
px.fit(flow_matching, train, context=labels, steps=steps(50_000, 1500), **settings)
torch.manual_seed(0)
px.fit(diffusion, train, steps=steps(50_000, 1500), **settings)
solve = dict(solver="rk4", steps=2 if SMOKE else 16)
scored = test[: 8 if SMOKE else 100].to(device)
scored_labels = torch.nn.functional.one_hot(data.test_labels[: len(scored)], 10).to(scored)
with torch.no_grad():
    nll_fm = -float(flow_matching(scored_labels, trace="hutchinson", **solve).log_prob(scored).mean())
    nll_diffusion = -float(diffusion(trace="hutchinson", **solve).log_prob(scored).mean())
print(f"flow matching, given the label: test bits/dim {px.datasets.bits_per_dim(nll_fm, dims, levels):.3f}")
print(f"diffusion: test bits/dim {px.datasets.bits_per_dim(nll_diffusion, dims, levels):.3f}")

# %% [markdown]
# Eight draws of every class (a row each), without and with guidance, and unconditional
# draws of the diffusion model by Karras et al.'s Heun sampler (18 steps, 35 network
# evaluations).

# %%
classes = torch.eye(10, dtype=train.dtype, device=device).repeat_interleave(8, 0)
flow_matching.eval()
diffusion.eval()
with torch.no_grad():
    for w in (1.0, 3.0):
        torch.manual_seed(0)
        drawn = flow_matching.sample((), classes, guidance=w, **solve)
        title = f"flow matching, a class a row, guidance w = {w:g}"
        show(drawn, title, f"flow_matching_w{w:g}.png", rows=10)
    drawn = diffusion.sample((64,), sampler="heun", steps=2 if SMOKE else 18)
show(drawn, "diffusion (Heun, 35 evaluations)", "diffusion.png")

# %% [markdown]
# ## 3. Inpainting with a learned prior and NUTS
#
# We see the top half of a test garment through noise of standard deviation 0.05,
# $y = A x + \varepsilon$, and want the whole image with its uncertainty. The prior of $x$ is
# the flow-prior VAE's decoder mean at its code, $x = G(z)$: not invertible, so $x$ has no
# density of its own, but `BaseReparam` makes the site `x` a draw of the code $z$ (16
# numbers, under the flow prior) and the deterministic image $G(z)$, and NUTS samples the
# code.

# %%
vae = vaes["flow prior (default)"].cpu().eval().requires_grad_(False)
keep = torch.zeros(shape, dtype=torch.bool)
keep[:, : shape[1] // 2] = True
noise = 0.05


def inpainting(y):
    x = pyro.sample("x", vae())
    pyro.sample("y", dist.Normal(x[..., keep], noise).to_event(1), obs=y)


truth = test[0]
y = truth[keep] + noise * torch.randn(int(keep.sum()))
base_model = pyro.poutine.reparam(inpainting, config={"x": BaseReparam()})
mcmc = MCMC(
    NUTS(base_model),
    num_samples=5 if SMOKE else 400,
    warmup_steps=5 if SMOKE else 300,
    num_chains=1 if SMOKE else 2,
    disable_progbar=True,
)
mcmc.run(y)
print(az.summary(to_inference_data(mcmc), var_names=["x_base"]).head(6))

# %% [markdown]
# Each posterior code decodes to a whole garment (Pyro's `Predictive` replays the model at the
# draws): the mean is the estimate, the standard deviation shows where the hidden half is
# uncertain.

# %%
draws = pyro.infer.Predictive(base_model, posterior_samples=mcmc.get_samples(), return_sites=["x"])
decoded = draws(y)["x"]
mean, sd = decoded.mean(0), decoded.std(0)
observed = torch.full(shape, float("nan"))
observed[keep] = y
fig, axes = plt.subplots(1, 5, figsize=(10, 2.4))
panels = [truth, observed, mean, sd, decoded[-1]]
titles = ["truth", "observed half", "posterior mean", "posterior sd", "one draw"]
for ax, image, title in zip(axes, panels, titles, strict=True):
    ax.imshow(image[0], cmap="gray_r")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
fig.savefig("inpainting.png", dpi=70)
print("mean error of the posterior mean on the hidden half:", float((mean - truth)[~keep].abs().mean()))
