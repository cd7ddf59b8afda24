"""Embedding networks of an observation: a learned summary :math:`s_\\psi(x)` of fixed size
that conditions a family in its place, trained with it. Each takes the flat view
``(..., prod(shape))`` of an observation of shape ``shape`` and returns ``(..., features)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from .conv import ConvEncoder
from .mlp import MLP, activation_layer

__all__ = [
    "EMBEDDINGS",
    "Conv1dEmbedding",
    "Conv2dEmbedding",
    "DeepSetEmbedding",
    "MLPEmbedding",
    "embedding_network",
]


class _Flat(nn.Module):
    """Reshape the flat input to ``(N, *shape)``, apply ``self.body``, restore the batch."""

    def __init__(self, shape: Sequence[int], features: int) -> None:
        super().__init__()
        self.shape, self.features = tuple(int(s) for s in shape), features
        self.in_features = math.prod(self.shape)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"the embedding takes {self.in_features} numbers per observation (shape {self.shape}), "
                f"got {x.shape[-1]}"
            )
        batch = x.shape[:-1]
        return self.body(x.reshape(-1, *self.shape)).reshape(*batch, self.features)


class MLPEmbedding(_Flat):
    """Fully connected: the flattened observation through an MLP.

    Examples:
        >>> import torch
        >>> MLPEmbedding((3, 4), features=5)(torch.randn(7, 12)).shape
        torch.Size([7, 5])
    """

    def __init__(self, shape: Sequence[int], features: int = 32, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__(shape, features)
        self.body = nn.Sequential(nn.Flatten(), MLP(self.in_features, features, hidden, zero_last=False))


class _DeepSet(nn.Module):
    def __init__(self, element: int, features: int, hidden: int) -> None:
        super().__init__()
        self.phi = MLP(element, hidden, (hidden, hidden), zero_last=False)
        self.rho = MLP(hidden, features, (hidden,), zero_last=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.rho(self.phi(x).mean(-2))


class DeepSetEmbedding(_Flat):
    """Permutation-invariant, for a set of i.i.d. observations of shape ``(n, d)``:

    .. math:: s(x) = \\rho\\Big(\\frac1n \\sum_{i=1}^n \\phi(x_i)\\Big),

    so the summary is the same for any order of the :math:`x_i` (the mean, not the sum,
    keeps its scale apart from :math:`n`).

    Examples:
        >>> import torch
        >>> net = DeepSetEmbedding((10, 2), features=4)
        >>> x = torch.randn(3, 10, 2)
        >>> y = net(x.flatten(-2))
        >>> torch.allclose(y, net(x.flip(-2).flatten(-2)), atol=1e-6)
        True

    References:
        Deep sets (Zaheer et al., 2017, arXiv:1703.06114).
    """

    def __init__(self, shape: Sequence[int], features: int = 32, hidden: int = 64) -> None:
        if len(shape) != 2:
            raise ValueError(f"a set embedding takes observations of shape (n, d), got {tuple(shape)}")
        super().__init__(shape, features)
        self.body = _DeepSet(self.shape[1], features, hidden)


class Conv1dEmbedding(_Flat):
    """One-dimensional convolutions for time series of shape ``(T,)`` or ``(C, T)``:
    stride-2 convolutions of kernel 5 that double the channels, an average over what is
    left of the time axis at 4 points, and a dense layer.

    Examples:
        >>> import torch
        >>> Conv1dEmbedding((2, 50), features=6)(torch.randn(4, 100)).shape
        torch.Size([4, 6])
    """

    def __init__(
        self, shape: Sequence[int], features: int = 32, channels: int = 16, activation: str = "relu"
    ) -> None:
        shape = tuple(shape)
        if len(shape) not in (1, 2):
            raise ValueError(f"a 1-D convolution takes (T,) or (C, T), got {shape}")
        super().__init__((1, *shape) if len(shape) == 1 else shape, features)
        c, t = self.shape
        layers, width = [], c
        for i in range(max(1, min(3, int(math.log2(max(t, 2))) - 2))):
            layers += [
                nn.Conv1d(width, channels * 2**i, 5, stride=2, padding=2),
                activation_layer(activation),
            ]
            width = channels * 2**i
        self.body = nn.Sequential(
            *layers, nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(4 * width, features)
        )


class Conv2dEmbedding(_Flat):
    def __init__(self, shape: Sequence[int], features: int = 32, channels: int = 16) -> None:
        shape = tuple(shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"a 2-D convolution takes (H, W) or (C, H, W), got {shape}")
        super().__init__((1, *shape) if len(shape) == 2 else shape, features)
        # The image encoder of the VAE, on the flat view it takes.
        self.body = nn.Sequential(nn.Flatten(), ConvEncoder(self.shape, features, channels, hidden=128))


#: Embedding networks by name; each is built as ``cls(shape, features)``.
EMBEDDINGS = {
    "mlp": MLPEmbedding,
    "deepset": DeepSetEmbedding,
    "conv1d": Conv1dEmbedding,
    "conv2d": Conv2dEmbedding,
}


def embedding_network(name: str, shape: Sequence[int], features: int = 32) -> nn.Module:
    """An embedding network by name (:data:`EMBEDDINGS`) for observations of ``shape``.

    Examples:
        >>> import torch
        >>> embedding_network("conv2d", (1, 8, 8), features=3)(torch.randn(2, 64)).shape
        torch.Size([2, 3])
    """
    if name not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {name!r}; choose from {sorted(EMBEDDINGS)} or pass an nn.Module")
    return EMBEDDINGS[name](shape, features)
