"""The families: each an :class:`~pyro_xform.core.Xform`."""

from .continuous import ContinuousTimeXform
from .diffusion import Diffusion
from .flow_matching import FlowMatching
from .flows import IAF, MAF, NSF, Flow, RealNVP

#: Every family by name, for rebuilding a model from a checkpoint's config.
FAMILIES = {cls.__name__: cls for cls in (MAF, IAF, RealNVP, NSF, FlowMatching, Diffusion)}

__all__ = [
    "FAMILIES",
    "IAF",
    "MAF",
    "NSF",
    "ContinuousTimeXform",
    "Diffusion",
    "Flow",
    "FlowMatching",
    "RealNVP",
]
