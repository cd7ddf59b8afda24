"""Training objectives, one per name: each maps ``(model, batch, context)`` to a loss.

Regression objectives (``"cfm"``, ``"dsm"``) draw their own noise and times from torch's
global generator (seeded by ``fit``); their validation figure uses a fixed seed so that
successive measurements are comparable.

Maximum likelihood goes through Pyro: the loss is :class:`pyro.infer.Trace_ELBO` of the
model ``pyro.sample("x", model(context), obs=batch)`` (inside a ``pyro.plate``) with an
empty guide, i.e. exactly what a hand-written Pyro SVI loop minimizes.
"""

from __future__ import annotations

from typing import ClassVar

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from .core import Xform

__all__ = [
    "OBJECTIVES",
    "ConditionalFlowMatching",
    "DenoisingScoreMatching",
    "MaximumLikelihood",
    "Objective",
    "get_objective",
]


class Objective:
    """A training objective. ``loss`` is minimized; ``loss / batch size`` is reported.

    ``validation_loss`` is the per-example figure used for early stopping.
    """

    name: ClassVar[str] = ""

    def compatible(self, model: Xform) -> bool:
        return True

    def loss(self, model: Xform, batch: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def validation_loss(self, model: Xform, batch: Tensor, context: Tensor | None) -> Tensor:
        return self.loss(model, batch, context) / batch.shape[0]


def _mle_model(model: Xform, batch: Tensor, context: Tensor | None) -> None:
    with pyro.plate("data", batch.shape[0]):
        pyro.sample("x", model(context), obs=batch)


def _empty_guide(model: Xform, batch: Tensor, context: Tensor | None) -> None:
    pass


class MaximumLikelihood(Objective):
    """Negative log-likelihood :math:`-\\sum_i \\log p_\\theta(x_i \\mid c_i)`, computed by
    Pyro's ``Trace_ELBO`` on an observed site with an empty guide."""

    name = "mle"

    def __init__(self) -> None:
        self.elbo = Trace_ELBO()

    def compatible(self, model: Xform) -> bool:
        return model.log_prob_kind == "exact"

    def loss(self, model, batch, context):
        return self.elbo.differentiable_loss(_mle_model, _empty_guide, model, batch, context)

    def validation_loss(self, model, batch, context):
        return -model(context).log_prob(batch).mean()


class _Regression(Objective):
    """An objective computed by a method of the model (``method``), summed over the batch."""

    method: ClassVar[str] = ""

    def compatible(self, model: Xform) -> bool:
        return callable(getattr(model, self.method, None))

    def loss(self, model, batch, context):
        return getattr(model, self.method)(batch, context)

    def validation_loss(self, model, batch, context):
        # The same draws at every measurement: a fixed seed, without touching the training stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self.loss(model, batch, context) / batch.shape[0]


class ConditionalFlowMatching(_Regression):
    """Conditional flow matching, :math:`\\sum_i \\|v_\theta(x_{t_i}, t_i, c_i) - \\dot x_{t_i}\\|^2`
    (see :class:`pyro_xform.FlowMatching`)."""

    name = "cfm"
    method = "cfm_loss"


class DenoisingScoreMatching(_Regression):
    """Denoising score matching with noise prediction,
    :math:`\\sum_i \\|\varepsilon_\theta(x_{s_i}, s_i, c_i) - \varepsilon_i\\|^2`
    (see :class:`pyro_xform.Diffusion`)."""

    name = "dsm"
    method = "dsm_loss"


#: Objectives by name.
OBJECTIVES: dict[str, type[Objective]] = {
    "mle": MaximumLikelihood,
    "cfm": ConditionalFlowMatching,
    "dsm": DenoisingScoreMatching,
}


def get_objective(name: str | None, model: Xform) -> Objective:
    """The objective called ``name`` (the model's default when ``None``), checked against the model."""
    name = model.default_objective if name is None else name
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
    objective = OBJECTIVES[name]()
    if not objective.compatible(model):
        raise ValueError(
            f"objective {name!r} does not apply to {type(model).__name__} "
            f"(log_prob_kind={model.log_prob_kind!r}); its default is {model.default_objective!r}"
        )
    return objective
