"""Calibration of amortized posteriors, the checks a Bayesian workflow runs before it trusts
one: simulation-based calibration (rank statistics), the expected coverage of
highest-density regions and of random balls (TARP), and the posterior predictive check
against the simulator."""

from __future__ import annotations

from typing import Any, NamedTuple

import pyro
import torch
from torch import Tensor

from ..core import is_count
from .sequential import simulate_at
from .truncation import TruncatedPosterior

__all__ = [
    "SBC",
    "Coverage",
    "expected_coverage",
    "plot_coverage",
    "plot_sbc",
    "posterior_predictive",
    "sbc",
    "tarp",
]

#: The credibility levels at which coverage is reported.
_LEVELS = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)


class SBC(NamedTuple):
    """Ranks of simulation-based calibration: ``ranks`` ``(N, d)``, how many of
    ``num_draws`` (:math:`L`) posterior draws fall below the true parameter, per coordinate
    (uniform on :math:`\\{0, \\dots, L\\}` when the posterior is calibrated), and
    ``p_values`` ``(d,)``, a :math:`\\chi^2` test of their uniformity per coordinate (over
    :math:`\\min(20, L + 1)` near-equal bins)."""

    ranks: Tensor
    num_draws: int
    p_values: Tensor


class Coverage(NamedTuple):
    """Expected coverage of credible regions: at the credibility ``levels`` :math:`\\alpha`
    ``(K,)``, the ``coverage`` ``(K,)``, the fraction of true parameters inside the
    :math:`\\alpha` region (:math:`\\alpha` itself when calibrated, above it for an
    underconfident posterior, below for an overconfident one), and ``error``, the largest
    :math:`|\\mathrm{coverage} - \\alpha|`."""

    levels: Tensor
    coverage: Tensor
    error: float


