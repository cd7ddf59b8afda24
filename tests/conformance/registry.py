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


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[[], object]
    kind: str  # "transform" (a Bijector) or "family" (an Xform)
    invertible: bool = True
    exact: bool = True
    conditional: bool = False
    discrete: bool = False
    # Data in the family's support, (n) -> float64 tensor; None: standard normal.
    data: Callable[[int], torch.Tensor] | None = None


def binary(n: int) -> torch.Tensor:
    return torch.randint(0, 2, (n, D)).double()


def unit(n: int) -> torch.Tensor:
    return torch.rand(n, D, dtype=torch.float64)


def categorical(k: int) -> Callable[[int], torch.Tensor]:
    return lambda n: torch.randint(0, k, (n, D)).double()


def fitted(layer):
    """A data-dependent layer set from random data with a context (its buffers start inert)."""
    gen = torch.Generator().manual_seed(2)
    context = torch.randn(64, C, generator=gen)
    layer.initialize(context @ torch.randn(C, D, generator=gen) + torch.randn(64, D, generator=gen), context)
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

REGISTRY = [
    # transforms
    Entry("AffineCoupling", lambda: T.AffineCoupling(D, C, **H), "transform", conditional=True),
    Entry(
        "AffineCoupling-residual",
        lambda: T.AffineCoupling(D, C, residual=True, **H),
        "transform",
        conditional=True,
    ),
    Entry(
        "SplineCoupling",
        lambda: T.SplineCoupling(D, C, bins=4, bound=3.0, **H),
        "transform",
        conditional=True,
    ),
    Entry(
        "MAF-layer", lambda: T.AffineAutoregressive(D, C, fast="density", **H), "transform", conditional=True
    ),
    Entry(
        "IAF-layer", lambda: T.AffineAutoregressive(D, C, fast="sampling", **H), "transform", conditional=True
    ),
    Entry(
        "SplineAR",
        lambda: T.SplineAutoregressive(D, C, bins=4, bound=3.0, **H),
        "transform",
        conditional=True,
    ),
    Entry("SplineAR-sampling", lambda: T.SplineAutoregressive(D, 0, fast="sampling", **H), "transform"),
    Entry("Permutation", lambda: T.Permutation(D, "random", seed=1), "transform"),
    Entry("LULinear", lambda: T.LULinear(D), "transform"),
    Entry("ActNorm", lambda: T.ActNorm(D), "transform"),
    Entry(
        "ConditionalStandardize",
        lambda: fitted(T.ConditionalStandardize(D, C)),
        "transform",
        conditional=True,
    ),
    Entry(
        "Chain",
        lambda: T.Chain([T.ActNorm(D), T.AffineCoupling(D, C, **H), T.LULinear(D)]),
        "transform",
        conditional=True,
    ),
    Entry(
        "ODETransform",
        lambda: T.ODETransform(TimeMLP(D, C, hidden=(8,), time_features=4), D, C, rtol=1e-8, atol=1e-8),
        "transform",
        conditional=True,
    ),
    # 32 steps: round trip 1.2e-7, log-det against autograd 2.8e-8 (the tests allow 1e-5, 1e-6).
    Entry(
        "ODETransform-rk4-backwards",
        lambda: T.ODETransform(
            TimeMLP(D, 0, hidden=(8,), time_features=4), D, time=(1.0, 0.2), solver="rk4", steps=32
        ),
        "transform",
    ),
    # families
    Entry("MAF", lambda: px.MAF(D, transforms=2, **H), "family"),
    Entry(
        "MAF-cond-lu-actnorm",
        lambda: px.MAF(D, C, transforms=2, linear="lu", actnorm=True, **H),
        "family",
        conditional=True,
    ),
    Entry("IAF", lambda: px.IAF(D, C, transforms=2, **H), "family", conditional=True),
    Entry("RealNVP", lambda: px.RealNVP(D, C, transforms=2, **H), "family", conditional=True),
    Entry("NSF", lambda: px.NSF(D, transforms=2, bins=4, bound=3.0, **H), "family"),
    Entry("NSF-cond", lambda: px.NSF(D, C, transforms=2, bins=4, bound=3.0, **H), "family", conditional=True),
    Entry(
        "NSF-cond-residual-standardize",
        lambda: px.NSF(D, C, transforms=2, bins=4, bound=3.0, residual=True, standardize=True, **H),
        "family",
        conditional=True,
    ),
    Entry(
        "NSF-AR-cond",
        lambda: px.NSF(D, C, transforms=2, variant="autoregressive", bins=4, bound=3.0, **H),
        "family",
        conditional=True,
    ),
    Entry("NSF-1d", lambda: px.NSF(1, transforms=2, bins=4, **H), "family"),
]

