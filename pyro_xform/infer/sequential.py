"""Sequential rounds focused on one observation: truncated sequential neural posterior
estimation, whose proposal is the prior cut to the current posterior's highest-density
region, so that the plain maximum-likelihood (or regression) loss stays right; and
sequential neural likelihood estimation, whose proposal is the current posterior itself
(a likelihood does not depend on where its parameters were drawn)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import Predictive
from torch import Tensor

from ..core import is_count
from ..fit import FitResult
from .amortized import PosteriorEstimator, simulate
from .likelihood import LikelihoodEstimator
from .truncation import TruncatedPosterior

__all__ = ["simulate_at", "train_rounds", "truncated_prior"]


def _site_shapes(model: Callable, names: Sequence[str], model_kwargs: dict) -> dict[str, torch.Size]:
    with torch.no_grad():
        trace = pyro.poutine.trace(model).get_trace(**model_kwargs)
    missing = [n for n in names if n not in trace.nodes]
    if missing:
        raise ValueError(f"the model has no sites {missing}")
    return {n: trace.nodes[n]["value"].shape for n in names}


@torch.no_grad()
def simulate_at(
    model: Callable,
    theta: Tensor,
    *,
    parameters: str | Sequence[str] = "theta",
    observed: str = "x",
    **model_kwargs,
) -> Tensor:
    """Simulations at given parameters: the model run with its parameter sites fixed to
    the rows of ``theta`` (flattened and concatenated in order, as :func:`simulate` gives
    them), vectorized under a plate where the model allows it (one run per row where not).

    Returns:
        ``x`` of shape ``(len(theta), d_x)``.

    Examples:
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> simulate_at(gaussian_linear, torch.zeros(4, 10)).shape
        torch.Size([4, 10])
    """
    names = [parameters] if isinstance(parameters, str) else list(parameters)
    shapes = _site_shapes(model, names, model_kwargs)
    size = sum(shape.numel() for shape in shapes.values())
    if not isinstance(theta, Tensor) or theta.dim() != 2 or theta.shape[-1] != size:
        raise ValueError(
            f"theta must be (n, {size}) (the sites {names} hold {size} numbers), got {tuple(theta.shape)}"
        )
    n, values, start = len(theta), {}, 0
    for name, shape in shapes.items():
        values[name] = theta[:, start : start + shape.numel()].reshape(n, *shape)
        start += shape.numel()
    if not torch.isfinite(theta).all():
        raise ValueError("theta has NaN or Inf values")
    try:
        draws = Predictive(model, posterior_samples=values, return_sites=[observed], parallel=True)(
            **model_kwargs
        )
    except (RuntimeError, ValueError):  # a model that does not vectorize: one run per row
        draws = Predictive(model, posterior_samples=values, return_sites=[observed])(**model_kwargs)
    return draws[observed].reshape(n, -1)


@torch.no_grad()
def truncated_prior(
    estimator: PosteriorEstimator,
    x_obs: Tensor,
    n: int,
    *,
    epsilon: float = 1e-4,
    batch: int = 100_000,
    max_draws: int = 20_000_000,
) -> Tensor:
    """``n`` draws of the prior restricted to the posterior's highest-density region of mass
    :math:`1 - \\epsilon`,

    .. math:: \\tilde p(\\theta) \\propto p(\\theta)\\,
        \\mathbb 1\\big[q(\\theta \\mid x_o) \\ge \\tau_\\epsilon\\big],

    with :math:`\\tau_\\epsilon` the :math:`\\epsilon`-quantile of :math:`q`'s density over
    its own draws; by rejection from the prior (the model's parameter sites, in batches of
    ``batch`` runs).

    Raises:
        ValueError: bad counts or ``epsilon``, or a posterior whose density is not finite.
        RuntimeError: fewer than ``n`` accepted within ``max_draws`` prior draws.

    Examples:
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> npe = PosteriorEstimator(gaussian_linear, hidden=(8,), transforms=1)
        >>> _ = npe.train(300, steps=5, progress=False, seed=0)
        >>> truncated_prior(npe, torch.zeros(10), 50, epsilon=0.1).shape
        torch.Size([50, 10])
    """
    for name, value in (("n", n), ("batch", batch), ("max_draws", max_draws)):
        if not is_count(value):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(epsilon, float) and 1e-6 <= epsilon < 1):
        raise ValueError(f"epsilon must be a float in [1e-6, 1), got {epsilon!r}")
    posterior = estimator.posterior(x_obs)
    draws = posterior.sample((max(10_000, int(10 / epsilon)),))
    # A truncated posterior's density is the family's less a constant, and every prior draw
    # lies in its support: the family's density draws the same region.
    posterior = posterior.inner if isinstance(posterior, TruncatedPosterior) else posterior
    own = posterior.log_prob(draws)
    if not torch.isfinite(own).all():
        raise ValueError("the posterior's density is not finite at its own draws: the estimator is broken")
    threshold = torch.quantile(own.double(), epsilon).to(own.dtype)
    kept, total, drawn = [], 0, 0
    while total < n:
        if drawn >= max_draws:
            raise RuntimeError(
                f"{total} of {n} prior draws land in the posterior's region after {drawn}; the "
                "posterior is too narrow for rejection from the prior"
            )
        sites = Predictive(
            estimator.model, num_samples=batch, return_sites=estimator.parameters, parallel=True
        )()
        theta = torch.cat([sites[s].reshape(batch, -1) for s in estimator.parameters], -1)
        theta = theta.to(estimator.device, estimator.dtype)
        inside = theta[posterior.log_prob(theta) >= threshold]
        kept.append(inside)
        total, drawn = total + len(inside), drawn + batch
    return torch.cat(kept)[:n]


def train_rounds(
    estimator: PosteriorEstimator | LikelihoodEstimator,
    x_obs: Tensor,
    *,
    rounds: int = 4,
    num_simulations: int = 2500,
    epsilon: float = 1e-4,
    seed: int | None = None,
    sampler: dict | Callable[..., Tensor] | None = None,
    **fit_kwargs,
) -> list[FitResult]:
    """Sequential rounds for one observation: the first round simulates from the prior,
    every later one from a proposal focused on ``x_obs``, and the estimator is trained
    again on all simulations so far.

    - A :class:`PosteriorEstimator` (truncated sequential NPE): the proposal is the prior
      truncated to the current posterior's :math:`1-\\epsilon` highest-density region
      (:func:`truncated_prior`). Within the region the truncated prior is the prior
      renormalized, so the estimator's own loss (no importance correction, no leakage)
      still gives :math:`p(\\theta \\mid x_o)`, there and wherever the region holds the
      posterior's mass.
    - A :class:`LikelihoodEstimator` (sequential NLE): the proposal is the current
      posterior, drawn by :meth:`LikelihoodEstimator.sample_posterior` (NUTS). The loss
      :math:`-\\log q_\\phi(x \\mid \\theta)` has the true likelihood as its optimum under
      any proposal, so nothing is corrected; ``epsilon`` does not apply.

    Args:
        estimator: an untrained (or trained) posterior or likelihood estimator.
        x_obs: the observation to focus on.
        rounds: rounds of simulation and training.
        num_simulations: simulations per round.
        epsilon: the posterior mass left outside the truncation (NPE).
        seed: seeds the first round's simulations, each proposal and each training run.
        sampler: NLE's proposals: settings of :meth:`LikelihoodEstimator.sample_posterior`
            (``chains``, ``warmup``), or a function called as ``sampler(estimator, x_obs,
            n, seed=seed)`` that returns ``n`` posterior draws, such as NumPyro's compiled
            NUTS, :func:`pyro_xform.numpyro.sample_posterior` (much the faster).
        **fit_kwargs: to the estimator's ``train`` (``steps``, ``lr``...).

    Returns:
        every round's :class:`~pyro_xform.FitResult`.

    Examples:
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> npe = PosteriorEstimator(gaussian_linear, hidden=(8,), transforms=1)
        >>> x_obs = torch.zeros(10)
        >>> results = train_rounds(npe, x_obs, rounds=2, num_simulations=300, steps=5, progress=False)
        >>> len(results), npe.posterior(x_obs).sample((2,)).shape
        (2, torch.Size([2, 10]))

    References:
        Truncated proposals for scalable and hassle-free simulation-based inference
        (Deistler, Goncalves, Macke, 2022, arXiv:2210.04815). Sequential neural likelihood:
        fast likelihood-free inference with autoregressive flows (Papamakarios, Sterratt,
        Murray, 2018, arXiv:1805.07226).
    """
    if not isinstance(estimator, PosteriorEstimator | LikelihoodEstimator):
        raise ValueError(f"estimator must be a PosteriorEstimator or LikelihoodEstimator, got {estimator!r}")
    if not (isinstance(rounds, int) and rounds >= 1):
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    if not (isinstance(num_simulations, int) and num_simulations >= 2):
        raise ValueError(f"num_simulations must be an int of at least 2, got {num_simulations!r}")
    if not (isinstance(epsilon, float) and 1e-6 <= epsilon < 1):
        raise ValueError(f"epsilon must be a float in [1e-6, 1), got {epsilon!r}")
    if sampler and not isinstance(estimator, LikelihoodEstimator):
        raise ValueError("a sampler is for a LikelihoodEstimator's proposals")
    if not (sampler is None or isinstance(sampler, dict) or callable(sampler)):
        raise ValueError(f"sampler must be a dict of settings or a function, got {sampler!r}")
    theta, x = simulate(
        estimator.model,
        num_simulations,
        parameters=estimator.parameters,
        observed=estimator.observed,
        seed=seed,
    )
    results = [estimator.train(theta=theta, x=x, seed=seed, **fit_kwargs)]
    for r in range(1, rounds):
        round_seed = None if seed is None else seed + r
        new = _proposal(estimator, x_obs, num_simulations, epsilon, round_seed, sampler or {}).cpu()
        new_x = simulate_at(
            estimator.model, new, parameters=estimator.parameters, observed=estimator.observed
        )
        theta, x = torch.cat([theta, new.to(theta)]), torch.cat([x, new_x.to(x)])
        results.append(estimator.train(theta=theta, x=x, seed=round_seed, **fit_kwargs))
    return results


def _proposal(
    estimator, x_obs: Tensor, n: int, epsilon: float, seed: int | None, sampler: dict | Callable
) -> Tensor:
    """A round's ``n`` parameters: the truncated prior (NPE) or the posterior (NLE)."""
    if callable(sampler):
        draws = sampler(estimator, x_obs, n, seed=seed)
        if not (isinstance(draws, Tensor) and draws.shape == (n, estimator.parameter_standardizer.features)):
            raise ValueError(
                f"the sampler must return a tensor of shape ({n}, d_theta), got "
                f"{getattr(draws, 'shape', type(draws).__name__)}"
            )
        return draws
    if isinstance(estimator, LikelihoodEstimator):
        return estimator.sample_posterior(x_obs, n, seed=seed, **sampler)
    if seed is not None:
        torch.manual_seed(seed)
    return truncated_prior(estimator, x_obs, n, epsilon=epsilon)