def _check_pairs(theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    if not (isinstance(theta, Tensor) and isinstance(x, Tensor)):
        raise ValueError("theta and x must be torch.Tensors")
    if theta.dim() != 2 or x.dim() < 2 or len(theta) != len(x):
        raise ValueError(
            f"theta must be (N, d) and x (N, ...) with the same N, got {tuple(theta.shape)}, {tuple(x.shape)}"
        )
    if len(theta) == 0:
        raise ValueError("there are no simulations to check")
    if not (torch.isfinite(theta).all() and torch.isfinite(x).all()):
        raise ValueError("theta and x must be finite")
    return theta, x


def _check_counts(num_draws: Any, chunk: Any) -> int:
    for name, value in (("num_draws", num_draws), ("chunk", chunk)):
        if not is_count(value):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return num_draws


def _check_width(draws: Tensor, theta: Tensor) -> None:
    if draws.shape[-1] != theta.shape[-1]:
        raise ValueError(
            f"the posterior draws have {draws.shape[-1]} numbers each; theta has {theta.shape[-1]}"
        )


def _distribution(posterior: Any, x: Tensor) -> torch.distributions.Distribution:
    """The posterior of a batch of observations: an estimator's ``posterior(x)`` or a
    callable's ``posterior(x)``."""
    build = posterior.posterior if hasattr(posterior, "posterior") else posterior
    if not callable(build):
        raise ValueError(
            f"posterior must be an estimator with .posterior(x) or a callable x -> distribution, "
            f"got {type(posterior).__name__}"
        )
    return build(x)


@torch.no_grad()
def _draws(posterior: Any, x: Tensor, num_draws: int, chunk: int) -> Tensor:
    """``(L, N, d)`` posterior draws for every observation, in chunks of ``chunk``
    observations (a batched posterior each)."""
    draws = []
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        draws.append(_distribution(posterior, block).sample((num_draws,)).reshape(num_draws, len(block), -1))
    return torch.cat(draws, 1)


def sbc(posterior: Any, theta: Tensor, x: Tensor, *, num_draws: int = 100, chunk: int = 256) -> SBC:
    """Simulation-based calibration: for pairs :math:`(\\theta_i, x_i)` drawn from the
    model's joint (e.g. by :func:`~pyro_xform.infer.simulate`), the rank of each true
    coordinate among :math:`L` draws of :math:`q(\\theta \\mid x_i)`,

    .. math:: r_{ij} = \\#\\{\\ell : \\theta^{(\\ell)}_{j} < \\theta_{ij}\\},
        \\qquad \\theta^{(\\ell)} \\sim q(\\theta \\mid x_i),

    is uniform on :math:`\\{0, \\dots, L\\}` for every coordinate when :math:`q` is the
    posterior (averaged over the joint). A U-shaped histogram means an overconfident
    posterior, a hump an underconfident one, a slope a bias.

    Args:
        posterior: a :class:`~pyro_xform.infer.PosteriorEstimator` (anything with
            ``.posterior(x)``) or a callable ``x -> distribution`` over a batch of ``x``.
        theta: ``(N, d)`` true parameters, not used in training.
        x: ``(N, ...)`` their simulations.
        num_draws: :math:`L`.
        chunk: observations per batched posterior.

    Examples:
        >>> import pyro.distributions as dist
        >>> theta = torch.randn(200, 1)
        >>> x = theta + torch.randn(200, 1)
        >>> exact = lambda x: dist.Normal(x / 2, 0.5**0.5).to_event(1)
        >>> result = sbc(exact, theta, x, num_draws=50)
        >>> result.ranks.shape, bool(result.p_values.min() > 1e-3)
        (torch.Size([200, 1]), True)

    References:
        Validating Bayesian inference algorithms with simulation-based calibration (Talts
        et al., 2018, arXiv:1804.06788).
    """
    theta, x = _check_pairs(theta, x)
    num_draws = _check_counts(num_draws, chunk)
    draws = _draws(posterior, x, num_draws, chunk)
    _check_width(draws, theta)
    ranks = (draws < theta.to(draws).unsqueeze(0)).sum(0)
    return SBC(ranks, num_draws, _uniformity(ranks, num_draws))


def _uniformity(ranks: Tensor, num_draws: int) -> Tensor:
    """Per-coordinate :math:`\\chi^2` p-values of the ranks' uniformity."""
    from scipy.stats import chisquare

    bins = min(20, num_draws + 1)
    counts = torch.stack(
        [torch.bincount(_bin(column, num_draws, bins), minlength=bins) for column in ranks.T]
    )
    # A bin's expected count is its share of the L + 1 equally likely rank values, binned alike.
    share = torch.bincount(_bin(torch.arange(num_draws + 1), num_draws, bins), minlength=bins)
    expected = share.double().numpy() / (num_draws + 1) * len(ranks)
    return torch.tensor([chisquare(c, expected).pvalue for c in counts.numpy()])


def _bin(ranks: Tensor, num_draws: int, bins: int) -> Tensor:
    r"""The bin of each rank in :math:`\{0, \dots, L\}`, of ``bins`` near-equal bins."""
    return (ranks.cpu().long() * bins // (num_draws + 1)).clamp(max=bins - 1)


def _coverage(closer: Tensor, num_draws: int) -> Coverage:
    """Coverage from each simulation's count of posterior draws ranked before the truth: the
    truth is inside the :math:`\alpha` region when that count is at most
    :math:`\\lfloor \alpha L \rfloor` (integers compared, so no level is lost to rounding;
    the resolution is :math:`1 / L`)."""
    allowed = torch.floor(_LEVELS * num_draws + 1e-9)
    coverage = (closer.cpu().double().unsqueeze(-1) <= allowed).double().mean(0)
    return Coverage(_LEVELS, coverage, float((coverage - _LEVELS).abs().max()))


@torch.no_grad()
def expected_coverage(
    posterior: Any, theta: Tensor, x: Tensor, *, num_draws: int = 100, chunk: int = 256
) -> Coverage:
    """Expected coverage of the posterior's highest-density regions: the truth
    :math:`\\theta_i` lies in the :math:`\\alpha` region when fewer than a fraction
    :math:`\\alpha` of the posterior's draws have a higher density,

    .. math:: \\mathrm{ECP}(\\alpha) = \\frac1N \\sum_i \\mathbb 1\\Big[\\tfrac1L
        \\#\\{\\ell : q(\\theta^{(\\ell)} \\mid x_i) > q(\\theta_i \\mid x_i)\\} \\le \\alpha\\Big],

    which equals :math:`\\alpha` for a calibrated posterior. It needs the posterior's
    density (``log_prob``), which every exact family has.

    Args:
        posterior, theta, x, num_draws, chunk: as in :func:`sbc`.

    Examples:
        >>> import pyro.distributions as dist
        >>> theta = torch.randn(500, 2)
        >>> x = theta + torch.randn(500, 2)
        >>> overconfident = lambda x: dist.Normal(x / 2, 0.2).to_event(1)
        >>> expected_coverage(overconfident, theta, x).error > 0.2
        True

    References:
        Benchmarking simulation-based inference (Lueckmann et al., 2021,
        arXiv:2101.04653). A trust crisis in simulation-based inference? Your posterior
        approximations can be unfaithful (Hermans et al., 2022, arXiv:2110.06581).
    """
    theta, x = _check_pairs(theta, x)
    num_draws = _check_counts(num_draws, chunk)
    inside_at = []
    for start in range(0, len(x), chunk):
        q = _distribution(posterior, x[start : start + chunk])
        draws = q.sample((num_draws,))
        truth = theta[start : start + chunk].to(draws).reshape(draws.shape[1:])
        # A truncated posterior's density is the family's less a constant per observation
        # (and every value here lies in the support): the family's ranks them alike, without
        # estimating that constant from thousands of draws per observation.
        density = q.inner if isinstance(q, TruncatedPosterior) else q
        _check_width(draws, truth)
        inside_at.append((density.log_prob(draws) > density.log_prob(truth).unsqueeze(0)).sum(0))
    return _coverage(torch.cat(inside_at), num_draws)


@torch.no_grad()
def tarp(
    posterior: Any,
    theta: Tensor,
    x: Tensor,
    *,
    num_draws: int = 100,
    chunk: int = 256,
    seed: int | None = None,
) -> Coverage:
    """Tests of accuracy with random points (TARP): coverage of balls about random
    reference points :math:`r_i`, drawn uniformly over the box of the true parameters
    (after scaling each coordinate to it); the truth lies in the :math:`\\alpha` ball when
    fewer than a fraction :math:`\\alpha` of the posterior's draws are closer to
    :math:`r_i` than it,

    .. math:: \\mathrm{ECP}(\\alpha) = \\frac1N \\sum_i \\mathbb 1\\Big[\\tfrac1L
        \\#\\{\\ell : \\lVert\\theta^{(\\ell)} - r_i\\rVert < \\lVert\\theta_i - r_i\\rVert\\}
        \\le \\alpha\\Big].

    Unlike :func:`expected_coverage` it needs only draws, so it also checks posteriors
    without a density. A calibrated posterior gives :math:`\\mathrm{ECP}(\\alpha) =
    \\alpha`; over all distributions of reference points that is also sufficient for
    calibration, while one distribution (this one) makes it a necessary check.

    Args:
        posterior, theta, x, num_draws, chunk: as in :func:`sbc`.
        seed: seeds a generator of its own for the reference points (default: the global
            generator). The points must be independent of the true parameters: a
            generator seeded as the one that drew them repeats their stream.

    Examples:
        >>> import pyro.distributions as dist
        >>> theta = torch.randn(500, 2)
        >>> x = theta + torch.randn(500, 2)
        >>> exact = lambda x: dist.Normal(x / 2, 0.5**0.5).to_event(1)
        >>> tarp(exact, theta, x).error < 0.1
        True

    References:
        Sampling-based accuracy testing of posterior estimators for general inference
        (Lemos, Coogan, Hezaveh, Perreault-Levasseur, 2023, arXiv:2302.03026).
    """
    theta, x = _check_pairs(theta, x)
    num_draws = _check_counts(num_draws, chunk)
    draws = _draws(posterior, x, num_draws, chunk)
    _check_width(draws, theta)
    truth = theta.to(draws)
    low, high = truth.min(0).values, truth.max(0).values
    scale = (high - low).clamp_min(torch.finfo(truth.dtype).tiny)
    generator = None if seed is None else torch.Generator(device=truth.device).manual_seed(seed)
    references = torch.rand(truth.shape, generator=generator, device=truth.device, dtype=truth.dtype)
    to_reference = ((draws - low) / scale - references).norm(dim=-1)
    truth_to_reference = ((truth - low) / scale - references).norm(dim=-1)
    return _coverage((to_reference < truth_to_reference).sum(0), num_draws)


# --------------------------------------------------------------------------- predictive
@torch.no_grad()
def posterior_predictive(
    estimator: Any, x_obs: Tensor, num_samples: int = 1000, *, seed: int | None = None, **model_kwargs
) -> dict[str, Tensor]:
    """Posterior predictive draws: :math:`\\theta \\sim q(\\theta \\mid x_{obs})`, then the
    estimator's simulator (its Pyro model) run with those parameters
    (:func:`~pyro_xform.infer.simulate_at`, on the CPU), so that the
    simulations can be set beside the observation (``to_inference_data(draws,
    observed_data=..., posterior_predictive=...)`` and ArviZ's ``plot_ppc``).

    Args:
        estimator: a trained :class:`~pyro_xform.infer.PosteriorEstimator` (its ``model``,
            ``parameters``, ``observed`` and ``posterior``).
        x_obs: one observation.
        num_samples: posterior draws, one simulation each.
        seed: seeds Pyro's generators first.
        **model_kwargs: the model's arguments.

    Returns:
        ``{"theta": (num_samples, d), observed: (num_samples, *x_obs.shape)}``.

    Examples:
        >>> from pyro_xform.infer import PosteriorEstimator
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> npe = PosteriorEstimator(gaussian_linear, hidden=(8,), transforms=1)
        >>> _ = npe.train(200, steps=5, progress=False, seed=0)
        >>> draws = posterior_predictive(npe, torch.zeros(10), 50, seed=0)
        >>> draws["theta"].shape, draws["x"].shape
        (torch.Size([50, 10]), torch.Size([50, 10]))
    """
    if not is_count(num_samples):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(x_obs, Tensor) or x_obs.numel() != estimator.x_shape.numel():
        shape = tuple(x_obs.shape) if isinstance(x_obs, Tensor) else type(x_obs).__name__
        raise ValueError(f"x_obs must be one observation of {estimator.x_shape.numel()} numbers, got {shape}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    theta = estimator.posterior(x_obs).sample((num_samples,)).reshape(num_samples, -1).cpu()
    simulated = simulate_at(
        estimator.model, theta, parameters=estimator.parameters, observed=estimator.observed, **model_kwargs
    )
    return {"theta": theta, estimator.observed: simulated.reshape(num_samples, *x_obs.shape)}


# --------------------------------------------------------------------------- plots
def plot_sbc(result: SBC, *, band: float = 0.99, axes=None):
    """Rank histograms of :func:`sbc`, one panel per coordinate, in the bins its test uses,
    with the band each bin of a uniform histogram stays in with probability ``band``
    (binomial).

    Returns:
        the matplotlib axes.

    Examples:
        >>> import pyro.distributions as dist
        >>> theta = torch.randn(100, 2)
        >>> exact = lambda x: dist.Normal(x / 2, 0.5**0.5).to_event(1)
        >>> len(plot_sbc(sbc(exact, theta, theta + torch.randn(100, 2), num_draws=20)))
        2
    """
    import matplotlib.pyplot as plt
    from scipy.stats import binom

    draws, (n, d) = result.num_draws, result.ranks.shape
    bins = min(20, draws + 1)
    if axes is None:
        _, axes = plt.subplots(1, d, figsize=(2.5 * d, 2.2), squeeze=False)
        axes = axes[0]
    share = torch.bincount(_bin(torch.arange(draws + 1), draws, bins), minlength=bins).double().numpy()
    p = share / (draws + 1)
    low, high = binom.ppf((1 - band) / 2, n, p), binom.ppf(1 - (1 - band) / 2, n, p)
    for j, ax in enumerate(axes):
        counts = torch.bincount(_bin(result.ranks[:, j], draws, bins), minlength=bins).numpy()
        ax.bar(range(bins), high - low, bottom=low, width=1.0, color="0.85")
        ax.bar(range(bins), counts, width=0.8, color="C0")
        ax.set_title(f"θ{j + 1} (p = {float(result.p_values[j]):.2f})", fontsize=9)
        ax.set_yticks([])
    return axes


def plot_coverage(results: dict[str, Coverage], *, ax=None):
    """Expected coverage against credibility level, one line per named result; the
    diagonal is calibration (above: underconfident, below: overconfident).

    Returns:
        the matplotlib axes.

    Examples:
        >>> import pyro.distributions as dist
        >>> theta = torch.randn(100, 2)
        >>> exact = lambda x: dist.Normal(x / 2, 0.5**0.5).to_event(1)
        >>> ax = plot_coverage({"exact": tarp(exact, theta, theta + torch.randn(100, 2))})
        >>> len(ax.lines)
        2
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--")
    for name, result in results.items():
        ax.plot(result.levels.numpy(), result.coverage.numpy(), label=f"{name} ({result.error:.2f})")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.legend(fontsize=8)
    return ax
