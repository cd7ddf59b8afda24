"""Training objectives, one per name: each maps ``(model, batch, context)`` to a loss.

Regression objectives (``"cfm"``, ``"dsm"``) draw their own noise and times from torch's
global generator (seeded by ``fit``); their validation figure uses a fixed seed so that
successive measurements are comparable.

Maximum likelihood is the negative log-density read off the model's distribution: exactly
what a hand-written Pyro SVI loop with an empty guide minimizes for
``pyro.sample("x", model(context), obs=batch)``. The ELBO of a latent-variable model goes
through Pyro, on the model's own ``model``/``guide`` pair.

An objective computes losses, one per parameter group it trains (:meth:`Objective.losses`);
the optimizer steps are :func:`~pyro_xform.fit`'s. An adversarial objective yields its
discriminator's and its generator's losses in turn. Objectives with options are passed to
``fit`` as instances, e.g. ``fit(vae, data, objective=ELBO(beta=0.5, anneal_steps=1000))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor

from .core import Xform, is_count
from .families import Autoencoder, Diffusion, FlowMatching
from .metrics import sliced_wasserstein
from .rng import fixed_seed

__all__ = [
    "ELBO",
    "OBJECTIVES",
    "Adversarial",
    "ConditionalFlowMatching",
    "DenoisingScoreMatching",
    "MaximumLikelihood",
    "Objective",
    "Reconstruction",
    "get_objective",
]


class Objective:
    """A training objective. ``loss`` is minimized; ``loss / batch size`` is reported.

    ``validation_loss`` is the per-example figure used for early stopping.
    :meth:`parameter_groups` says which parameters each optimizer trains (one group:
    one optimizer, named in :meth:`loss_names`) and :meth:`losses` yields the loss of each
    step of one training iteration, with the index of the group it trains.
    """

    name: ClassVar[str] = ""
    #: Extra Adam settings (e.g. ``betas``) for this objective's optimizers.
    adam: ClassVar[dict[str, Any]] = {}

    def compatible(self, model: Xform) -> bool:
        return True

    def loss(self, model: Xform, batch: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def validation_loss(self, model: Xform, batch: Tensor, context: Tensor | None) -> Tensor:
        return self.loss(model, batch, context) / batch.shape[0]

    def parameter_groups(self, model: Xform) -> list[list[torch.nn.Parameter]]:
        return [[p for p in model.parameters() if p.requires_grad]]

    def loss_names(self) -> list[str]:
        """What each parameter group's loss is called in messages."""
        return [f"{self.name} loss"]

    def losses(
        self, model: Xform, batch: Tensor, context: Tensor | None, step: int
    ) -> Iterator[tuple[int, Tensor]]:
        """The ``(group, loss)`` pairs of training iteration ``step`` (counting from 1), in
        order; the caller takes an optimizer step on each before asking for the next. The
        iteration's reported loss is the last one of group 0."""
        yield 0, self.loss(model, batch, context)


class MaximumLikelihood(Objective):
    """Negative log-likelihood :math:`-\\sum_i \\log p_\\theta(x_i \\mid c_i)`, read off the
    model's distribution: what ``Trace_ELBO`` returns for ``pyro.sample("x", model(c), obs=x)``
    under a data plate with an empty guide, without Pyro's trace bookkeeping.

    Args:
        **settings: passed to the model's call, ``model(context, **settings)`` — e.g. a cheaper
            solver for a continuous-time family, ``MaximumLikelihood(solver="rk4", steps=8,
            trace="hutchinson")`` (an unbiased estimate of the log-likelihood and its gradient
            at a fraction of the exact trace's cost). Validation uses the same settings.

    Examples:
        >>> import pyro_xform
        >>> fm = pyro_xform.FlowMatching(2, hidden=(16,))
        >>> data = pyro_xform.datasets.toy("moons", n=256)
        >>> objective = MaximumLikelihood(solver="rk4", steps=4)
        >>> pyro_xform.fit(fm, data, objective=objective, steps=2, progress=False).objective
        'mle'
    """

    name = "mle"

    def __init__(self, **settings) -> None:
        self.settings = settings

    def compatible(self, model: Xform) -> bool:
        return model.log_prob_kind == "exact"

    def loss(self, model, batch, context):
        return -model(context, **self.settings).log_prob(batch).sum()

    def validation_loss(self, model, batch, context):
        return _mean_nll(model, batch, context, self.settings)


