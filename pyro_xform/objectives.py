"""Training objectives, one per name: each maps ``(model, batch, context)`` to a loss.

Maximum likelihood goes through Pyro: the loss is :class:`pyro.infer.Trace_ELBO` of the
model ``pyro.sample("x", model(context), obs=batch)`` (inside a ``pyro.plate``) with an
empty guide, i.e. exactly what a hand-written Pyro SVI loop minimizes.
"""

from __future__ import annotations

from typing import ClassVar

import pyro
from pyro.infer import Trace_ELBO
from torch import Tensor

from .core import Xform

__all__ = ["OBJECTIVES", "MaximumLikelihood", "Objective", "get_objective"]


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


#: Objectives by name.
OBJECTIVES: dict[str, type[Objective]] = {"mle": MaximumLikelihood}


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
