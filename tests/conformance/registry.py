"""Every transform and family, one line each. A new one joins the conformance suite by
adding an entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import pyro_xform as px
from pyro_xform import transforms as T
from pyro_xform.nn import TimeMLP

D, C = 3, 2  # event and context sizes used throughout the suite
IMG = (1, 2, 3)  # an image event shape (channels, height, width), each size different


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[[], object]  # called inside the tests: a broken one fails a test, not collection
    kind: str  # "transform" (a Bijector) or "family" (an Xform)
    invertible: bool = True
    density: str | None = "exact"  # the family's expected log_prob_kind
    conditional: bool = False
    discrete: bool = False
    # Data in the family's support, (n, event_shape) -> float64 tensor; None: standard normal.
    data: Callable[[int, tuple], torch.Tensor] | None = None
    numpyro: bool = True  # has a JAX twin (tests/conformance/test_numpyro.py)

    @property
    def exact(self) -> bool:
        return self.density == "exact"


def transform(name: str, factory, conditional: bool = False) -> Entry:
    return Entry(name, factory, "transform", conditional=conditional)


def exact(name: str, factory, conditional: bool = False, numpyro: bool = True, data=None) -> Entry:
    """A family with an exact density and an invertible transform (flows, continuous time)."""
    return Entry(name, factory, "family", conditional=conditional, data=data, numpyro=numpyro)


def generated(name: str, factory, density: str | None, conditional=False, data=None, discrete=False) -> Entry:
    """A family whose transform is not a bijection (latent-variable, implicit, discrete)."""
    return Entry(name, factory, "family", False, density, conditional, discrete, data)


def binary(n: int, shape=(D,)) -> torch.Tensor:
    return torch.randint(0, 2, (n, *shape)).double()


def unit(n: int, shape=(D,)) -> torch.Tensor:
    return torch.rand(n, *shape, dtype=torch.float64)


def categorical(k: int) -> Callable[[int, tuple], torch.Tensor]:
    return lambda n, shape=(D,): torch.randint(0, k, (n, *shape)).double()


def fitted(layer):
    """A data-dependent layer set from random data with a context (its buffers start inert)."""
    gen = torch.Generator().manual_seed(2)
    context = torch.randn(64, C, generator=gen)
    layer.initialize(context @ torch.randn(C, D, generator=gen) + torch.randn(64, D, generator=gen), context)
    return layer


def shaken(layer):
    """A layer whose parameters are moved off their (often identity) initial values."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=gen))
    return layer


H = dict(hidden=(16, 16))
# Continuous-time entries solve tightly, so round trips and log-determinants meet the
# same tolerances as the discrete ones. Measured for the Diffusion entries: at 1e-7 the
# log-determinant of Diffusion-vp-cond misses autograd's by 9.3e-7 (the test allows 1e-6) and
# the NumPyro twins of the VE ones differ from torch by half their 1e-5; rk4 with 32 steps
# misses the log-determinant check by 5x (VE) to 900x (VP, stiff near the data end). 1e-8
# leaves at least 6x on every check.
ODE = dict(hidden=(8,), time_features=4, rtol=1e-8, atol=1e-8)
# A fixed-step solve where no check depends on the solver's error (a VAE's prior).
RK4 = dict(hidden=(8,), time_features=4, solver="rk4", steps=8)
RK4_32 = dict(solver="rk4", steps=32)
SPLINE = dict(bins=4, bound=3.0, **H)
LATENT = dict(latent=2, hidden=(16,))


REGRESSION_SKIP = dict(standardize="regression", gaussian_skip=True)


def vae(context: int = 0, particles: int = 8, features=D, **kwargs) -> px.VAE:
    return px.VAE(features, context, particles=particles, **LATENT, **kwargs)


def field(context: int) -> TimeMLP:
    return TimeMLP(D, context, hidden=(8,), time_features=4)


