"""Neural likelihood estimation: a conditional family of the observations given the
parameters, used as the likelihood of a Pyro model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import MCMC, NUTS
from torch import Tensor
from torch.distributions import Distribution, biject_to

from ..core import Xform, XformDistribution, is_count
from ..fit import FitResult
from .amortized import PosteriorEstimator

__all__ = ["LikelihoodEstimator"]


class LikelihoodEstimator:
    """Neural likelihood estimation for a simulator written as a Pyro model: one call
    trains a conditional family :math:`q_\\phi(x \\mid \\theta)` on simulated pairs, and
    :meth:`likelihood` returns it for any parameters as an
    :class:`~pyro_xform.XformDistribution` over the observation, the observation site of
    any Pyro model:

    .. code-block:: python

        def model(x_obs):
            theta = pyro.sample("theta", prior)               # any prior
            with pyro.plate("trials", len(x_obs)):            # i.i.d. observations
                pyro.sample("x", nle.likelihood(theta), obs=x_obs)

    so NUTS (Pyro's, or NumPyro's after export), SVI or ``Predictive`` give the posterior
    under a prior chosen after training, and a sum over i.i.d. observations costs nothing
    more. The density is exact (differentiable in :math:`\\theta`, as NUTS needs):

    .. math:: p(\\theta \\mid x_{1:n}) \\propto p(\\theta) \\prod_{i=1}^n q_\\phi(x_i \\mid \\theta).

    The estimators are those of :class:`PosteriorEstimator` with the roles of the sites
    exchanged: ``"flow"`` (an NSF with residual conditioners, maximum likelihood
    with early stopping), ``"maf"`` (affine autoregressive layers, trained alike),
    ``"flow_matching"``, ``"diffusion"`` or a built conditional model (``features`` =
    observation size, ``context`` = parameter size). Given several, the first training
    trains each on the same simulations and the same validation split and keeps the one
    whose validation negative log-likelihood is lowest,

    .. math:: \\hat q = \\arg\\min_{q} -\\frac{1}{|V|} \\sum_{(\\theta, x) \\in V} \\log q(x \\mid \\theta),

    since no one family fits every simulator's likelihood best (:attr:`selection` keeps
    the figures); the default chooses between the NSF and the MAF. The parameters are
    standardized by the simulations' mean and standard deviation before they condition
    the family; the observations are the family's data.

    Args:
        model: a Pyro model that samples the parameter sites and the observation site.
        estimator: ``"flow"``, ``"maf"``, ``"flow_matching"``, ``"diffusion"``, a built
            model, or a sequence of them to choose from by validation likelihood (their
            validation losses must be negative log-likelihoods: every named estimator's
            is, and a built model's under maximum likelihood).
        parameters: the parameter site name(s); several are concatenated in this order.
        observed: the observation site name.
        device: where the estimator computes (default: where a new family is built).
        dtype: its floating-point dtype (default: the family's).
        **family_kwargs: constructor arguments of the named families (every one of them).

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro_xform.infer.simulators import gaussian_linear
        >>> nle = LikelihoodEstimator(gaussian_linear, hidden=(16,), transforms=2)
        >>> result = nle.train(500, steps=20, progress=False, seed=0)
        >>> nle.likelihood(torch.zeros(10)).log_prob(torch.zeros(3, 10)).shape
        torch.Size([3])

    References:
        Sequential neural likelihood: fast likelihood-free inference with autoregressive
        flows (Papamakarios, Sterratt, Murray, 2018, arXiv:1805.07226). Benchmarking
        simulation-based inference (Lueckmann et al., 2021, arXiv:2101.04653).
    """

    def __init__(
        self,
        model: Callable,
        estimator: str | Xform | Sequence[str | Xform] = ("flow", "maf"),
        *,
        parameters: str | Sequence[str] = "theta",
        observed: str = "x",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **family_kwargs,
    ) -> None:
        # A posterior estimator of x given theta: the same training, standardization,
        # choice among candidates and placement, with nothing to truncate (the observations
        # have no prior box).
        self._estimator = PosteriorEstimator(
            model,
            estimator,
            parameters=parameters,
            observed=observed,
            truncate=False,
            device=device,
            dtype=dtype,
            **family_kwargs,
        )

    @property
    def selection(self) -> dict[str, float]:
        """The validation negative log-likelihood of each candidate of the first training,
        by estimator name (a built model by its class name); empty before it, and for a
        single estimator."""
        return self._estimator.selection

    @property
    def model(self) -> Callable:
        """The simulator."""
        return self._estimator.model

    @property
    def parameters(self) -> list[str]:
        """The parameter site names, in the order their values are concatenated."""
        return self._estimator.parameters

    @property
    def observed(self) -> str:
        """The observation site name."""
        return self._estimator.observed

    @property
    def family(self) -> Xform | None:
        """The conditional family :math:`q_\\phi(x \\mid \\theta)` (``None`` before training)."""
        return self._estimator.family

    @property
    def parameter_standardizer(self):
        """The standardization of the parameters before they condition the family (a
        :class:`~pyro_xform.transforms.Standardize`; ``None`` before training)."""
        return self._estimator.x_standardizer

    @property
    def device(self) -> torch.device:
        return self._estimator.device

    @property
    def dtype(self) -> torch.dtype:
        return self._estimator.dtype

    def to(self, device=None, dtype=None) -> LikelihoodEstimator:
        """Move the estimator to ``device`` and/or ``dtype`` (as :meth:`PosteriorEstimator.to`)."""
        self._estimator.to(device, dtype)
        return self

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
        """Simulate ``num_simulations`` pairs (or take given ``theta``, ``x``) and train
        :math:`q_\\phi(x \\mid \\theta)`; ``fit_kwargs`` go to :func:`pyro_xform.fit` over
        the estimator's defaults, as in :meth:`PosteriorEstimator.train` (which chooses
        among several candidates).

        Raises:
            ValueError: pairs with NaN or Inf values or mismatched rows; several candidates
                without a validation fraction, or one whose validation is no likelihood.
        """
        theta, x = self._estimator.simulations(num_simulations, theta, x, seed)
        return self._estimator.train(theta=x, x=theta, validation=validation, seed=seed, **fit_kwargs)

    def save(self, path) -> None:
        """Save the trained estimator to ``path`` atomically (as
        :meth:`PosteriorEstimator.save`)."""
        self._estimator.save(path)

    @classmethod
    def load(cls, path, model: Callable | None = None) -> LikelihoodEstimator:
        """An estimator saved by :meth:`save`, ready for :meth:`likelihood`; ``model`` is
        the simulator again.

        Examples:
            >>> import os, tempfile
            >>> from pyro_xform.infer.simulators import gaussian_linear
            >>> nle = LikelihoodEstimator(gaussian_linear, hidden=(8,), transforms=1)
            >>> _ = nle.train(300, steps=5, progress=False, seed=0)
            >>> path = os.path.join(tempfile.mkdtemp(), "nle.pt")
            >>> nle.save(path)
            >>> again = LikelihoodEstimator.load(path, gaussian_linear)
            >>> theta, x = torch.zeros(10), torch.zeros(3, 10)
            >>> torch.equal(again.likelihood(theta).log_prob(x), nle.likelihood(theta).log_prob(x))
            True
        """
        estimator = cls.__new__(cls)
        estimator._estimator = PosteriorEstimator.load(path, model)
        return estimator

    def likelihood(self, theta: Tensor, **settings) -> XformDistribution:
        """:math:`q_\\phi(x \\mid \\theta)`, batch shape ``theta.shape[:-1]``, event shape
        ``(d_x,)``; ``theta`` is moved to the estimator's device and dtype; ``settings`` as
        in calling the family (solver settings)."""
        standardizer = self.parameter_standardizer
        if standardizer is None:
            raise RuntimeError("train the estimator first")
        if not isinstance(theta, Tensor):
            raise ValueError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
        if theta.dim() == 0 or theta.shape[-1] != standardizer.features:
            raise ValueError(
                f"theta has {theta.shape[-1] if theta.dim() else 0} numbers per draw; the "
                f"simulations had {standardizer.features}"
            )
        return self._estimator.posterior(theta, **settings)

    def sample_posterior(
        self,
        x_obs: Tensor,
        n: int,
        *,
        chains: int = 10,
        warmup: int = 500,
        candidates: int = 10_000,
        seed: int | None = None,
    ) -> Tensor:
        """``n`` draws of the posterior under the simulator's own prior and the learned
        likelihood, by NUTS (Pyro's):

        .. math:: p(\\theta \\mid x_{1:m}) \\propto p(\\theta) \\prod_{i=1}^m q_\\phi(x_i \\mid \\theta).

        ``chains`` independent chains run as one NUTS over their product (a plate of
        chains: one vectorized likelihood call for all), each started at a draw of
        sampling-importance resampling from the prior (``candidates`` prior draws weighted
        by the learned likelihood, as sbi starts its chains), so that separate modes get
        chains of their own. The prior is the parameter sites' distributions as the
        simulator draws them; for another prior, write the model with :meth:`likelihood`
        at its observation site and run NUTS on it. The same posterior by NumPyro's
        compiled NUTS, many times faster, is :func:`pyro_xform.numpyro.sample_posterior`.

        Args:
            x_obs: one observation ``(d_x,)`` or ``m`` i.i.d. ones ``(m, d_x)``.
            n: the number of draws (the first ``ceil(n / chains)`` of every chain).
            chains: chains; ``warmup``: warm-up steps of each (step size, diagonal mass).
            candidates: prior draws for the chains' starting points.
            seed: seeds the starting points and the chains.

        Raises:
            ValueError: bad counts or observations, or a prior whose sites depend on
                other draws (no fixed prior to sample under).

        Examples:
            >>> from pyro_xform.infer.simulators import gaussian_linear
            >>> nle = LikelihoodEstimator(gaussian_linear, hidden=(8,), transforms=1)
            >>> _ = nle.train(300, steps=5, progress=False, seed=0)
            >>> nle.sample_posterior(torch.zeros(10), 20, chains=2, warmup=20, seed=0).shape
            torch.Size([20, 10])
        """
        for name, value in (("n", n), ("chains", chains), ("warmup", warmup), ("candidates", candidates)):
            if not is_count(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        x_obs = self.check_observations(x_obs)
        if seed is not None:
            pyro.set_rng_seed(seed)
        priors = self.prior_sites()
        start = self.starting_points(x_obs, chains, candidates)
        model = self._chained_model(priors, x_obs, chains)
        initial = {name: biject_to(fn.support).inv(start[name]) for name, fn in priors}
        mcmc = MCMC(
            NUTS(model),
            num_samples=math.ceil(n / chains),
            warmup_steps=warmup,
            initial_params=initial,
            disable_progbar=True,
        )
        mcmc.run()
        draws = mcmc.get_samples()
        theta = torch.cat([draws[name].reshape(*draws[name].shape[:2], -1) for name, _ in priors], -1)
        return theta.detach().reshape(-1, theta.shape[-1])[:n]

    def check_observations(self, x_obs: Tensor) -> Tensor:
        """``x_obs``, one observation ``(d_x,)`` or ``m`` i.i.d. ones, as ``(m, d_x)`` on
        the estimator's device and dtype.

        Raises:
            ValueError: not a tensor of one or two dimensions, no rows, the wrong size or
                NaN/Inf values.
            RuntimeError: an untrained estimator.
        """
        if not isinstance(x_obs, Tensor) or x_obs.dim() not in (1, 2) or x_obs.shape[0] == 0:
            shape = getattr(x_obs, "shape", x_obs)
            raise ValueError(f"x_obs must be a tensor (d_x,) or (m, d_x), got {shape!r}")
        if self.family is None:
            raise RuntimeError("train the estimator first")
        if x_obs.shape[-1] != self.family.features:
            raise ValueError(
                f"x_obs has {x_obs.shape[-1]} numbers per observation; the simulations had "
                f"{self.family.features}"
            )
        x_obs = x_obs.reshape(-1, x_obs.shape[-1]).to(self.device, self.dtype)
        if not torch.isfinite(x_obs).all():
            raise ValueError("x_obs has NaN or Inf values")
        return x_obs

    def prior_sites(self) -> list[tuple[str, Distribution]]:
        """The parameter sites and their prior distributions as the simulator draws them,
        every batch dimension of a site made part of its event.

        Raises:
            ValueError: a missing site, or one whose prior depends on other draws.
        """
        return _site_priors(self.model, self.parameters)

    @torch.no_grad()
    def starting_points(self, x_obs: Tensor, chains: int, candidates: int = 10_000) -> dict[str, Tensor]:
        """Every parameter site's starting values for ``chains`` chains, shape
        ``(chains, *site_shape)``: ``candidates`` prior draws resampled in proportion to
        the learned likelihood of ``x_obs`` (sampling-importance resampling, as sbi
        starts its chains), so that separate modes get chains of their own."""
        x_obs = self.check_observations(x_obs)
        priors = self.prior_sites()
        values = [fn.sample((candidates,)) for _, fn in priors]
        theta = torch.cat([v.reshape(candidates, -1) for v in values], -1).to(self.device, self.dtype)
        logw = self.likelihood(theta).log_prob(x_obs.unsqueeze(-2)).sum(0)
        if not torch.isfinite(logw).any():
            raise ValueError("the learned likelihood of x_obs is not finite at any prior draw")
        logw = logw.nan_to_num(-math.inf)
        pick = torch.multinomial(torch.softmax(logw, 0).cpu(), chains, replacement=True)
        return {name: v[pick.to(v.device)] for (name, _), v in zip(priors, values, strict=True)}

    def _chained_model(self, priors, x_obs: Tensor, chains: int) -> Callable:
        """The prior and the learned likelihood of ``x_obs`` for ``chains`` independent
        chains (a plate), the i.i.d. observations under a plate of their own."""

        def model():
            with pyro.plate("chains", chains, dim=-1):
                values = [pyro.sample(name, fn) for name, fn in priors]
                theta = torch.cat([v.reshape(chains, -1) for v in values], -1)
                with pyro.plate("observations", len(x_obs), dim=-2):
                    pyro.sample(self.observed, self.likelihood(theta), obs=x_obs.unsqueeze(-2))

        return model


def _site_priors(model: Callable, names: Sequence[str]) -> list[tuple[str, Distribution]]:
    """The parameter sites' distributions in one run of the model, every batch dimension
    made part of the event (one draw of a site is one value of it); refused where a site's
    distribution changes between two runs (it depends on other draws)."""
    with torch.no_grad():
        first, second = (pyro.poutine.trace(model).get_trace() for _ in range(2))
    priors = []
    for name in names:
        site = first.nodes.get(name)
        if site is None or site["type"] != "sample":
            raise ValueError(f"the model has no sample site {name!r}")
        fn, value = site["fn"], site["value"]
        if not torch.allclose(fn.log_prob(value), second.nodes[name]["fn"].log_prob(value)):
            raise ValueError(
                f"the prior of site {name!r} changes between runs of the model (it depends on "
                "other draws): write the model with nle.likelihood(theta) at its observation "
                "site and run NUTS on it"
            )
        priors.append((name, fn.to_event(len(fn.batch_shape)) if fn.batch_shape else fn))
    return priors
