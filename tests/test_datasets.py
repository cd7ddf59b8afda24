import math

import pytest
import torch

from pyro_xform import datasets


@pytest.mark.parametrize("name", sorted(datasets.TOYS))
def test_toys_are_seeded_and_finite(name):
    a = datasets.toy(name, n=1001, seed=5)
    assert a.shape == (1001, 2) and torch.isfinite(a).all()
    assert torch.equal(a, datasets.toy(name, n=1001, seed=5))
    assert not torch.equal(a, datasets.toy(name, n=1001, seed=6))
    train, test = datasets.load(name, n_train=100, n_test=50)
    assert train.shape == (100, 2) and test.shape == (50, 2)


def test_toy_geometry():
    cb = datasets.toy("checkerboard", 20000)
    assert cb.abs().max() <= 4.0
    # checkerboard: every point lies in a "black" cell of the 4x4 board
    cells = torch.floor(cb / 2).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all() or ((cells[:, 0] + cells[:, 1]) % 2 == 1).all()
    radii = datasets.toy("rings", 4000).norm(dim=1)
    for r in (0.75, 1.5, 2.25, 3.0):
        assert ((radii - r).abs() < 0.3).float().mean() > 0.2
    g = datasets.toy("8gaussians", 8000)
    assert g.norm(dim=1).mean() == pytest.approx(4 / 1.414, abs=0.2)


def test_digits_split_and_dequantization():
    split = datasets.digits()
    assert split.train.shape == (1437, 64) and split.test.shape == (360, 64)
    x = torch.cat(split)
    assert x.min() >= 0 and x.max() < 1
    # each value (v + u)/17 recovers the integer pixel v
    levels = torch.floor(x * 17)
    assert levels.max() <= 16
    assert torch.equal(datasets.digits().train, split.train)


def test_bits_per_dim():
    assert datasets.bits_per_dim(0.0, 64) == pytest.approx(math.log2(17))
    assert datasets.bits_per_dim(-64 * math.log(17), 64) == pytest.approx(0.0)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown"):
        datasets.toy("spiral")


def _write_idx(path, array, gz):
    import gzip

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    raw = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def test_fashion_mnist_reads_idx_files_and_never_downloads(tmp_path):
    """The reader takes gzipped or plain IDX files from a directory; absent files name the
    Debian package and the root argument."""
    import numpy as np

    images = np.arange(3 * 4 * 4).reshape(3, 4, 4) % 256
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", [1, 2, 3], gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:2] + 250, gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", [9, 0], gz=False)
    data = datasets.fashion_mnist(tmp_path)
    assert data.train.shape == (3, 1, 4, 4) and data.test.shape == (2, 1, 4, 4)
    assert data.train_labels.tolist() == [1, 2, 3] and data.test_labels.dtype == torch.long
    # Dequantized: the pixel is the floor of 256 x, and the values stay in [0, 1).
    assert torch.equal((data.train[:, 0] * 256).floor(), torch.as_tensor(images, dtype=data.train.dtype))
    assert float(data.test.max()) < 1 and float(data.train.min()) >= 0
    with pytest.raises(FileNotFoundError, match=r"dataset-fashion-mnist.*root="):
        datasets.fashion_mnist(tmp_path / "elsewhere")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        datasets.read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", images, gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header"):
        datasets.read_idx(tmp_path / "short")


@pytest.mark.skipif(not datasets.FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    train, test = datasets.load("fashion-mnist")
    assert train.shape == (60_000, 1, 28, 28) and test.shape == (10_000, 1, 28, 28)
    assert 0 <= float(train.min()) and float(train.max()) < 1


def test_digits_as_images():
    flat, images = datasets.digits(), datasets.digits(image=True)
    assert images.train.shape == (1437, 1, 8, 8) and torch.equal(images.test.reshape(360, 64), flat.test)


def test_digits_with_labels_follow_the_images():
    from sklearn.datasets import load_digits

    labelled, plain = datasets.digits(labels=True), datasets.digits()
    assert torch.equal(labelled.train, plain.train) and labelled.test_labels.dtype == torch.long
    bundle = load_digits()
    # Each test image is its bundle row, dequantized: the floor of 17 x recovers the pixels.
    pixels = torch.as_tensor(bundle.data, dtype=labelled.test.dtype)
    rows = [int((pixels == (17 * x).floor()).all(1).nonzero()[0]) for x in labelled.test[:20]]
    assert labelled.test_labels[:20].tolist() == bundle.target[rows].tolist()
