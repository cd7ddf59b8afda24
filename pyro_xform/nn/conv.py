"""Convolutional encoder and decoder for images, on the flat view ``(..., C H W)`` like
every network here: the encoder and decoder of a VAE or autoencoder on image data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import activation_layer

__all__ = ["ARCHITECTURES", "ConvDecoder", "ConvEncoder", "halvings", "image_network"]

#: The networks a family can be built with: ``"auto"`` (the image network for an image
#: event shape of at least 8 x 8 pixels, else the MLP), ``"mlp"`` or ``"image"`` (the
#: family's image network: convolutions for a VAE or autoencoder, a U-Net for a field).
ARCHITECTURES = ("auto", "mlp", "image")


def image_network(shape: Sequence[int], architecture: str) -> bool:
    """Whether a family with event shape ``shape`` gets its image network under
    ``architecture`` (``"auto"``: for ``(C, H, W)`` with ``H, W >= 8``; ``"image"``:
    always, ``"mlp"``: never).

    Raises:
        ValueError: an unknown architecture, or ``"image"`` for a shape that is not ``(C, H, W)``.

    Examples:
        >>> image_network((1, 28, 28), "auto"), image_network((1, 2, 3), "auto"), image_network((5,), "auto")
        (True, False, False)
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if architecture == "image" and len(shape) != 3:
        raise ValueError(f"architecture='image' needs an image event shape (C, H, W), got {tuple(shape)}")
    return architecture == "image" or (architecture == "auto" and len(shape) == 3 and min(shape[1:]) >= 8)


def halvings(shape: Sequence[int], most: int = 2) -> int:
    """How many times an image of ``shape`` ``(C, H, W)`` can be halved (at most ``most``)
    and stay at least 2 x 2."""
    side = min(shape[1:])
    return max(0, min(most, int(math.log2(side / 2)))) if side >= 2 else 0


def _sizes(shape: Sequence[int], levels: int) -> list[tuple[int, int]]:
    """The spatial size at each level, halving with rounding up (a stride-2 convolution)."""
    sizes = [tuple(shape[1:])]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ConvEncoder(nn.Module):
    """:math:`x \\mapsto y`: a 3 x 3 convolution, ``halvings(shape)`` stride-2 convolutions
    that double the channels, then a dense layer (with the context added) and a linear
    output of size ``out``.

    Args:
        shape: the image shape ``(C, H, W)``.
        out: output size.
        channels: the width at full resolution.
        hidden: width of the dense layer.
        context: context size (0: none).
        activation: activation name.

    Examples:
        >>> import torch
        >>> net = ConvEncoder((1, 8, 8), out=6, channels=8)
        >>> net(torch.randn(5, 64)).shape
        torch.Size([5, 6])
    """

    def __init__(
        self,
        shape: Sequence[int],
        out: int,
        channels: int = 32,
        hidden: int = 256,
        context: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.shape, levels = tuple(shape), halvings(shape)
        layers, width = [nn.Conv2d(shape[0], channels, 3, padding=1), activation_layer(activation)], channels
        for _ in range(levels):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), activation_layer(activation)]
            width *= 2
        self.convs = nn.Sequential(*layers)
        h, w = _sizes(shape, levels)[-1]
        self.dense = nn.Linear(width * h * w, hidden)
        self.context_layer = nn.Linear(context, hidden, bias=False) if context else None
        self.out = nn.Sequential(activation_layer(activation), nn.Linear(hidden, out))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        lead = x.shape[:-1]
        h = self.dense(self.convs(x.reshape(-1, *self.shape)).flatten(1)).reshape(*lead, -1)
        if self.context_layer is not None and context is not None:
            h = h + self.context_layer(context)
        return self.out(h)


class ConvDecoder(nn.Module):
    """:math:`z \\mapsto` an image's parameters: a dense layer of the latent (and context)
    onto a small grid, then per level a nearest-neighbour upsampling to the next size and
    a 3 x 3 convolution that halves the channels, and a last 3 x 3 convolution to
    ``per_pixel`` values a pixel (e.g. 2 for a mean and a scale), flattened channel-major:
    the first ``C H W`` numbers are the first value of every pixel.

    Args:
        latent: size of ``z``.
        shape: the image shape ``(C, H, W)``.
        per_pixel: outputs per pixel and channel.
        channels: the width at full resolution.
        hidden: width of the dense layer.
        context: context size (0: none).
        activation: activation name.

    Examples:
        >>> import torch
        >>> net = ConvDecoder(4, (1, 28, 28), per_pixel=2, channels=8)
        >>> net(torch.randn(5, 4)).shape
        torch.Size([5, 1568])
    """

    def __init__(
        self,
        latent: int,
        shape: Sequence[int],
        per_pixel: int = 1,
        channels: int = 32,
        hidden: int = 256,
        context: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.shape, self.per_pixel = tuple(shape), per_pixel
        levels = halvings(shape)
        self.sizes = _sizes(shape, levels)
        self.width = channels * 2**levels
        h, w = self.sizes[-1]
        self.first = nn.Linear(latent, hidden)
        self.context_layer = nn.Linear(context, hidden, bias=False) if context else None
        self.grid = nn.Sequential(activation_layer(activation), nn.Linear(hidden, self.width * h * w))
        self.act = activation_layer(activation)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels * 2 ** (i + 1), channels * 2**i, 3, padding=1) for i in reversed(range(levels))
        )
        self.head = nn.Conv2d(channels, shape[0] * per_pixel, 3, padding=1)

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.first(z)
        if self.context_layer is not None and context is not None:
            h = h + self.context_layer(context)
        lead = h.shape[:-1]
        size = self.sizes[-1]
        h = self.act(self.grid(h)).reshape(-1, self.width, *size)
        for conv, size in zip(self.convs, reversed(self.sizes[:-1]), strict=True):
            h = self.act(conv(F.interpolate(h, size=size, mode="nearest")))
        return self.head(h).reshape(*lead, -1)
