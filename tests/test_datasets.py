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
