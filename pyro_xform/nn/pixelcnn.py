"""A PixelCNN: masked convolutions whose outputs at each position depend only on the
positions before it in the flat (channel-major, then raster) order, the image twin of
MADE for a discrete autoregressive model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedConv2d", "PixelCNN"]


def _groups(channels: int, colours: int) -> Tensor:
    """The colour channel each of ``channels`` feature maps belongs to, in even blocks."""
    return torch.arange(channels) * colours // channels


class MaskedConv2d(nn.Conv2d):
    """A convolution from feature maps of colours ``groups_in`` to maps of colours
    ``groups_out`` that sees a map of an earlier colour everywhere in its window, a map of
    the same colour only at the pixels before the centre in raster order (and the centre
    itself if ``center``), and a map of a later colour nowhere.

    Args:
        groups_in, groups_out: the colour of each input and output map.
        kernel: odd kernel size.
        center: whether a map sees its own colour at the centre pixel (PixelCNN's mask
            "B"; the first layer, mask "A", does not).
    """

    def __init__(self, groups_in: Tensor, groups_out: Tensor, kernel: int, center: bool) -> None:
        super().__init__(len(groups_in), len(groups_out), kernel, padding=kernel // 2)
        before = torch.zeros(kernel, kernel)
        before[: kernel // 2] = 1
        before[kernel // 2, : kernel // 2 + int(center)] = 1
        gi, go = groups_in[None, :, None, None], groups_out[:, None, None, None]
        mask = (gi < go).float() + (gi == go).float() * before
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """Logits of every conditional :math:`p(x_i \\mid x_{<i}, c)` of an image of shape
    ``(C, H, W)``, in the flat order (channel-major, then raster): a 7 x 7 mask-"A"
    convolution, ``layers`` residual blocks of a 3 x 3 mask-"B" convolution, and a 1 x 1
    mask-"B" convolution to ``categories`` logits a pixel and channel; the context is added
    to every hidden map. Input and output are flat: ``(..., C H W)`` to
    ``(..., C H W, categories)``, as :class:`~pyro_xform.nn.MADE`'s.

    Args:
        shape: the image shape ``(C, H, W)``.
        categories: values a pixel takes.
        channels: hidden feature maps (at least ``C``).
        layers: residual blocks.
        context: context size (0: none).

    Examples:
        >>> import torch
        >>> net = PixelCNN((1, 4, 4), categories=3, channels=8, layers=1)
        >>> x = torch.zeros(2, 16)
        >>> net(x).shape
        torch.Size([2, 16, 3])

    References:
        Pixel Recurrent Neural Networks (van den Oord, Kalchbrenner, Kavukcuoglu, 2016,
        arXiv:1601.06759). Conditional Image Generation with PixelCNN Decoders (van den Oord
        et al., 2016, arXiv:1606.05328).
    """

    def __init__(
        self, shape: Sequence[int], categories: int, channels: int = 64, layers: int = 4, context: int = 0
    ) -> None:
        super().__init__()
        self.shape, self.categories = tuple(shape), categories
        colours = self.shape[0]
        if channels < colours:
            raise ValueError(f"channels must be at least the image's {colours} channels, got {channels}")
        image, hidden = torch.arange(colours), _groups(channels, colours)
        out = torch.arange(colours).repeat_interleave(categories)
        self.first = MaskedConv2d(image, hidden, 7, center=False)
        self.blocks = nn.ModuleList(MaskedConv2d(hidden, hidden, 3, center=True) for _ in range(layers))
        self.last = MaskedConv2d(hidden, out, 1, center=True)
        self.context_layer = nn.Linear(context, channels, bias=False) if context else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        lead = x.shape[:-1]
        h = self.first(x.reshape(-1, *self.shape))
        if self.context_layer is not None and context is not None:
            bias = self.context_layer(context).expand(*lead, h.shape[1])
            h = h + bias.reshape(-1, h.shape[1], 1, 1)
        for block in self.blocks:
            h = h + block(F.relu(h))
        logits = self.last(F.relu(h))  # (N, C * K, H, W), channel c's K logits together
        c, height, width = self.shape
        logits = logits.reshape(-1, c, self.categories, height, width).permute(0, 1, 3, 4, 2)
        return logits.reshape(*lead, c * height * width, self.categories)