def _mean_nll(model: Xform, batch: Tensor, context: Tensor | None, settings: dict) -> Tensor:
    return -model(context, **settings).log_prob(batch).mean()


class _Regression(Objective):
    """A regression loss of one family (``family``; :meth:`loss` calls its method), summed
    over the batch.

    Args:
        validation: what ``fit`` measures on the validation split: ``"loss"`` (this
            regression loss at a fixed seed; cheap) or ``"nll"`` (the model's negative
            log-likelihood, by its exact density; the regression loss plateaus long before
            the density stops changing, and does not see it get worse).
        **settings: with ``"nll"``, passed to the model's call, e.g. ``solver="rk4",
            steps=16`` for a cheaper ODE solve.
    """

    family: ClassVar[type[Xform]] = Xform

    def __init__(self, validation: str = "loss", **settings) -> None:
        if validation not in ("loss", "nll"):
            raise ValueError(f"validation must be 'loss' or 'nll', got {validation!r}")
        if settings and validation != "nll":
            raise ValueError(f"settings {sorted(settings)} apply to validation='nll' only")
        self.validation, self.settings = validation, settings

    def compatible(self, model: Xform) -> bool:
        has_density = self.validation != "nll" or model.log_prob_kind is not None
        return isinstance(model.unwrapped, self.family) and has_density

    def validation_loss(self, model, batch, context):
        if self.validation == "nll":
            return _mean_nll(model, batch, context, self.settings)
        with fixed_seed(batch.device):
            return self.loss(model, batch, context) / batch.shape[0]


class ConditionalFlowMatching(_Regression):
    """Conditional flow matching, :math:`\\sum_i \\|v_\\theta(x_{t_i}, t_i, c_i) - \\dot x_{t_i}\\|^2`
    (see :class:`pyro_xform.FlowMatching`)."""

    name = "cfm"
    family = FlowMatching

    def loss(self, model, batch, context):
        return model.cfm_loss(batch, context)


class DenoisingScoreMatching(_Regression):
    """Denoising score matching with noise prediction,
    :math:`\\sum_i \\|\\varepsilon_\\theta(x_{s_i}, s_i, c_i) - \\varepsilon_i\\|^2`
    (see :class:`pyro_xform.Diffusion`)."""

    name = "dsm"
    family = Diffusion

    def loss(self, model, batch, context):
        return model.dsm_loss(batch, context)


class Reconstruction(_Regression):
    """Reconstruction error of a deterministic autoencoder, plus the negative log-likelihood
    of its latent density on the (gradient-stopped) codes (see :class:`pyro_xform.Autoencoder`)."""

    name = "reconstruction"
    family = Autoencoder

    def loss(self, model, batch, context):
        return model.reconstruction_loss(batch, context)

    def __init__(self) -> None:
        super().__init__()

    def validation_loss(self, model, batch, context):
        return model.reconstruction_error(batch, context) / batch.shape[0]


