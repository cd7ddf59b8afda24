import numpy as np
import pytest
import torch

from pyro_xform.metrics import frechet_distance


def test_frechet_distance_is_the_closed_form_of_two_gaussians():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(0)

    def draw(n):
        return torch.randn(n, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g).double()

    a, b = draw(400), draw(300)
    cov_a, cov_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    cross = np.real(sqrtm(cov_a @ cov_b))  # the Σ_a Σ_b product does not commute here
    mean = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    expected = mean + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_refuses_bad_samples():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="one dimension"):
        frechet_distance(x, torch.randn(10, 4))
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance(x, x[:1])
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(x, torch.full((10, 3), float("nan")))
