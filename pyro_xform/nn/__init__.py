"""Networks shared by the families: MLPs, MADE and time-conditioned fields on vectors
(:mod:`~pyro_xform.nn.mlp`), and on images a convolutional encoder and decoder
(:mod:`~pyro_xform.nn.conv`), a PixelCNN (:mod:`~pyro_xform.nn.pixelcnn`) and a
time-conditioned U-Net (:mod:`~pyro_xform.nn.unet`); embeddings of observations
(:mod:`~pyro_xform.nn.embedding`).
Every network takes and returns the flat view ``(..., features)`` of its data, so the
transforms around it need not know the shape."""

from .conv import ARCHITECTURES, ConvDecoder, ConvEncoder, image_network
from .embedding import (
    EMBEDDINGS,
    Conv1dEmbedding,
    Conv2dEmbedding,
    DeepSetEmbedding,
    MLPEmbedding,
    embedding_network,
)
from .mlp import MADE, MLP, Residual, TimeEmbedding, TimeMLP, activation_layer
from .pixelcnn import MaskedConv2d, PixelCNN
from .unet import TimeUNet

__all__ = [
    "ARCHITECTURES",
    "EMBEDDINGS",
    "MADE",
    "MLP",
    "Conv1dEmbedding",
    "Conv2dEmbedding",
    "ConvDecoder",
    "ConvEncoder",
    "DeepSetEmbedding",
    "MLPEmbedding",
    "MaskedConv2d",
    "PixelCNN",
    "Residual",
    "TimeEmbedding",
    "TimeMLP",
    "TimeUNet",
    "activation_layer",
    "embedding_network",
    "image_network",
]