class ELBO(Objective):
    """The evidence lower bound of a latent-variable model, through Pyro's SVI machinery:

    .. math:: \\mathcal L(x) = \\mathbb E_{q(z\\mid x)}[\\log p(x \\mid z)]
        - \\beta_t\\, \\mathrm{KL}\\big(q(z \\mid x) \\,\\|\\, p(z)\\big),

    minimized as :math:`-\\sum_i \\mathcal L(x_i)` by ``Trace_ELBO`` on the model's
    ``model``/``guide`` pair, or ``TraceMeanField_ELBO`` (analytic KL) where the prior and
    the posterior are both diagonal Gaussians. :math:`\\beta_t = \\beta \\min(1, t / T)`
    anneals the KL weight over ``anneal_steps`` :math:`T` (Bowman et al., 2016).
    The validation figure is always the plain negative ELBO (:math:`\\beta = 1`) per example.

    Args:
        beta: weight of the KL term (β-VAE, Higgins et al., 2017).
        anneal_steps: steps over which the KL weight grows linearly from 0 to ``beta``.
        particles: Monte Carlo samples of :math:`z` per example.
        analytic_kl: force (True) or forbid (False) the analytic KL; ``None`` lets the model say.

    References:
        Auto-encoding variational Bayes (Kingma, Welling, 2013, arXiv:1312.6114).
        Generating sentences from a continuous space (Bowman et al., 2016, arXiv:1511.06349).
    """

    name = "elbo"

    def __init__(
        self, beta: float = 1.0, anneal_steps: int = 0, particles: int = 1, analytic_kl: bool | None = None
    ) -> None:
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if not is_count(anneal_steps, 0):
            raise ValueError(f"anneal_steps must be an int >= 0, got {anneal_steps!r}")
        if not is_count(particles):
            raise ValueError(f"particles must be a positive int, got {particles!r}")
        self.beta, self.anneal_steps, self.particles, self.analytic_kl = (
            beta,
            anneal_steps,
            particles,
            analytic_kl,
        )
        self._elbos: dict[bool, Trace_ELBO] = {}

    def compatible(self, model: Xform) -> bool:
        return callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))

    def elbo(self, model: Xform) -> Trace_ELBO:
        analytic = getattr(model, "analytic_kl", False) if self.analytic_kl is None else self.analytic_kl
        if analytic not in self._elbos:
            kind = TraceMeanField_ELBO if analytic else Trace_ELBO
            vectorize = self.particles > 1
            self._elbos[analytic] = kind(
                num_particles=self.particles, vectorize_particles=vectorize, max_plate_nesting=1
            )
        return self._elbos[analytic]

    def kl_weight(self, step: int) -> float:
        if self.anneal_steps == 0:
            return float(self.beta)
        return float(self.beta) * min(1.0, step / self.anneal_steps)

    def loss(self, model, batch, context, kl_weight: float = 1.0):
        return self.elbo(model).differentiable_loss(
            model.model, model.guide, batch, context, kl_weight=kl_weight
        )

    def validation_loss(self, model, batch, context):
        with fixed_seed(batch.device):
            return self.loss(model, batch, context) / batch.shape[0]

    def loss_names(self) -> list[str]:
        return ["negative ELBO"]

    def losses(self, model, batch, context, step):
        yield 0, self.loss(model, batch, context, kl_weight=self.kl_weight(step))


def _fakes(model, n: int, context: Tensor | None) -> Tensor:
    """``n`` reparameterized draws of the model (one per context row when conditional)."""
    return model(context).rsample((n,) if context is None else ())


