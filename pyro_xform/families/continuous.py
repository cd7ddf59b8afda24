"""The common body of the continuous-time families: an ODE transform of a Gaussian base,
followed by a fixed standardization (marginal, or by regression on the context), with
solver settings chosen per call."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..core import Xform, XformDistribution, event_shape_of
from ..nn import TimeMLP, TimeUNet, image_network
from ..transforms import (
    Bijector,
    Chain,
    ConditionalStandardize,
    ODESettings,
    ODETransform,
    Standardize,
)

__all__ = ["STANDARDIZATIONS", "ContinuousTimeXform", "field_network", "resolve_standardize"]

#: How a continuous-time family standardizes its data (``standardize=True`` is ``"marginal"``;
#: ``"auto"`` is ``"regression"`` for a conditional model, else the family's choice for
#: images (flow matching: none, the pixels on their own scale; diffusion: ``"channel"``) and
#: ``"marginal"`` for vectors).
STANDARDIZATIONS = ("auto", "marginal", "regression", "channel")


def resolve_standardize(
    standardize: bool | str,
    context: int,
    *,
    guided: bool = False,
    image: bool = False,
    for_images: bool | str = False,
) -> bool | str:
    r"""The standardization ``"auto"`` stands for: the regression on the context for a
    conditional model (the field then learns only what the linear-Gaussian fit of
    :math:`x \mid c` misses); for an unconditional or a guided model (whose conditional and
    unconditional fields share one space) none for an image, whose pixels (in :math:`[0, 1]`,
    a standard deviation of about 0.3) are smaller than the base's unit noise, which measured
    far better than standardizing them, per pixel or per channel (``bench/MEASUREMENTS.md``),
    or what the family gives as ``for_images``; the marginal statistics for a vector. Other
    values are returned as they are."""
    if standardize != "auto":
        return standardize
    if context and not guided:
        return "regression"
    return for_images if image else "marginal"


def field_network(
    features: int | tuple[int, ...],
    context: int,
    *,
    architecture: str,
    hidden,
    activation: str,
    time_features: int,
    zero_last: bool,
    film: bool | None,
    channels: int,
    attention: bool,
    dropout: float = 0.0,
) -> nn.Module:
    """The network of a continuous-time family's field, on the flat view of its data: a
    :class:`~pyro_xform.nn.TimeUNet` (``channels`` wide, self-attention if ``attention``)
    for an image event shape ``(C, H, W)`` under ``architecture="image"``, or under
    ``"auto"`` where ``H, W >= 8`` (:func:`~pyro_xform.nn.image_network`); else a
    :class:`~pyro_xform.nn.TimeMLP` (``hidden``, ``activation``, ``film``, where ``None``
    means on for the MLP; its output layer at zero if ``zero_last``). Either network
    drops its hidden units in training with probability ``dropout``.

    Raises:
        ValueError: an unknown architecture, a U-Net asked for a shape that is not an
            image, or an MLP's option (``film``) given to a U-Net.
    """
    shape = event_shape_of(features)
    if image_network(shape, architecture):
        if film:
            raise ValueError("film modulates the MLP's layers; the U-Net embeds the time in every block")
        return TimeUNet(
            shape,
            context,
            channels=channels,
            attention=attention,
            time_features=time_features,
            dropout=dropout,
        )
    film = True if film is None else film
    return TimeMLP(shape.numel(), context, hidden, activation, time_features, zero_last, film, dropout)


class ContinuousTimeXform(Xform):
    """:math:`x = \\mu + \\sigma \\odot \\Phi(z)`, with :math:`\\Phi` the flow of an ODE
    (an :class:`~pyro_xform.transforms.ODETransform`) and :math:`\\mu, \\sigma` the
    training data's mean and standard deviation (set by :meth:`initialize` when
    ``standardize``). With ``standardize="regression"`` (the default of conditional models) the last map
    is instead :math:`x = \\mu + W c + L\\,\\Phi(z)`, the least-squares regression of the
    data on the context (a :class:`~pyro_xform.transforms.ConditionalStandardize`), so the
    field learns only what a linear-Gaussian model of :math:`x \\mid c` misses. The
    density is exact by the instantaneous change of variables.

    Calling the model takes the solver settings of that distribution, e.g.
    ``model(context, solver="rk4", steps=10)`` or ``model(trace="hutchinson", probes=4)``
    (whose ``log_prob_kind`` is then ``"estimate"``); the defaults are the constructor's.
    """

    def __init__(
        self,
        features: int,
        context: int,
        *,
        field: nn.Module,
        time: tuple[float, float],
        ode: ODESettings,
        standardize: bool | str,
    ) -> None:
        if not (isinstance(standardize, bool) or standardize in STANDARDIZATIONS):
            raise ValueError(
                f"standardize must be True, False or one of {STANDARDIZATIONS}, got {standardize!r}"
            )
        if standardize == "regression" and not context:
            raise ValueError("standardize='regression' regresses the data on the context; the model has none")
        standardize = resolve_standardize(standardize, context, image=len(event_shape_of(features)) == 3)
        super().__init__(features, context)
        if standardize == "channel" and len(self.event_shape) != 3:
            raise ValueError(
                f"standardize='channel' is for images (C, H, W); the event shape is {tuple(self.event_shape)}"
            )
        features = self.features  # the flat size the field works on
        ode = ODETransform(field, features, context, time=time, settings=ode)
        self.standardize = standardize
        if standardize == "regression":
            last = ConditionalStandardize(features, context)
        else:
            last = Standardize(features, self.event_shape[0] if standardize == "channel" else None)
        self.transform = Chain([ode, last])

    @property
    def ode(self) -> ODETransform:
        """The ODE part of the transform, with the default solver settings."""
        return self.transform[0]

    @property
    def standardizer(self) -> Bijector:
        """The fixed map from standardized units to the data (context-dependent with
        ``standardize="regression"``)."""
        return self.transform[1]

    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        if self.standardize:
            self.standardizer.initialize(self.flatten(data), context)

    @torch.no_grad()
    def sample(self, sample_shape=(), context: Tensor | None = None, **settings) -> Tensor:
        """Draw samples by solving the ODE; ``settings`` as in calling the model."""
        return self(context, **settings).sample(sample_shape)

    def _field(self, **settings) -> nn.Module:
        """The velocity field for one call (subclasses use settings such as ``guidance``)."""
        if settings:
            raise TypeError(f"{type(self).__name__} takes no settings {sorted(settings)}")
        return self.ode.field

    def forward(
        self, context: Tensor | None = None, *, ode: ODESettings | None = None, **settings: Any
    ) -> XformDistribution:
        """The model's distribution given ``context``, with optional solver settings.

        Args:
            context: conditioning tensor of shape ``(..., context)``.
            ode: the :class:`~pyro_xform.transforms.ODESettings` of this distribution
                (default: the constructor's).
            **settings: changes to them (``solver="rk4", nfe=16``, ``trace="hutchinson"``,
                see :meth:`ODESettings.replace <pyro_xform.transforms.ODESettings.replace>`),
                and the family's own settings (e.g. ``guidance``).
        """
        context = self.check_context(context)
        changes, field_settings = ODESettings.split(settings)
        chosen = (self.ode.settings if ode is None else ODESettings.of(ode)).replace(**changes)
        transform = self.transform
        if field_settings or chosen != self.ode.settings:
            ode_transform = self.ode.configured(chosen)
            if field_settings:
                ode_transform.field = self._field(**field_settings)
            transform = Chain([ode_transform, self.standardizer])
        kind = "exact" if transform[0].exact else "estimate"
        batch_shape = context.shape[:-1] if context is not None else ()
        return XformDistribution(
            self.base(batch_shape), transform, context, log_prob_kind=kind, event_shape=self.data_shape
        )
