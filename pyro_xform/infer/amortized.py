"""Amortized posterior estimation: simulate from a Pyro model, train a conditional family
on the pairs, and read off :math:`q(\\theta \\mid x)` for any observation."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer import Predictive
from torch import Tensor, nn

from .. import checkpoint
from ..core import Xform, XformDistribution, flatten_event
from ..families import FAMILIES, Embedded
from ..fit import FitResult, fit
from ..nn.embedding import EMBEDDINGS
from ..objectives import ConditionalFlowMatching, DenoisingScoreMatching, Objective
from ..rng import draw_seed, fixed_seed
from ..transforms import Standardize
from .truncation import ToBox, TruncatedPosterior, prior_bounds

__all__ = ["ESTIMATORS", "Estimator", "PosteriorEstimator", "simulate"]

# Flow-matching and score-based (diffusion) posterior estimation: a wide field, validated
# by its exact likelihood (RK4, 16 steps) on an average of the parameters (``ema``). Their
# regression losses plateau long before the density stops changing, and do not see it get
# worse: some tasks memorize their simulations after a few thousand steps while others keep
# improving for 30000 (bench/MEASUREMENTS.md). The "plateau" schedule anneals at each
# validation that does not improve on the last counted one by 0.02 nats, and two in a row
# stop the run: each task gets the run length it needs, and none spends thousands of steps
# on gains of a few hundredths of a nat (which C2ST does not see) or at a learning rate
# annealed to nothing. Batches of 256 take half the time of 512 a step and reach the
# same C2ST.
_REGRESSION = dict(
    steps=30000,
    batch_size=256,
    lr=1e-3,
    schedule="plateau",
    ema=0.999,
    eval_every=500,
    patience=2,
    min_delta=0.02,
)


# The field learns only what the linear-Gaussian fit of theta | x misses: theta is
# standardized by its regression on x, and the field starts as the exact one for Gaussian
# data (its effect in bench/sbi.py: bench/MEASUREMENTS.md). The SBI table was measured on
# fields without FiLM, and diffusion on the VP path, so the estimators keep them so until
# they are measured otherwise.
_FIELD = dict(hidden=(256, 256, 256), standardize="regression", gaussian_skip=True, film=False)


# A flow memorizes 10^4 simulations within a few hundred steps: a learning rate halved at
# every validation that does not improve ("plateau", every 50 steps, three in a row stop
# the run) keeps it to what generalizes. Minibatches of 1024 at lr 2e-3 take a third to a
# fifth of the time of full batches; C2ST is better on two moons and the Gaussian mixture,
# worse by 0.02-0.03 on Gaussian linear, Bernoulli GLM and SIR (bench/MEASUREMENTS.md).
_MLE = dict(batch_size=1024, lr=2e-3, steps=5000, schedule="plateau", eval_every=50, patience=3)


def _by_likelihood(objective: type[Objective]) -> Objective:
    return objective(validation="nll", solver="rk4", steps=16)


class Estimator(NamedTuple):
    """A named estimator: the family, its objective, and the defaults of the family's
    constructor and of :func:`~pyro_xform.fit` (a user's arguments override them)."""

    family: str
    objective: str | Objective
    family_defaults: dict[str, Any]
    fit_defaults: dict[str, Any]


#: Estimators by name.
ESTIMATORS = {
    # Neural posterior estimation by an NSF whose conditioners start linear.
    "flow": Estimator(
        "NSF", "mle", dict(hidden=(50, 50), transforms=5, residual=True, standardize=True), dict(_MLE)
    ),
    # A masked autoregressive flow of affine layers (sbi's NPE default, and the flow of
    # sbibm's NLE), trained as the NSF is. It is no NSF's match on most tasks but fits some
    # likelihoods better (SLCP's): LikelihoodEstimator trains both and keeps the one with
    # the better validation likelihood.
    "maf": Estimator(
        "MAF",
        "mle",
        dict(hidden=(50, 50), transforms=5, standardize=True),
        dict(_MLE),
    ),
    "flow_matching": Estimator(
        "FlowMatching", _by_likelihood(ConditionalFlowMatching), dict(_FIELD), dict(_REGRESSION)
    ),
    "diffusion": Estimator(
        "Diffusion",
        _by_likelihood(DenoisingScoreMatching),
        dict(_FIELD, sde="vp"),
        dict(_REGRESSION),
    ),
}

#: Full-batch training uses at most this many simulations a step.
_FULL_BATCH = 10_000


def _names(parameters: str | Sequence[str]) -> list[str]:
    return [parameters] if isinstance(parameters, str) else list(parameters)


@torch.no_grad()
def simulate(
    model: Callable,
    n: int,
    *,
    parameters: str | Sequence[str] = "theta",
    observed: str = "x",
    seed: int | None = None,
    **model_kwargs,
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` pairs :math:`(\\theta, x)` from a Pyro model's joint: ``model()`` with
    nothing observed, vectorized under a plate where the model allows it.

    Returns:
        ``theta`` of shape ``(n, d_theta)`` (the parameter sites flattened and concatenated
        in order) and ``x`` of shape ``(n, d_x)``.

    Examples:
        >>> from pyro_xform.infer.simulators import two_moons
        >>> theta, x = simulate(two_moons, 100, seed=0)
        >>> theta.shape, x.shape
        (torch.Size([100, 2]), torch.Size([100, 2]))
    """
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"n must be a positive int, got {n!r}")
    names = _names(parameters)
    if seed is not None:
        pyro.set_rng_seed(seed)
    sites = [*names, observed]
    try:
        draws = Predictive(model, num_samples=n, return_sites=sites, parallel=True)(**model_kwargs)
    except (RuntimeError, ValueError):  # a model that does not vectorize: one run per draw
        draws = Predictive(model, num_samples=n, return_sites=sites)(**model_kwargs)
    missing = [s for s in sites if s not in draws]
    if missing:
        raise ValueError(f"the model has no sites {missing}")
    theta = torch.cat([draws[s].reshape(n, -1) for s in names], -1)
    return theta, draws[observed].reshape(n, -1)


# --------------------------------------------------------------------------- estimator
def _label(estimator: str | Xform) -> str:
    """A candidate's name in :attr:`PosteriorEstimator.selection`."""
    return estimator if isinstance(estimator, str) else type(estimator).__name__


def _check_validated_by_likelihood(estimator: str | Xform) -> None:
    """Refuse a candidate whose validation loss is not a negative log-likelihood (a
    regression loss is on another scale: no comparison)."""
    if isinstance(estimator, str):
        objective = ESTIMATORS[estimator].objective
        if objective == "mle" or getattr(objective, "validation", None) == "nll":
            return
    elif estimator.default_objective == "mle":
        return
    raise ValueError(
        f"estimator {_label(estimator)!r} is not validated by its likelihood; choose among "
        "estimators whose validation losses are negative log-likelihoods"
    )


def _summary_size(embedding: str | nn.Module, d_x: int, dtype: torch.dtype) -> int:
    """The size of an embedding's summary: a named one's default, or a module's output on
    a probe where its parameters live (a module without parameters: the CPU, ``dtype``)."""
    if isinstance(embedding, str):
        return _SUMMARY
    parameter = next(embedding.parameters(), None)
    where = dict(dtype=dtype) if parameter is None else dict(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        return int(embedding(torch.zeros(2, d_x, **where)).shape[-1])


#: The summary size of a named embedding.
_SUMMARY = 32


def _observation_standardizer(x: Tensor, shape: torch.Size, embedding: str | nn.Module | None) -> Standardize:
    """The standardization of flat observations ``x`` of shape ``shape``: per coordinate,
    or shared where a named embedding shares its weights (per channel for ``"conv1d"`` and
    ``"conv2d"``, channel-major; per coordinate over the elements of a ``"deepset"``'s
    ``(n, d)``)."""
    features = x.shape[1]
    if embedding in ("conv1d", "conv2d"):
        channels = shape[0] if len(shape) == (2 if embedding == "conv1d" else 3) else 1
        standardizer = Standardize(features, channels).to(x)
        standardizer.initialize(x)
        return standardizer
    standardizer = Standardize(features).to(x)
    if embedding == "deepset":  # the statistics of each coordinate over all elements
        n, d = shape
        pooled = Standardize(features, d).to(x)
        pooled.initialize(x.reshape(-1, n, d).transpose(1, 2).reshape(-1, features))
        loc, scale = (v.reshape(d, n).T.reshape(-1) for v in (pooled.loc, pooled.scale))
        standardizer.loc.copy_(loc), standardizer.scale.copy_(scale), standardizer.initialized.fill_(True)
        return standardizer
    standardizer.initialize(x)
    return standardizer


def _check_finite(x: Tensor, name: str) -> None:
    # Values on the meta device are unknown; there is nothing to check.
    if x.device.type != "meta" and not torch.isfinite(x).all():
        raise ValueError(f"{name} has NaN or Inf values")


def _placement(device, dtype) -> tuple[torch.device | None, torch.dtype | None]:
    """``(device, dtype)`` from the arguments of :meth:`PosteriorEstimator.to`."""
    if isinstance(device, torch.dtype):
        if dtype is not None:
            raise ValueError("give the dtype once: to(dtype) or to(device, dtype)")
        device, dtype = None, device
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return (None if device is None else torch.device(device)), dtype


class PosteriorEstimator:
    """Amortized posterior estimation for a Pyro model: one call trains a conditional family
    :math:`q_\\phi(\\theta \\mid x)` on simulated pairs, and :meth:`posterior` returns it for
    any observation as an :class:`~pyro_xform.XformDistribution`.

    The estimator is one word: ``"flow"`` (neural posterior estimation, an NSF with residual
    conditioners trained by maximum likelihood with early stopping),
    ``"flow_matching"`` (flow-matching posterior estimation, :math:`\\theta`-space flow
    matching conditioned on :math:`x`) or ``"diffusion"``
    (score-based posterior estimation, denoising score matching, sampled and scored by its
    probability-flow ODE), ``"maf"`` (affine autoregressive layers, trained as the flow)
    — or any conditional exact model. Given several, the first training trains each on
    the same simulations and the same validation split and keeps the one whose validation
    negative log-likelihood is lowest (:attr:`selection` keeps the figures),

    .. math:: \\hat q = \\arg\\min_{q} -\\frac{1}{|V|} \\sum_{(\\theta, x) \\in V} \\log q(\\theta \\mid x),

    since no one family fits every simulator best. The observations are standardized by
    the simulations' mean and standard deviation before they condition the family.

    Bounded priors (two moons' :math:`U(-1, 1)^2`, SLCP's :math:`U(-3, 3)^5`): the family
    learns :math:`\\theta` as it is, and the posterior is truncated to the prior's support
    (read from the model's parameter sites), as in sbi: draws are the family's draws that
    land inside (rejection, its rate in ``posterior(x).acceptance``), and ``log_prob`` is
    the family's renormalized by that rate (estimated from 10,000 draws, so its
    ``log_prob_kind`` is ``"estimate"``), :math:`-\\infty` outside the support. The
    posterior of a uniform prior is the likelihood cut off at the box's edge, which the
    truncation gives exactly. Learning in the unconstrained space of the support instead
    (the family on :math:`\\mathrm{logit}\\,\\theta`, no rejection) was measured worse on two
    moons (``bench/MEASUREMENTS.md``): a logit stretches the posterior's edge at the box.

    The estimator lives on one device and dtype, chosen by ``device``/``dtype`` or
    :meth:`to` (before or after training): the family, the standardization of ``x`` and the
    support's bounds move together. Simulations are made where the model makes them (the
    CPU) and moved to the estimator's device and dtype before training; so is ``x_obs``.

    Args:
        model: a Pyro model that samples the parameter sites and the observation site.
        estimator: ``"flow"``, ``"maf"``, ``"flow_matching"``, ``"diffusion"``, a built
            model (``features`` = parameter size, ``context`` = observation size), or a
            sequence of them to choose from by validation likelihood (their validation
            losses must be negative log-likelihoods: every named estimator's is, and a
            built model's under maximum likelihood).
        parameters: the parameter site name(s).
        observed: the observation site name.
        truncate: truncate the posterior to the prior's support (above); ``False`` gives
            the family's distribution, whose draws may then leave the support.
        embedding: a network summarizing the observation, trained with the family
            (:class:`~pyro_xform.Embedded`): ``"mlp"``, ``"deepset"`` (a set of i.i.d.
            observations, the observation site of shape ``(n, d)``), ``"conv1d"`` (a time
            series, ``(T,)`` or ``(C, T)``), ``"conv2d"`` (an image, ``(C, H, W)``), any
            ``nn.Module`` from the flat observation to a summary vector, or ``None`` (the
            standardized observation itself conditions the family). The observation's shape
            is the observation site's (from a run of the model) or that of a given ``x``
            of more than two dimensions. With a named embedding, the standardization of the
            observations is shared where the network shares its weights: per channel for
            the convolutions, per coordinate over the set's elements for ``"deepset"``; and
            flow matching and diffusion standardize theta by its marginal statistics (a
            regression on a summary that is still training would be fixed on a random one).
        device: where the estimator computes (default: where a new family is built).
        dtype: its floating-point dtype (default: the family's).
        **family_kwargs: constructor arguments of the named families (every one of them).

    Examples:
        >>> from pyro_xform.infer.simulators import gaussian_linear, two_moons
        >>> npe = PosteriorEstimator(gaussian_linear, "flow", hidden=(16,), transforms=2)
        >>> result = npe.train(500, steps=20, progress=False, seed=0)
        >>> posterior = npe.posterior(torch.zeros(10))
        >>> posterior.sample((3,)).shape
        torch.Size([3, 10])
        >>> npe = PosteriorEstimator(two_moons, "flow", hidden=(16,), transforms=2)
        >>> result = npe.train(500, steps=20, progress=False, seed=0)
        >>> bool(npe.posterior(torch.zeros(2)).sample((100,)).abs().max() <= 1)
        True

    References:
        Fast epsilon-free inference of simulation models with Bayesian conditional density
        estimation (Papamakarios, Murray, 2016, arXiv:1605.06376). Flow matching for
        scalable simulation-based inference (Wildberger et al., 2023, arXiv:2305.17161).
        Compositional score modeling for simulation-based inference (Geffner, Papamakarios,
        Mnih, 2023, arXiv:2209.14249).
    """

    def __init__(
        self,
        model: Callable,
        estimator: str | Xform = "flow",
        *,
        parameters: str | Sequence[str] = "theta",
        observed: str = "x",
        truncate: bool = True,
        embedding: str | nn.Module | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **family_kwargs,
    ) -> None:
        candidates = [estimator] if isinstance(estimator, (str, Xform)) else list(estimator)
        if not candidates:
            raise ValueError("give an estimator, or a non-empty sequence of them to choose from")
        for each in candidates:
            if not isinstance(each, (str, Xform)) or (isinstance(each, str) and each not in ESTIMATORS):
                raise ValueError(
                    f"unknown estimator {each!r}; choose from {sorted(ESTIMATORS)} or pass a model"
                )
        if not isinstance(truncate, bool):
            raise ValueError(f"truncate must be True or False, got {truncate!r}")
        self.model = model
        #: the estimator's name or model; the candidates as a tuple until the first
        #: training has chosen one
        self.estimator: str | Xform | tuple[str | Xform, ...] = (
            candidates[0] if len(candidates) == 1 else tuple(candidates)
        )
        self.parameters, self.observed = _names(parameters), observed
        self.truncate = truncate
        if not (embedding is None or isinstance(embedding, nn.Module) or embedding in EMBEDDINGS):
            raise ValueError(
                f"unknown embedding {embedding!r}; choose from {sorted(EMBEDDINGS)} or pass an nn.Module"
            )
        if embedding is not None and any(isinstance(each, Xform) for each in candidates):
            raise ValueError("give a built model its embedding yourself (pyro_xform.Embedded)")
        self.embedding = embedding
        #: the observation's shape (set by training)
        self.x_shape: torch.Size | None = None
        self.family_kwargs = family_kwargs
        self.family: Xform | None = self.estimator if isinstance(self.estimator, Xform) else None
        #: the validation negative log-likelihood of each candidate by name (a built model
        #: by its class name), from the training that chose among them; else empty
        self.selection: dict[str, float] = {}
        #: the standardization of the observations (a :class:`~pyro_xform.transforms.Standardize`)
        self.x_standardizer: Standardize | None = None
        #: the prior's support (bounds as buffers), or ``None`` (unbounded, or not truncated)
        self.prior_support: ToBox | None = None
        self._device, self._dtype = None, None
        self.to(device, dtype)

    # -- placement -----------------------------------------------------------------------
    def to(
        self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | None = None
    ) -> PosteriorEstimator:
        """Move the estimator (family, standardization, support) to ``device`` and/or
        ``dtype``, as :meth:`torch.nn.Module.to`; ``to(torch.float64)`` changes the dtype
        alone. Before training, the placement is kept for the family to be built.

        Returns:
            the estimator itself.
        """
        device, dtype = _placement(device, dtype)
        self._device = device if device is not None else self._device
        self._dtype = dtype if dtype is not None else self._dtype
        for module in (self.family, self.x_standardizer, self.prior_support):
            if module is not None:
                module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        """Where the estimator computes."""
        if self.family is not None:
            return self.family.device
        return self._device if self._device is not None else torch.empty(0).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype the estimator computes in."""
        if self.family is not None:
            return self.family.base_loc.dtype
        return self._dtype if self._dtype is not None else torch.get_default_dtype()

    @property
    def x_loc(self) -> Tensor | None:
        """The mean of the training observations (``None`` before training)."""
        return None if self.x_standardizer is None else self.x_standardizer.loc

    @property
    def x_scale(self) -> Tensor | None:
        """The standard deviation of the training observations (``None`` before training)."""
        return None if self.x_standardizer is None else self.x_standardizer.scale

    # -- training ------------------------------------------------------------------------
    def _build(self, d_theta: int, d_x: int) -> Xform:
        if self.family is None:
            spec = ESTIMATORS[self.estimator]
            kwargs = {**spec.family_defaults, **self.family_kwargs}
            if self.embedding is None:
                family = FAMILIES[spec.family](d_theta, d_x, **kwargs)
            else:
                summary = _summary_size(self.embedding, d_x, self.dtype)
                # The summary changes as the embedding trains: a regression of theta on it at
                # the start would be fixed on a random one (so the marginal statistics).
                if spec.family_defaults.get("standardize") == "regression":
                    kwargs = {"standardize": True, "gaussian_skip": False, **self.family_kwargs}
                    kwargs = {**spec.family_defaults, **kwargs}
                inner = FAMILIES[spec.family](d_theta, summary, **kwargs)
                family = Embedded(inner, self.embedding, tuple(self.x_shape))
            self.family = family.to(self._device, self._dtype)
        if self.family.features != d_theta or self.family.context_features != d_x:
            raise ValueError(
                f"the estimator has features={self.family.features}, context={self.family.context_features}; "
                f"the simulations have {d_theta} parameters and {d_x} observations"
            )
        return self.family

    def _support(self, d_theta: int) -> ToBox | None:
        """The prior's support over the parameters, or ``None`` where there is nothing to
        truncate to."""
        if not self.truncate:
            return None
        lower, upper = prior_bounds(self.model, self.parameters)
        if lower.numel() != d_theta:
            raise ValueError(
                f"the parameter sites {self.parameters} hold {lower.numel()} numbers; theta has {d_theta}"
            )
        if not (torch.isfinite(lower).any() or torch.isfinite(upper).any()):
            return None
        return ToBox(lower, upper).to(self.device, self.dtype)

    def _check_support(self, theta: Tensor) -> None:
        """Refuse simulations the prior could not have made."""
        if self.prior_support is None:
            return
        outside = ~self.prior_support.box.check(theta)
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} simulations have parameters outside the prior's support "
                f"(first at row {int(outside.nonzero()[0, 0])}); fix them, or pass truncate=False"
            )

    def _standardized(self, x: Tensor) -> Tensor:
        if self.x_standardizer is None:
            raise RuntimeError("train the estimator first")
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        d_x = self.x_standardizer.features
        if x.dim() == 0 or x.shape[-1] != d_x:
            raise ValueError(
                f"x has {x.shape[-1] if x.dim() else 0} numbers per observation; the simulations had {d_x}"
            )
        x = x.to(self.device, self.dtype)
        _check_finite(x, "x")
        return self.x_standardizer.inverse_and_ladj(x)[0]

    def train(
        self,
        num_simulations: int | None = None,
        *,
        theta: Tensor | None = None,
        x: Tensor | None = None,
        validation: float = 0.1,
        seed: int | None = None,
        **fit_kwargs,
    ) -> FitResult:
        """Simulate ``num_simulations`` pairs (or take given ``theta``, ``x``) and train.

        The pairs are moved to the estimator's device and dtype. ``fit_kwargs`` go to
        :func:`pyro_xform.fit` (``steps``, ``batch_size``, ``lr``...),
        over the estimator's defaults (:data:`ESTIMATORS`); ``batch_size="full"`` takes
        every training simulation in each step (at most 10,000); ``objective`` replaces the
        estimator's. The observations' standardization is set by the first training and
        kept by later ones (which continue from the trained parameters). A validation
        split keeps the best parameters and stops the run early: by validation NLL for
        ``"flow"``, and for flow matching and diffusion by their exact likelihood, which
        also anneals their learning rate (``schedule="plateau"``). ``seed`` seeds the
        simulations, the family's initialization and the training, leaving the global
        generators' streams as they were for the initialization. With several candidates,
        the first training simulates once, trains each under one seed (so on one
        validation split), keeps the best by validation likelihood and returns its
        result; later trainings continue the kept one.

        Raises:
            ValueError: pairs with NaN or Inf values, mismatched rows, or (with
                ``truncate=True``) parameters outside the prior's support; several
                candidates without a validation fraction, or one whose validation is no
                likelihood.
        """
        if isinstance(self.estimator, tuple):
            return self._choose(num_simulations, theta, x, validation, seed, fit_kwargs)
        given = x
        theta, x = self.simulations(num_simulations, theta, x, seed)
        if self.x_shape is None:  # the shape the family is built for, kept by later trainings
            self.x_shape = self._observation_shape(given, x.shape[1])
        # A seed fixes the family's initialization too: the same figures from any script,
        # whatever it drew before.
        with contextlib.nullcontext() if seed is None else fixed_seed(self.device, seed):
            family = self._build(theta.shape[1], x.shape[1])
        self.prior_support = self._support(theta.shape[1])
        theta, x = theta.to(self.device, self.dtype), x.to(self.device, self.dtype)
        self._check_support(theta)
        if self.x_standardizer is None:  # set by the first training, kept by later ones
            self.x_standardizer = _observation_standardizer(x, self.x_shape, self.embedding)
        objective = fit_kwargs.pop("objective", None)
        if not isinstance(self.estimator, Xform):
            spec = ESTIMATORS[self.estimator]
            objective = spec.objective if objective is None else objective
            fit_kwargs = {**spec.fit_defaults, **fit_kwargs}
        if fit_kwargs.get("batch_size") == "full":
            held_out = max(1, round(validation * len(theta))) if isinstance(validation, float) else 0
            fit_kwargs["batch_size"] = max(1, min(len(theta) - held_out, _FULL_BATCH))
        return fit(
            family,
            theta,
            context=self._standardized(x),
            objective=objective,
            validation=validation,
            seed=seed,
            **fit_kwargs,
        )

    def _choose(self, num_simulations, theta, x, validation, seed, fit_kwargs) -> FitResult:
        """The first training with several candidates: each trains on the same simulations
        under one seed (so on one validation split), and the one of least validation
        negative log-likelihood becomes the estimator; returns its result."""
        if not isinstance(validation, float) or "objective" in fit_kwargs:
            raise ValueError(
                "choosing among estimators compares their validation likelihoods: give a "
                "validation fraction and each estimator's own objective"
            )
        for each in self.estimator:
            _check_validated_by_likelihood(each)
        if seed is None:  # one seed for all: the same validation split
            seed = draw_seed()
        if theta is None or x is None:  # simulated once, for all
            theta, x = self.simulations(num_simulations, theta, x, seed)
        trained = []
        for each in self.estimator:
            candidate = PosteriorEstimator(
                self.model,
                each,
                parameters=self.parameters,
                observed=self.observed,
                truncate=self.truncate,
                embedding=copy.deepcopy(self.embedding),  # a module of its own for each
                device=self._device,
                dtype=self._dtype,
                **self.family_kwargs,
            )
            result = candidate.train(theta=theta, x=x, validation=validation, seed=seed, **fit_kwargs)
            trained.append((candidate, result))
        self.selection = {_label(c.estimator): r.best_val for c, r in trained}
        best, result = min(trained, key=lambda pair: pair[1].best_val)
        self.estimator, self.embedding, self.family = best.estimator, best.embedding, best.family
        self.x_shape, self.x_standardizer, self.prior_support = (
            best.x_shape,
            best.x_standardizer,
            best.prior_support,
        )
        return result

    def _observation_shape(self, given: Tensor | None, d_x: int) -> torch.Size:
        """The shape of one observation, which an embedding network reads: a given ``x``'s
        beyond its rows where it has more than two dimensions, else the observation site's
        in a run of the model where that holds ``d_x`` numbers; flat without an embedding."""
        if isinstance(given, Tensor) and given.dim() > 2:
            return given.shape[1:]
        if self.embedding is None:
            return torch.Size([d_x])
        with torch.no_grad():
            site = pyro.poutine.trace(self.model).get_trace().nodes.get(self.observed)
        if site is not None and site["value"].numel() == d_x:
            return site["value"].shape
        return torch.Size([d_x])

    def simulations(
        self, num_simulations: int | None, theta: Tensor | None, x: Tensor | None, seed: int | None
    ) -> tuple[Tensor, Tensor]:
        """The training pairs, simulated from the model (``num_simulations``) or given
        (``theta``, ``x``), flattened to one row each and checked.

        Raises:
            ValueError: neither or only one of ``theta``, ``x``; mismatched rows; NaN or Inf.
        """
        if (theta is None) != (x is None):
            raise ValueError("give both theta and x, or neither")
        if theta is None:
            if num_simulations is None:
                raise ValueError("give num_simulations, or theta and x")
            theta, x = simulate(
                self.model, num_simulations, parameters=self.parameters, observed=self.observed, seed=seed
            )
        theta, x = theta.reshape(theta.shape[0], -1), x.reshape(x.shape[0], -1)
        if theta.shape[0] != x.shape[0]:
            raise ValueError(f"theta has {theta.shape[0]} rows, x has {x.shape[0]}")
        finite = torch.isfinite(x).all(-1) & torch.isfinite(theta).all(-1)
        if not finite.all():
            raise ValueError(
                f"{int((~finite).sum())} simulations have NaN or Inf values (first at row "
                f"{int((~finite).nonzero()[0, 0])}); drop them or fix the simulator"
            )
        return theta, x

    # -- files ---------------------------------------------------------------------------
    def save(self, path) -> None:
        """Save the trained estimator to ``path`` atomically: the family (as
        :func:`pyro_xform.save`), the observations' standardization and shape, and the
        prior's support; the simulator is code and stays with the user.

        Examples:
            >>> import os, tempfile
            >>> from pyro_xform.infer.simulators import gaussian_linear
            >>> npe = PosteriorEstimator(gaussian_linear, hidden=(8,), transforms=1)
            >>> _ = npe.train(300, steps=5, progress=False, seed=0)
            >>> path = os.path.join(tempfile.mkdtemp(), "npe.pt")
            >>> npe.save(path)
            >>> again = PosteriorEstimator.load(path, gaussian_linear)
            >>> x, theta = torch.zeros(10), torch.zeros(3, 10)
            >>> torch.equal(again.posterior(x).log_prob(theta), npe.posterior(x).log_prob(theta))
            True
        """
        if self.family is None or self.x_standardizer is None:
            raise RuntimeError("train the estimator first")
        support = self.prior_support
        checkpoint.save(
            self.family,
            path,
            estimator=self.estimator if isinstance(self.estimator, str) else None,
            parameters=list(self.parameters),
            observed=self.observed,
            truncate=self.truncate,
            x_shape=list(self.x_shape),
            x_standardizer=self.x_standardizer.state_dict(),
            support=None if support is None else [support.lower, support.upper],
        )

    @classmethod
    def load(cls, path, model: Callable | None = None) -> PosteriorEstimator:
        """An estimator saved by :meth:`save`, read with ``weights_only=True``, ready for
        :meth:`posterior`; ``model`` is the simulator again (needed to train on, or for
        :func:`~pyro_xform.infer.posterior_predictive`)."""
        obj = checkpoint.read(path)
        if "x_standardizer" not in obj:
            raise ValueError(f"{path} holds a model, not an estimator: read it with pyro_xform.load")
        family = checkpoint.load(path)
        estimator = cls(
            model,
            family,
            parameters=obj["parameters"],
            observed=obj["observed"],
            truncate=obj["truncate"],
        )
        estimator.estimator = obj["estimator"] or family
        estimator.x_shape = torch.Size(obj["x_shape"])
        standardizer = Standardize(family.context_features)
        standardizer.load_state_dict(obj["x_standardizer"])
        estimator.x_standardizer = standardizer.to(family.device, family.base_loc.dtype)
        if obj["support"] is not None:
            estimator.prior_support = ToBox(*obj["support"]).to(family.device, family.base_loc.dtype)
        return estimator

    # -- inference -----------------------------------------------------------------------
    def _flat(self, x_obs: Tensor) -> Tensor:
        """Observations ``(..., *x_shape)`` as ``(..., d_x)``; flat ones as they are."""
        k = len(self.x_shape)
        if k > 1 and x_obs.dim() >= k and x_obs.shape[-k:] == self.x_shape:
            return flatten_event(x_obs, self.x_shape)
        return x_obs

    def posterior(self, x_obs: Tensor, **settings) -> XformDistribution:
        """:math:`q(\\theta \\mid x_{obs})`; a batch of observations ``(..., d_x)`` gives a
        batch of posteriors, truncated to the prior's support where it is bounded (see the
        class). ``x_obs`` is moved to the estimator's device and dtype; ``settings`` as in
        calling the family (solver settings)."""
        if self.family is None or self.x_standardizer is None:
            raise RuntimeError("train the estimator first")
        if not isinstance(x_obs, Tensor):
            raise ValueError(f"x_obs must be a torch.Tensor, got {type(x_obs).__name__}")
        inner = self.family(self._standardized(self._flat(x_obs)), **settings)
        return inner if self.prior_support is None else TruncatedPosterior(inner, self.prior_support)