class Adversarial(Objective):
    """Adversarial training of a generator :math:`G` against a discriminator :math:`D`
    (see :class:`pyro_xform.GAN`), alternating ``d_steps`` discriminator steps and one
    generator step, each with its own Adam (``betas=(0.5, 0.9)``).

    Non-saturating loss (default) with the R1 penalty on real data,

    .. math:: L_D = \\textstyle\\sum_i \\operatorname{softplus}(-D(x_i))
        + \\operatorname{softplus}(D(G(z_i))) + \\tfrac{\\gamma}{2}\\|\\nabla_x D(x_i)\\|^2,
        \\qquad L_G = \\textstyle\\sum_i \\operatorname{softplus}(-D(G(z_i))),

    or WGAN-GP, :math:`L_D = \\sum_i D(G(z_i)) - D(x_i) + \\lambda(\\|\\nabla D(\\hat x_i)\\| - 1)^2`
    on random interpolates :math:`\\hat x`, :math:`L_G = -\\sum_i D(G(z_i))`.

    A GAN has no likelihood, so the validation figure is a sample-based one: the sliced
    Wasserstein distance between model draws and the validation data (fixed seed).
    The reported training loss is the generator's.

    Args:
        loss: ``"nonsaturating"`` or ``"wgan-gp"``.
        r1: :math:`\\gamma` of the R1 penalty (non-saturating loss).
        gp: :math:`\\lambda` of the gradient penalty (WGAN-GP).
        d_steps: discriminator steps per generator step.

    References:
        Generative adversarial nets (Goodfellow et al., 2014, arXiv:1406.2661).
        Which training methods for GANs do actually converge? (Mescheder, Geiger, Nowozin,
        2018, arXiv:1801.04406). Improved training of Wasserstein GANs (Gulrajani et al.,
        2017, arXiv:1704.00028).
    """

    name = "adversarial"
    adam: ClassVar[dict[str, Any]] = {"betas": (0.5, 0.9)}

    def __init__(
        self, loss: str = "nonsaturating", r1: float = 1.0, gp: float = 10.0, d_steps: int = 1
    ) -> None:
        if loss not in ("nonsaturating", "wgan-gp"):
            raise ValueError(f"loss must be 'nonsaturating' or 'wgan-gp', got {loss!r}")
        for name, value in (("r1", r1), ("gp", gp)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not is_count(d_steps):
            raise ValueError(f"d_steps must be a positive int, got {d_steps!r}")
        self.loss_kind, self.r1, self.gp, self.d_steps = loss, r1, gp, d_steps

    def compatible(self, model: Xform) -> bool:
        return isinstance(getattr(model, "discriminator", None), torch.nn.Module) and callable(
            getattr(model, "discriminate", None)
        )

    def parameter_groups(self, model):
        critic = list(model.discriminator.parameters())
        ids = {id(p) for p in critic}
        return [[p for p in model.parameters() if id(p) not in ids], critic]

    def _gradient_norm2(self, model, x, context) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        score = model.discriminate(x, context)
        (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
        return score, model.flatten(grad).pow(2).sum(-1)

    def discriminator_loss(self, model, real, fake, context) -> Tensor:
        if self.loss_kind == "nonsaturating":
            if self.r1 > 0:
                real_score, norm2 = self._gradient_norm2(model, real, context)
                penalty = 0.5 * self.r1 * norm2
            else:
                real_score, penalty = model.discriminate(real, context), 0.0
            fake_score = model.discriminate(fake, context)
            return (F.softplus(-real_score) + F.softplus(fake_score) + penalty).sum()
        events = len(model.event_shape)  # one interpolation weight per datum
        eps = torch.rand(
            (*real.shape[: real.dim() - events], *(1,) * events), dtype=real.dtype, device=real.device
        )
        _, norm2 = self._gradient_norm2(model, eps * real + (1 - eps) * fake, context)
        penalty = self.gp * (norm2.clamp_min(1e-12).sqrt() - 1).pow(2)
        return (model.discriminate(fake, context) - model.discriminate(real, context) + penalty).sum()

    def generator_loss(self, model, fake: Tensor, context) -> Tensor:
        score = model.discriminate(fake, context)
        return (F.softplus(-score) if self.loss_kind == "nonsaturating" else -score).sum()

    def loss(self, model, batch, context):
        return self.generator_loss(model, _fakes(model, batch.shape[0], context), context)

    def validation_loss(self, model, batch, context):
        with fixed_seed(batch.device):
            fake = _fakes(model, batch.shape[0], context)
        return torch.tensor(sliced_wasserstein(model.flatten(fake), model.flatten(batch)))

    def loss_names(self) -> list[str]:
        return ["generator loss", "discriminator loss"]

    def losses(self, model, batch, context, step):
        for _ in range(self.d_steps):
            with torch.no_grad():
                fake = _fakes(model, batch.shape[0], context)
            yield 1, self.discriminator_loss(model, batch, fake, context)
        # The discriminator is held fixed in the generator's step: no gradient is spent on it.
        frozen = [p for p in model.discriminator.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield 0, self.loss(model, batch, context)
        finally:
            for p in frozen:
                p.requires_grad_(True)


#: Objectives by name.
OBJECTIVES: dict[str, type[Objective]] = {
    "mle": MaximumLikelihood,
    "cfm": ConditionalFlowMatching,
    "dsm": DenoisingScoreMatching,
    "elbo": ELBO,
    "reconstruction": Reconstruction,
    "adversarial": Adversarial,
}


def get_objective(name: str | Objective | None, model: Xform) -> Objective:
    """The objective called ``name`` (the model's default when ``None``; an :class:`Objective`
    instance is taken as it is), checked against the model."""
    if isinstance(name, Objective):
        objective = name
    else:
        name = model.default_objective if name is None else name
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
        objective = OBJECTIVES[name]()
    if not objective.compatible(model):
        raise ValueError(
            f"objective {objective.name!r} does not apply to {type(model).__name__} "
            f"(log_prob_kind={model.log_prob_kind!r}); its default is {model.default_objective!r}"
        )
    return objective