REGISTRY += [
    Entry("FlowMatching", lambda: px.FlowMatching(D, **ODE), "family"),
    Entry(
        "FlowMatching-cond-ot-cfg",
        lambda: px.FlowMatching(D, C, coupling="ot", guidance_dropout=0.2, **ODE),
        "family",
        conditional=True,
    ),
    Entry("FlowMatching-cosine", lambda: px.FlowMatching(D, path="cosine", **ODE), "family"),
    Entry(
        "FlowMatching-vp-cond", lambda: px.FlowMatching(D, C, path="vp", **ODE), "family", conditional=True
    ),
    Entry("Diffusion-vp-cond", lambda: px.Diffusion(D, C, **ODE), "family", conditional=True),
    Entry("Diffusion-ve", lambda: px.Diffusion(D, sde="ve", **ODE), "family"),
    Entry(
        "FlowMatching-cond-regression-skip",
        lambda: px.FlowMatching(D, C, standardize="regression", gaussian_skip=True, **ODE),
        "family",
        conditional=True,
    ),
    Entry(
        "Diffusion-ve-cond-regression-skip",
        lambda: px.Diffusion(D, C, sde="ve", standardize="regression", gaussian_skip=True, **ODE),
        "family",
        conditional=True,
    ),
]

# Latent-variable and implicit families: not invertible; their density is an estimate, exact
# by the chain rule, or absent.
LATENT = dict(latent=2, hidden=(16,))
REGISTRY += [
    Entry("VAE", lambda: px.VAE(D, particles=8, **LATENT), "family", invertible=False, exact=False),
    Entry(
        "VAE-cond-iaf-flowprior",
        lambda: px.VAE(
            D,
            C,
            posterior="iaf",
            prior=px.MAF(2, C, transforms=2, **H),
            scale="learned",
            particles=8,
            **LATENT,
        ),
        "family",
        invertible=False,
        exact=False,
        conditional=True,
    ),
    Entry(
        "VAE-bernoulli-fmprior",
        lambda: px.VAE(D, likelihood="bernoulli", prior=px.FlowMatching(2, **RK4), particles=4, **LATENT),
        "family",
        invertible=False,
        exact=False,
        data=binary,
    ),
    Entry(
        "VAE-cb-nsfposterior",
        lambda: px.VAE(
            D, likelihood="continuous_bernoulli", posterior=px.NSF(2, 32, transforms=1, bins=4, **H), **LATENT
        ),
        "family",
        invertible=False,
        exact=False,
        data=unit,
    ),
    Entry(
        "Autoencoder",
        lambda: px.Autoencoder(D, density=px.MAF(2, transforms=2, **H), **LATENT),
        "family",
        invertible=False,
        exact=False,
    ),
    Entry(
        "Autoencoder-noise-cond",
        lambda: px.Autoencoder(
            D, C, noise=0.5, particles=16, density=px.NSF(2, C, transforms=1, **H), **LATENT
        ),
        "family",
        invertible=False,
        exact=False,
        conditional=True,
    ),
    Entry("GAN", lambda: px.GAN(D, **LATENT), "family", invertible=False, exact=False),
    Entry(
        "GAN-cond", lambda: px.GAN(D, C, **LATENT), "family", invertible=False, exact=False, conditional=True
    ),
    Entry(
        "DiscreteAutoregressive",
        lambda: px.DiscreteAutoregressive(D, hidden=(16,)),
        "family",
        invertible=False,
        discrete=True,
        data=binary,
    ),
    Entry(
        "DiscreteAutoregressive-cond-4",
        lambda: px.DiscreteAutoregressive(D, C, categories=4, hidden=(16,)),
        "family",
        invertible=False,
        discrete=True,
        conditional=True,
        data=categorical(4),
    ),
]
