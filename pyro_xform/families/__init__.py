"""The families: each an :class:`~pyro_xform.core.Xform`."""

from .autoencoder import Autoencoder
from .autoregressive import DiscreteAutoregressive
from .continuous import ContinuousTimeXform
from .diffusion import Diffusion
from .embedded import Embedded
from .flow_matching import FlowMatching
from .flows import IAF, MAF, NSF, Flow, RealNVP
from .gan import GAN
from .vae import VAE

#: Every family by name, for rebuilding a model from a checkpoint's config.
FAMILIES = {
    cls.__name__: cls
    for cls in (
        MAF,
        IAF,
        RealNVP,
        NSF,
        FlowMatching,
        Diffusion,
        VAE,
        Autoencoder,
        GAN,
        DiscreteAutoregressive,
    )
}

__all__ = [
    "FAMILIES",
    "GAN",
    "IAF",
    "MAF",
    "NSF",
    "VAE",
    "Autoencoder",
    "ContinuousTimeXform",
    "Diffusion",
    "DiscreteAutoregressive",
    "Embedded",
    "Flow",
    "FlowMatching",
    "RealNVP",
]
