"""Neural likelihood estimation: a conditional family of the observations given the
parameters, used as the likelihood of a Pyro model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..core import Xform, XformDistribution
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
    exchanged: ``"flow"`` (an NSF with residual conditioners, full-batch maximum
    likelihood with early stopping), ``"flow_matching"``, ``"diffusion"`` or a built
    conditional model (``features`` = observation size, ``context`` = parameter size).
    The parameters are standardized by the simulations' mean and standard deviation
    before they condition the family; the observations are the family's data.

    Args:
        model: a Pyro model that samples the parameter sites and the observation site.
        estimator: ``"flow"``, ``"flow_matching"``, ``"diffusion"`` or a built model.
        parameters: the parameter site name(s); several are concatenated in this order.
        observed: the observation site name.
        device: where the estimator computes (default: where a new family is built).
        dtype: its floating-point dtype (default: the family's).
        **family_kwargs: constructor arguments of the named family.

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
        estimator: str | Xform = "flow",
        *,
        parameters: str | Sequence[str] = "theta",
        observed: str = "x",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **family_kwargs,
    ) -> None:
        # A posterior estimator of x given theta: the same training, standardization and
        # placement, with nothing to truncate (the observations have no prior box).
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
        the estimator's defaults, as in :meth:`PosteriorEstimator.train`.

        Raises:
            ValueError: pairs with NaN or Inf values or mismatched rows.
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
        standardizer = self._estimator.x_standardizer
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
