"""The families: each an :class:`~pyro_xform.core.Xform`."""

from .flows import IAF, MAF, NSF, Flow, RealNVP

#: Every family by name, for rebuilding a model from a checkpoint's config.
FAMILIES = {cls.__name__: cls for cls in (MAF, IAF, RealNVP, NSF)}

__all__ = ["FAMILIES", "IAF", "MAF", "NSF", "Flow", "RealNVP"]