# fmt: off
# One entry a line, however long: the table reads down the columns.
REGISTRY = [
    transform("AffineCoupling", lambda: T.AffineCoupling(D, C, **H), conditional=True),
    transform("AffineCoupling-residual", lambda: T.AffineCoupling(D, C, residual=True, **H), True),
    transform("SplineCoupling", lambda: T.SplineCoupling(D, C, bins=4, bound=3.0, **H), True),
    transform("MAF-layer", lambda: T.AffineAutoregressive(D, C, fast="density", **H), True),
    transform("IAF-layer", lambda: T.AffineAutoregressive(D, C, fast="sampling", **H), True),
    transform("SplineAR", lambda: T.SplineAutoregressive(D, C, bins=4, bound=3.0, **H), True),
    transform("SplineAR-sampling", lambda: T.SplineAutoregressive(D, 0, fast="sampling", **H)),
    transform("Permutation", lambda: T.Permutation(D, "random", seed=1)),
    transform("LULinear", lambda: shaken(T.LULinear(D))),
    transform("TriangularAffine", lambda: shaken(T.TriangularAffine(D, loc=1.0, scale=0.5))),
    transform("ActNorm", lambda: T.ActNorm(D)),
    transform("Standardize", lambda: fitted(T.Standardize(D))),
    transform("Logit", lambda: T.Logit(D, alpha=0.05)),
    transform("ConditionalStandardize", lambda: fitted(T.ConditionalStandardize(D, C)), True),
    transform("Chain", lambda: T.Chain([T.ActNorm(D), T.AffineCoupling(D, C, **H), T.LULinear(D)]), True),
    transform("ODETransform", lambda: T.ODETransform(field(C), D, C, rtol=1e-8, atol=1e-8), True),
    # 32 steps: round trip 1.2e-7, log-det against autograd 2.8e-8 (the tests allow 1e-5, 1e-6).
    transform("ODETransform-rk4-backwards", lambda: T.ODETransform(field(0), D, time=(1.0, 0.2), **RK4_32)),

    exact("MAF", lambda: px.MAF(D, transforms=2, **H)),
    exact("MAF-cond-lu-actnorm", lambda: px.MAF(D, C, transforms=2, linear="lu", actnorm=True, **H), True),
    exact("IAF", lambda: px.IAF(D, C, transforms=2, **H), True),
    exact("RealNVP", lambda: px.RealNVP(D, C, transforms=2, **H), True),
    exact("NSF", lambda: px.NSF(D, transforms=2, **SPLINE)),
    exact("NSF-cond", lambda: px.NSF(D, C, transforms=2, **SPLINE), True),
    exact("NSF-cond-residual-standardize", lambda: px.NSF(D, C, 2, residual=True, standardize=True, **SPLINE), True),
    exact("NSF-cond-residual-regression", lambda: px.NSF(D, C, 2, residual=True, standardize="regression", **SPLINE), True),
    exact("NSF-AR-cond", lambda: px.NSF(D, C, transforms=2, variant="autoregressive", **SPLINE), True),
    exact("NSF-1d", lambda: px.NSF(1, transforms=2, bins=4, **H)),
    exact("MAF-cond-standardize-logit", lambda: px.MAF(D, C, transforms=2, standardize=True, logit=0.05, **H), True, data=unit),

    exact("FlowMatching", lambda: px.FlowMatching(D, **ODE)),
    exact("FlowMatching-cond-ot-cfg", lambda: px.FlowMatching(D, C, coupling="ot", guidance_dropout=0.2, **ODE), True),
    exact("FlowMatching-cond-cosine-film-dropout", lambda: shaken(px.FlowMatching(D, C, path="cosine", film=True, dropout=0.2, **ODE)), True),
    exact("FlowMatching-vp-cond", lambda: px.FlowMatching(D, C, path="vp", **ODE), True),
    # VP is stiff near the data end, and a FiLM field moved off its start makes the solver's
    # error there 1000x larger (7e-4 at 1e-8): FiLM's checks are the other entries'.
    exact("Diffusion-vp-cond", lambda: px.Diffusion(D, C, sde="vp", film=False, **ODE), True),
    exact("Diffusion-edm-cond", lambda: shaken(px.Diffusion(D, C, sde="edm", **ODE)), True),
    exact("FlowMatching-cond-regression-skip", lambda: px.FlowMatching(D, C, **REGRESSION_SKIP, **ODE), True),
    exact("Diffusion-ve-cond-regression-skip", lambda: px.Diffusion(D, C, sde="ve", **REGRESSION_SKIP, **ODE), True),
    exact("NSF-cond-embedded-deepset", lambda: px.Embedded(px.NSF(D, 4, transforms=2, **SPLINE), "deepset", (1, C)), True, numpyro=False),
    exact("MAF-cond-embedded-mlp", lambda: px.Embedded(px.MAF(D, 4, transforms=2, **H), "mlp", C), True, numpyro=False),

    # Latent-variable and implicit families: their density is an estimate, exact by the chain
    # rule, or absent.
    generated("VAE", lambda: vae(), "estimate"),
    generated("VAE-cond-iaf-flowprior", lambda: vae(C, posterior="iaf", prior=px.MAF(2, C, 2, **H), scale="learned"), "estimate", True),
    generated("VAE-bernoulli-fmprior", lambda: vae(likelihood="bernoulli", prior=px.FlowMatching(2, **RK4), particles=4), "estimate", data=binary),
    generated("VAE-cb-nsfposterior", lambda: vae(likelihood="continuous_bernoulli", posterior=px.NSF(2, 32, 1, bins=4, **H), particles=100), "estimate", data=unit),
    generated("Autoencoder", lambda: px.Autoencoder(D, density=px.MAF(2, transforms=2, **H), **LATENT), None),
    generated("Autoencoder-noise-cond", lambda: px.Autoencoder(D, C, noise=0.5, particles=16, density=px.NSF(2, C, 1, **H), **LATENT), "estimate", True),
    generated("GAN", lambda: px.GAN(D, **LATENT), None),
    generated("GAN-cond", lambda: px.GAN(D, C, **LATENT), None, conditional=True),
    generated("DiscreteAutoregressive", lambda: px.DiscreteAutoregressive(D, hidden=(16,)), "exact", data=binary, discrete=True),
    generated("DiscreteAutoregressive-cond-4", lambda: px.DiscreteAutoregressive(D, C, categories=4, hidden=(16,)), "exact", True, categorical(4), True),

    # Image event shapes: every family, the flat networks on the flattened image. The
    # continuous-time families are tested on images in tests/test_images.py (an entry's tight
    # ODE solve cost 12-28 s of the suite).
    exact("MAF-image", lambda: px.MAF(IMG, transforms=2, actnorm=True, **H)),
    exact("IAF-image-cond", lambda: px.IAF(IMG, C, transforms=2, **H), True),
    exact("RealNVP-image", lambda: px.RealNVP(IMG, transforms=2, standardize=True, **H)),
    exact("RealNVP-multiscale-cond", lambda: px.RealNVP((1, 4, 4), C, 2, architecture="image", channels=8, logit=None), True, numpyro=False),
    exact("NSF-multiscale", lambda: px.NSF((1, 4, 4), transforms=2, bins=4, bound=3.0, architecture="image", channels=8, logit=None), numpyro=False),
    exact("NSF-image-cond", lambda: px.NSF(IMG, C, transforms=2, **SPLINE), True),
    generated("VAE-image", lambda: vae(features=IMG), "estimate"),
    generated("VAE-image-cond-cb", lambda: vae(C, features=IMG, likelihood="continuous_bernoulli"), "estimate", True, unit),
    generated("Autoencoder-image-noise", lambda: px.Autoencoder(IMG, noise=0.5, particles=16, density=px.MAF(2, transforms=2, **H), **LATENT), "estimate"),
    generated("GAN-image-cond", lambda: px.GAN(IMG, C, **LATENT), None, conditional=True),
    generated("DiscreteAutoregressive-image", lambda: px.DiscreteAutoregressive(IMG, hidden=(16,)), "exact", data=binary, discrete=True),
]
# fmt: on
