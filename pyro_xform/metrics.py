"""Sample-based distances between a model's draws and held-out data (for every family,
including those without a density)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["c2st", "frechet_distance", "sliced_wasserstein"]


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 200, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two samples of equal size,

    .. math:: \\mathrm{SW}_1(x, y) = \\mathbb E_{\\theta \\sim U(S^{D-1})}
        W_1(\\theta^\\top x, \\theta^\\top y),

    each 1-D distance from sorted projections, the expectation over ``projections`` random
    directions drawn with ``seed`` (so two calls compare alike).

    Examples:
        >>> x = torch.randn(1000, 2)
        >>> sliced_wasserstein(x, x)
        0.0
        >>> round(sliced_wasserstein(x, x + 1.0), 1) > 0
        True

    References:
        Sliced and Radon Wasserstein Barycenters of Measures (Bonneel, Rabin, Peyré,
        Pfister, 2015, doi:10.1007/s10851-014-0506-3).
    """
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"need two samples of equal shape (N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], projections, generator=g, dtype=x.dtype).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px_, _ = torch.sort(x @ theta, 0)
    py_, _ = torch.sort(y @ theta, 0)
    return float((px_ - py_).abs().mean())


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to two samples of features (the
    figure the FID reports, on whatever features are given),

    .. math:: d^2 = \\lVert \\mu_x - \\mu_y \\rVert^2 + \\operatorname{tr}\\left(\\Sigma_x
        + \\Sigma_y - 2 (\\Sigma_x \\Sigma_y)^{1/2}\\right),

    in float64, with :math:`\\operatorname{tr}(\\Sigma_x \\Sigma_y)^{1/2}` the sum of the
    square roots of the eigenvalues of :math:`\\Sigma_x^{1/2} \\Sigma_y \\Sigma_x^{1/2}`
    (symmetric, so no complex square root is needed). The estimate is biased upwards at
    small sample sizes: compare figures of equal sample sizes, beside two real samples'.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(2000, 4, generator=g), torch.randn(2000, 4, generator=g)
        >>> frechet_distance(a, b) < 0.05, round(frechet_distance(a, a + 1.0), 2)
        (True, 4.0)

    References:
        GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium
        (Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter, 2017, arXiv:1706.08500).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(
            f"need two samples (n >= 2, d) of one dimension, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    a, b = x.detach().double().cpu(), y.detach().double().cpu()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("the samples have NaN or Inf values")
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    mean = (a.mean(0) - b.mean(0)).pow(2).sum()
    return float(mean + cov_a.trace() + cov_b.trace() - 2 * cross)


def c2st(x: Tensor, y: Tensor, *, folds: int = 5, seed: int = 0, max_iter: int = 1000) -> float:
    """Classifier two-sample test: the cross-validated accuracy of a small MLP telling
    ``x`` from ``y`` (scikit-learn's ``MLPClassifier``, two hidden layers of ``10 d``
    units, early stopping from 4000 points on, inputs standardized by ``x``'s statistics).
    0.5: indistinguishable; 1: apart.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
        >>> c2st(a, b) < 0.6, c2st(a, b + 3.0) > 0.9
        (True, True)

    References:
        Revisiting classifier two-sample tests (Lopez-Paz, Oquab, 2016, arXiv:1610.06545).
        Benchmarking simulation-based inference (Lueckmann et al., 2021, arXiv:2101.04653).
    """
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be (n, d) samples of one dimension, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    a = x.detach().cpu().double().numpy()
    b = y.detach().cpu().double().numpy()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the samples have NaN or Inf values")
    loc, scale = a.mean(0), a.std(0) + 1e-12
    data = (np.concatenate([a, b]) - loc) / scale
    labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    d = data.shape[1]
    # Large samples stop early on a tenth of each training fold (without it a fold in 10-D
    # runs for minutes, for the same accuracy); small ones have too few steps per epoch for it.
    classifier = MLPClassifier(
        hidden_layer_sizes=(10 * d, 10 * d),
        max_iter=max_iter,
        early_stopping=len(data) >= 4000,
        random_state=seed,
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, data, labels, cv=cv, scoring="accuracy")))
