"""Networks shared by the families: MLPs, MADE and time-conditioned fields on vectors
(:mod:`~pyro_xform.nn.mlp`), and a time-conditioned U-Net on images
(:mod:`~pyro_xform.nn.unet`). Every field takes and returns the flat view
``(..., features)`` of its data, so the transforms around it need not know the shape."""

from .mlp import MADE, MLP, Residual, TimeEmbedding, TimeMLP, activation_layer
from .unet import TimeUNet

__all__ = ["MADE", "MLP", "Residual", "TimeEmbedding", "TimeMLP", "TimeUNet", "activation_layer"]
