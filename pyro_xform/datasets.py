"""Offline data sets with fixed seeds and splits.

2-D toys as defined in FFJORD's code (``8gaussians``, ``checkerboard``, ``moons``,
``pinwheel``, ``rings``, ``2spirals``), scikit-learn's bundled 8x8 digits, uniformly
dequantized (as vectors or as ``(1, 8, 8)`` images), and Fashion-MNIST read from the IDX
files that Debian's ``dataset-fashion-mnist`` package installs. Nothing is downloaded.

References:
    FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models
    (Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, 2018, arXiv:1810.01367).
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FASHION_MNIST",
    "TOYS",
    "Dequantize",
    "Labelled",
    "Split",
    "bits_per_dim",
    "digits",
    "fashion_mnist",
    "load",
    "read_idx",
    "toy",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the Fashion-MNIST IDX files.
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class Split(NamedTuple):
    """A train/test pair of tensors."""

    train: Tensor
    test: Tensor


class Labelled(NamedTuple):
    """A train/test pair of tensors with their class labels (``torch.long``)."""

    train: Tensor
    test: Tensor
    train_labels: Tensor
    test_labels: Tensor


def _8gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    s = 1 / math.sqrt(2)
    centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    points = rng.standard_normal((n, 2)) * 0.5 + centers[rng.integers(0, 8, n)]
    return points / 1.414


def _checkerboard(rng, n):
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _moons(rng, n):
    from sklearn.datasets import make_moons

    x = make_moons(n_samples=n, noise=0.1, random_state=int(rng.integers(2**31)))[0]
    return x * 2 + np.array([-1.0, -0.2])


def _pinwheel(rng, n):
    radial_std, tangential_std, classes, rate = 0.3, 0.1, 5, 0.25
    rads = np.linspace(0, 2 * np.pi, classes, endpoint=False)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    labels = np.arange(n) % classes
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1).reshape(
        -1, 2, 2
    )
    return 2 * rng.permutation(np.einsum("ti,tij->tj", features, rotations))


def _rings(rng, n):
    sizes = [n - 3 * (n // 4)] + [n // 4] * 3
    radii = [1.0, 0.75, 0.5, 0.25]
    circles = []
    for m, r in zip(sizes, radii, strict=True):
        t = np.linspace(0, 2 * np.pi, m, endpoint=False)
        circles.append(np.stack([np.cos(t) * r, np.sin(t) * r], 1))
    x = rng.permutation(np.concatenate(circles)) * 3.0
    return x + rng.standard_normal(x.shape) * 0.08


def _2spirals(rng, n):
    m = n // 2
    t = np.sqrt(rng.random((n - m, 1))) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(t) * t + rng.random((n - m, 1)) * 0.5
    d1y = np.sin(t) * t + rng.random((n - m, 1)) * 0.5
    arm = np.hstack([d1x, d1y])
    x = np.vstack([arm, -arm[:m]]) / 3
    return rng.permutation(x + rng.standard_normal(x.shape) * 0.1)


#: The 2-D toy generators by name.
TOYS = {
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "moons": _moons,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "2spirals": _2spirals,
}


def toy(name: str, n: int = 10_000, seed: int = 0, dtype: torch.dtype | None = None) -> Tensor:
    """Draw ``n`` points of a 2-D toy data set with a fixed seed, in ``dtype`` (default:
    torch's default dtype, the dtype a new model has).

    Examples:
        >>> x = toy("moons", n=100, seed=1)
        >>> x.shape, x.dtype == torch.get_default_dtype()
        (torch.Size([100, 2]), True)
        >>> bool(torch.equal(x, toy("moons", n=100, seed=1)))
        True
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy data set {name!r}; choose from {sorted(TOYS)}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    return torch.as_tensor(TOYS[name](rng, n), dtype=dtype or torch.get_default_dtype())


def digits(
    dtype: torch.dtype | None = None, seed: int = 0, *, image: bool = False, labels: bool = False
) -> Split | Labelled:
    """scikit-learn's bundled 8x8 digits (1797 x 64), uniformly dequantized to ``[0, 1)``.

    Pixel values :math:`v \\in \\{0, \\dots, 16\\}` become :math:`(v + u)/17` with
    :math:`u \\sim U[0, 1)`; the 80/20 split (1437/360) is fixed. With ``image=True`` each
    digit is a ``(1, 8, 8)`` image (channels first), the small stand-in for image data;
    with ``labels=True`` the digits' classes come too (a :class:`Labelled`).

    Examples:
        >>> split = digits()
        >>> split.train.shape, split.test.shape
        (torch.Size([1437, 64]), torch.Size([360, 64]))
        >>> digits(image=True).train.shape
        torch.Size([1437, 1, 8, 8])
        >>> digits(labels=True).test_labels[:5]
        tensor([0, 8, 8, 9, 8])
    """
    from sklearn.datasets import load_digits

    bundle = load_digits()
    pixels = bundle.data.astype(np.float64)
    rng = np.random.default_rng(seed)
    order = np.random.default_rng(0).permutation(len(pixels))
    x = (pixels + rng.random(pixels.shape)) / 17.0
    x = torch.as_tensor(x[order], dtype=dtype or torch.get_default_dtype())
    n_train = int(0.8 * len(x))
    if image:
        x = x.reshape(-1, 1, 8, 8)
    if labels:
        y = torch.as_tensor(bundle.target[order].astype(np.int64))
        return Labelled(x[:n_train], x[n_train:], y[:n_train], y[n_train:])
    return Split(x[:n_train], x[n_train:])


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An array from an IDX file (the MNIST format), gzipped (``.gz``) or not: two zero
    bytes, a type code, the number of dimensions, each dimension as a big-endian int32,
    then the values in row-major order.

    Raises:
        ValueError: a file that is not IDX, or whose size does not match its header.
    """
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) != header + dtype.itemsize * math.prod(shape):
        raise ValueError(
            f"{path}: the header says shape {shape}, the file holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST's {stem}[.gz] is not in {root}. Install Debian's package "
        "(apt-get install dataset-fashion-mnist, which puts the files in "
        f"{FASHION_MNIST}) or pass root= a directory that holds the four IDX files; "
        "pyro_xform never downloads data"
    )


def fashion_mnist(
    root: str | os.PathLike | None = None, *, dtype: torch.dtype | None = None, seed: int = 0
) -> Labelled:
    """Fashion-MNIST (60,000 training and 10,000 test images of 28 x 28 garments, ten
    classes) as ``(N, 1, 28, 28)`` images uniformly dequantized to ``[0, 1)``: pixel
    :math:`v \\in \\{0, \\dots, 255\\}` becomes :math:`(v + u)/256`, :math:`u \\sim U[0, 1)`
    (bits per dimension: :func:`bits_per_dim` with ``levels=256``), with the labels.

    Read from ``root`` (default :data:`FASHION_MNIST`, where Debian's
    ``dataset-fashion-mnist`` package installs the IDX files), never downloaded.

    Raises:
        FileNotFoundError: the files are absent (the message names the package and ``root``).

    References:
        Fashion-MNIST: a novel image dataset for benchmarking machine learning algorithms
        (Xiao, Rasul, Vollgraf, 2017, arXiv:1708.07747).
    """
    root = FASHION_MNIST if root is None else Path(root)
    rng = np.random.default_rng(seed)
    parts = []
    for split in ("train", "t10k"):
        images = read_idx(_idx_file(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(root, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{root}: {split} images of shape {images.shape} and labels of shape {labels.shape} "
                "are not (N, H, W) images with N labels"
            )
        x = (images.astype(np.float64) + rng.random(images.shape)) / 256.0
        x = torch.as_tensor(x[:, None], dtype=dtype or torch.get_default_dtype())
        # (255 + u) / 256 rounds to 1 in float32 for u near 1: keep [0, 1) half-open.
        below_one = torch.nextafter(torch.ones((), dtype=x.dtype), torch.zeros((), dtype=x.dtype))
        parts.append(x.clamp_(max=below_one))
        parts.append(torch.as_tensor(labels.astype(np.int64)))
    return Labelled(parts[0], parts[2], parts[1], parts[3])


class Dequantize:
    """Fresh uniform dequantization of data on a grid of ``levels`` values in ``[0, 1)``:
    :math:`x \\mapsto (\\lfloor \\text{levels}\\cdot x \\rfloor + u)/\\text{levels}`,
    :math:`u \\sim U[0, 1)` drawn anew at every call.

    Passed to :func:`pyro_xform.fit` as ``augment=``, every minibatch gets new noise, so a
    model cannot fit the one noise draw of a fixed dequantization (on 1437 digits it does, and
    overfits); the objective is then the dequantization bound of the discrete data's
    likelihood, the standard one for discrete data (Theis et al., 2016).

    Examples:
        >>> x = digits().train[:2]
        >>> y = Dequantize(17)(x)
        >>> bool(((y * 17).floor() == (x * 17).floor()).all()), bool((y != x).any())
        (True, True)

    References:
        A note on the evaluation of generative models (Theis, van den Oord, Bethge, 2016,
        arXiv:1511.01844).
    """

    def __init__(self, levels: int = 17) -> None:
        if not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2, got {levels!r}")
        self.levels = levels

    def __call__(self, x: Tensor) -> Tensor:
        return ((x * self.levels).floor() + torch.rand_like(x)) / self.levels

    def __repr__(self) -> str:
        return f"Dequantize({self.levels})"


def load(name: str, n_train: int = 10_000, n_test: int = 5_000, dtype: torch.dtype | None = None) -> Split:
    """A fixed train/test split of a named data set (a toy, ``"digits"``, or
    ``"fashion-mnist"`` from its Debian package, see :func:`fashion_mnist`).

    Examples:
        >>> train, test = load("8gaussians", n_train=50, n_test=20)
        >>> train.shape, test.shape
        (torch.Size([50, 2]), torch.Size([20, 2]))
    """
    if name == "digits":
        return digits(dtype)
    if name == "fashion-mnist":
        return Split(*fashion_mnist(dtype=dtype)[:2])
    return Split(toy(name, n_train, seed=0, dtype=dtype), toy(name, n_test, seed=1, dtype=dtype))


def bits_per_dim(nll: float, dims: int, levels: int = 17) -> float:
    """Convert a continuous NLL in nats (per example, data scaled to ``[0, 1)``) to bits per
    dimension of the discrete data on a ``levels``-level scale:
    :math:`\\mathrm{bpd} = (\\mathrm{nll}/D + \\ln L)/\\ln 2`.

    Examples:
        >>> round(bits_per_dim(0.0, dims=64), 4)  # uniform on [0, 1)^64: log2(17)
        4.0875
    """
    return (nll / dims + math.log(levels)) / math.log(2)
