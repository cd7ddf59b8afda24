"""A time-conditioned U-Net: the velocity or noise field of flow matching and diffusion on
images, taking and returning the flat view of the image like every field."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import TimeEmbedding, check_dropout

__all__ = ["TimeUNet"]


def _norm(channels: int) -> nn.GroupNorm:
    # Groups of at most 8 channels' worth each, as many as divide the width.
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class _ResBlock(nn.Module):
    """:math:`h + \\mathrm{conv}(\\sigma(\\mathrm{GN}(\\mathrm{conv}(\\sigma(\\mathrm{GN}(h)))
    + W e)))` with the embedding :math:`e` of time and context added between the convs;
    the last conv starts at zero, so the block starts as the identity (or its 1x1 skip)."""

    def __init__(self, channels_in: int, channels_out: int, embedding: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(channels_in), nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embed = nn.Linear(embedding, channels_out)
        self.norm2, self.conv2 = _norm(channels_out), nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        a = self.conv1(F.silu(self.norm1(h))) + self.embed(e)[:, :, None, None]
        a = self.conv2(self.dropout(F.silu(self.norm2(a))))
        return self.skip(h) + a


class _Attention(nn.Module):
    """Multi-head self-attention over the pixels, residual, its output projection at zero."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention needs channels divisible by heads; {channels} by {heads}")
        self.norm, self.heads = _norm(channels), heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor) -> Tensor:
        n, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(n, 3, self.heads, c // self.heads, -1).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.out(a.transpose(-1, -2).reshape(n, c, height, width))


class TimeUNet(nn.Module):
    """A field :math:`f(x, t, c)` on images of shape ``(C, H, W)``: a U-Net of residual
    blocks at ``len(multipliers)`` resolutions (halved by strided convolutions, restored
    by nearest-neighbour upsampling to the skip's size, so any ``H, W`` works), group
    normalization, optional self-attention at the lowest resolution, and the embedded
    time and context,

    .. math:: e = \\mathrm{MLP}(\\phi(t), c),

    added inside every residual block. The output convolution starts at zero (the field
    starts as the zero function). Input and output are the flat view ``(..., C H W)``.

    Args:
        shape: the image shape ``(C, H, W)``.
        context: context size (0: none).
        channels: the width at full resolution.
        multipliers: the width at each resolution, as multiples of ``channels`` (the
            resolutions stop at 2 x 2, so a small image may use fewer).
        blocks: residual blocks per resolution on the way down (one more on the way up).
        attention: self-attention at the lowest resolution (and in the middle).
        heads: attention heads.
        time_features: size of the Fourier time embedding.
        dropout: dropout inside the residual blocks.

    Examples:
        >>> net = TimeUNet((1, 8, 8), context=3, channels=8)
        >>> net(torch.randn(5, 64), torch.tensor(0.3), torch.randn(5, 3)).shape
        torch.Size([5, 64])

    References:
        U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger,
        Fischer, Brox, 2015, arXiv:1505.04597). Denoising Diffusion Probabilistic Models
        (Ho, Jain, Abbeel, 2020, arXiv:2006.11239). Diffusion Models Beat GANs on Image
        Synthesis (Dhariwal, Nichol, 2021, arXiv:2105.05233).
    """

    def __init__(
        self,
        shape: Sequence[int],
        context: int = 0,
        channels: int = 32,
        multipliers: Sequence[int] = (1, 2, 2),
        blocks: int = 1,
        attention: bool = False,
        heads: int = 4,
        time_features: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"shape must be (channels, height, width), got {shape!r}")
        if not (isinstance(channels, int) and channels > 0 and multipliers and blocks >= 1):
            raise ValueError("channels, multipliers and blocks must be positive")
        check_dropout(dropout)
        self.shape, self.features, self.context_features = shape, shape[0] * shape[1] * shape[2], context
        width = 4 * channels
        self.time = TimeEmbedding(time_features)
        self.embed = nn.Sequential(
            nn.Linear(self.time.out_features + context, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.stem = nn.Conv2d(shape[0], channels, 3, padding=1)
        # No resolution below 2 x 2 (group normalization needs more than one value a group):
        # a small image gets fewer resolutions than multipliers names.
        levels = min(len(multipliers), 1 + int(math.log2(min(shape[1:]) / 2)) if min(shape[1:]) >= 2 else 1)
        widths = [channels * m for m in multipliers[:levels]]
        self.down, self.downsample, skips, current = nn.ModuleList(), nn.ModuleList(), [channels], channels
        for level, w in enumerate(widths):
            for _ in range(blocks):
                self.down.append(_ResBlock(current, w, width, dropout))
                current = w
                skips.append(current)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(current, current, 3, stride=2, padding=1))
                skips.append(current)
        self.middle = nn.ModuleList([_ResBlock(current, current, width, dropout) for _ in range(2)])
        self.attention = nn.ModuleList(
            [_Attention(current, heads), _Attention(widths[-1], heads)] if attention else []
        )
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(_ResBlock(current + skips.pop(), w, width, dropout))
                current = w
            if level > 0:
                self.upsample.append(nn.Conv2d(current, current, 3, padding=1))
        self.head = nn.Sequential(_norm(current), nn.SiLU(), nn.Conv2d(current, shape[0], 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.levels, self.blocks = len(widths), blocks

    def _embedding(self, t: Tensor, context: Tensor | None, lead: torch.Size) -> Tensor:
        e = self.time(t)
        e = e.expand(*lead, e.shape[-1])
        if context is not None:
            e = torch.cat([e, context.expand(*lead, context.shape[-1])], -1)
        return self.embed(e.reshape(-1, e.shape[-1]))

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        lead = x.shape[:-1]
        e = self._embedding(t, context, lead)
        h = self.stem(x.reshape(-1, *self.shape))
        skips, down = [h], iter(self.down)
        for level in range(self.levels):
            for _ in range(self.blocks):
                h = next(down)(h, e)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        attention = iter(self.attention)
        for i, block in enumerate(self.middle):
            h = block(h, e)
            if i == 0 and self.attention:
                h = next(attention)(h)
        up = iter(self.up)
        for level in range(self.levels):
            for _ in range(self.blocks + 1):
                h = next(up)(torch.cat([h, skips.pop()], 1), e)
            if level == 0 and self.attention:
                h = next(attention)(h)
            if level < self.levels - 1:
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
                h = self.upsample[level](h)
        return self.head(h).reshape(*lead, self.features)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context={self.context_features}"
