"""Discrete normalizing flows: a chain of bijectors of a standard normal (exact density)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from ..core import Xform, XformDistribution, event_shape_of, is_count
from ..nn import image_network
from ..transforms import (
    ActNorm,
    AffineAutoregressive,
    AffineCoupling,
    Bijector,
    Chain,
    ConditionalStandardize,
    Logit,
    LULinear,
    MultiscaleFlow,
    Permutation,
    SplineAutoregressive,
    SplineCoupling,
    Standardize,
    scales_for,
)

__all__ = ["IAF", "MAF", "NSF", "Flow", "RealNVP"]

_LINEAR = ("permutation", "lu", None)
_STANDARDIZE = (False, True, "marginal", "regression")


def _multiscale(features, context: int, architecture: str, steps: int, channels: int, **coupling):
    """A factory of the :class:`MultiscaleFlow` a flow uses on images (``coupling`` its
    settings), or ``None`` where the flow keeps its blocks on the flat vector."""
    shape = event_shape_of(features)
    if image_network(shape, architecture) and scales_for(shape) >= 1:
        return lambda: MultiscaleFlow(shape, context, None, steps, channels, **coupling)
    if architecture == "image":
        raise ValueError(f"the multi-scale flow needs even image sides of at least 4, got {tuple(shape)}")
    return None


def _pixel_logit(logit: float | str | None, image) -> float | None:
    """``"auto"``: the logit pre-transform of margin 0.05 where the flow is the multi-scale
    image flow (pixels in [0, 1], as RealNVP and Glow model them), none elsewhere."""
    if logit == "auto":
        return _PIXEL_LOGIT if image is not None else None
    return logit


# The multi-scale flows' default margin: RealNVP's (Dinh et al. 2016, section 4.1).
_PIXEL_LOGIT = 0.05


class Flow(Xform):
    """A normalizing flow: :math:`x = T_K \\circ \\dots \\circ T_1(z)`, :math:`z \\sim \\mathcal N(0, I)`,

    .. math:: \\log p(x \\mid c) = \\log \\mathcal N(z; 0, I) - \\sum_k \\log|\\det J_{T_k}| .

    The named flows (:class:`MAF`, :class:`IAF`, :class:`RealNVP`, :class:`NSF`) build the
    chain from ``block(features, context)``, a factory of one coupling or autoregressive
    layer, with optional :class:`ActNorm` before and a permutation or :class:`LULinear`
    between blocks.

    Args:
        features: event size.
        context: context size.
        transforms: number of blocks.
        block: factory ``(index) -> Bijector``.
        linear: what goes between blocks: ``"permutation"`` (reverse order), ``"lu"``
            (reverse order then an :class:`LULinear`) or ``None``.
        actnorm: put an :class:`ActNorm` before every block.
        standardize: end the chain with a fixed :class:`Standardize` set from the training
            data (``True`` or ``"marginal"``), so the blocks work on standardized data (as
            the continuous-time families do) and the density stays that of ``x``; or, for
            a conditional flow, ``"regression"``: a fixed
            :class:`~pyro_xform.transforms.ConditionalStandardize`, :math:`x = \\mu + W c +
            L z`, the least-squares regression of the data on the context, so the blocks
            learn only what the linear-Gaussian fit of :math:`x \\mid c` misses.
        image: factory of one image bijector that stands for the whole chain (blocks,
            ``linear``, ``actnorm`` and ``standardize`` then do not apply).
        logit: end the chain with the :class:`~pyro_xform.transforms.Logit` pre-transform of
            margin ``logit`` (e.g. 0.05 for pixels): the data must lie in :math:`[0, 1]` (the
            support is a little wider),
            the blocks see its logit, and the density stays that of ``x``.

    References:
        Normalizing flows for probabilistic modeling and inference (Papamakarios et al.,
        2019, arXiv:1912.02762).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        transforms: int,
        block: Callable[[int], Bijector],
        linear: str | None = "permutation",
        actnorm: bool = False,
        standardize: bool | str = False,
        image: Callable[[], Bijector] | None = None,
        logit: float | None = None,
    ) -> None:
        if standardize not in _STANDARDIZE:
            raise ValueError(f"standardize must be one of {_STANDARDIZE}, got {standardize!r}")
        if standardize == "regression" and not context:
            raise ValueError("standardize='regression' regresses the data on the context; the flow has none")
        super().__init__(features, context)
        features = self.features  # the flat size the layers work on
        if not is_count(transforms):
            raise ValueError(f"transforms must be a positive int, got {transforms!r}")
        if linear not in _LINEAR:
            raise ValueError(f"linear must be one of {_LINEAR}, got {linear!r}")
        # The image network stands for the chain of blocks.
        layers = [image()] if image is not None else self._blocks(transforms, block, linear, actnorm)
        if standardize == "regression" and image is None:
            layers.append(ConditionalStandardize(features, context))
        elif standardize and image is None:
            layers.append(Standardize(features))
        if logit is not None:
            layers.append(Logit(features, logit))
        # The chain runs base → data; the last block listed acts last on the base sample.
        self.transform = Chain(layers)

    def _blocks(self, transforms: int, block, linear: str | None, actnorm: bool) -> list[Bijector]:
        layers: list[Bijector] = []
        for i in range(transforms):
            if i and linear is not None:
                layers.append(Permutation(self.features))
                if linear == "lu":
                    layers.append(LULinear(self.features))
            if actnorm:
                layers.append(ActNorm(self.features))
            layers.append(block(i))
        return layers

    def check_data(self, data: Tensor, *, name: str = "data") -> None:
        super().check_data(data, name=name)
        support = self.transform.codomain  # real but for a logit pre-transform last
        outside = ~support.check(data).flatten(1).all(1)
        if outside.any():
            row = int(outside.nonzero()[0, 0])
            low, high = support.lower_bound, support.upper_bound
            raise ValueError(
                f"{name} has values outside [{low:.4g}, {high:.4g}], the support of the flow's logit "
                f"pre-transform (pixels in [0, 1] lie inside; first at row {row}); for data of "
                "another range build the flow with logit=None"
            )

    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        self.transform.initialize(self.flatten(data), context)

    def compile(self, **options) -> None:
        """Compile the whole chain of blocks, each direction as one graph (see
        :meth:`pyro_xform.transforms.Bijector.compile`). ``fit`` and Pyro inference then run
        unchanged; only the transform's arithmetic is fused.

        Examples:
            >>> import torch, pyro_xform
            >>> flow = pyro_xform.NSF(2, transforms=2, hidden=(8,))
            >>> flow.compile(backend="eager")
            >>> flow().log_prob(torch.zeros(3, 2)).shape
            torch.Size([3])
        """
        self.transform.compile(**options)

    def forward(self, context: Tensor | None = None) -> XformDistribution:
        context = self.check_context(context)
        batch_shape = context.shape[:-1] if context is not None else ()
        base, shape = self.base(batch_shape), self.data_shape
        return XformDistribution(base, self.transform, context, log_prob_kind="exact", event_shape=shape)


class MAF(Flow):
    """Masked autoregressive flow: affine autoregressive blocks, one pass to score data
    (fast training by maximum likelihood), ``features`` passes to sample.

    The blocks' MADEs (``hidden``) are two layers of 128 by default: at the demo's budget
    they gave a better NLL than 64 on all five set/seed pairs measured, and samples nearer
    the data on four of them, for about a tenth more time a step (``bench/MEASUREMENTS.md``).

    Examples:
        >>> import torch, pyro_xform
        >>> flow = pyro_xform.MAF(features=3, context=2)
        >>> flow(torch.randn(4, 2)).log_prob(torch.randn(4, 3)).shape
        torch.Size([4])

    References:
        Masked Autoregressive Flow for Density Estimation (Papamakarios, Pavlakou, Murray,
        2017, arXiv:1705.07057).
    """

    _fast = "density"
    #: The MADEs' hidden sizes when ``hidden`` is not given.
    _hidden = (128, 128)

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] | None = None,
        activation: str = "relu",
        linear: str | None = "permutation",
        actnorm: bool = False,
        log_scale_bound: float = 5.0,
        standardize: bool | str = False,
        logit: float | None = None,
    ) -> None:
        super().__init__(
            features,
            context,
            transforms=transforms,
            block=lambda i: AffineAutoregressive(
                self.features,
                context,
                self._hidden if hidden is None else hidden,
                activation,
                self._fast,
                log_scale_bound,
            ),
            linear=linear,
            actnorm=actnorm,
            standardize=standardize,
            logit=logit,
        )


class IAF(MAF):
    """Inverse autoregressive flow: affine autoregressive blocks, one pass to sample (and
    score its own samples, e.g. as a variational posterior), ``features`` passes to score
    arbitrary data. Its MADEs are two layers of 64 by default: wider ones gained nothing
    consistent at the demo's budget, and the IAF is the guides' default family, measured at
    this size (``bench/MEASUREMENTS.md``).

    Examples:
        >>> import torch, pyro_xform
        >>> x, lp = pyro_xform.IAF(features=3)().rsample_and_log_prob((7,))
        >>> x.shape, lp.shape
        (torch.Size([7, 3]), torch.Size([7]))

    References:
        Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al.,
        2016, arXiv:1606.04934).
    """

    _fast = "sampling"
    _hidden = (64, 64)


class RealNVP(Flow):
    """RealNVP: affine coupling blocks; sampling and scoring each take one pass.
    ``residual``, ``standardize`` and ``logit`` as in :class:`NSF`. ``transforms`` defaults
    to 8 blocks on vectors: at the demo's budget they gave a better NLL than 6 on all five
    set/seed pairs measured, and samples as near the data or nearer on four, for a third
    more time a step (``bench/MEASUREMENTS.md``).

    On images (``features`` a shape ``(C, H, W)`` of at least 8 x 8 that squeezes at least
    once, under ``architecture="auto"``) it is the multi-scale flow of RealNVP and Glow, a
    :class:`~pyro_xform.transforms.MultiscaleFlow` with ``transforms`` steps a scale (6 by
    default) and conditioners of ``channels`` feature maps; ``architecture="mlp"`` keeps the
    blocks on the flat vector.

    Examples:
        >>> import pyro_xform
        >>> pyro_xform.RealNVP(features=2)().sample((3,)).shape
        torch.Size([3, 2])

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016,
        arXiv:1605.08803). Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma,
        Dhariwal, 2018, arXiv:1807.03039).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        linear: str | None = "permutation",
        actnorm: bool = False,
        log_scale_bound: float = 5.0,
        residual: bool = False,
        standardize: bool | str = False,
        architecture: str = "auto",
        channels: int = 64,
        logit: float | str | None = "auto",
    ) -> None:
        image = _multiscale(
            features,
            context,
            architecture,
            6 if transforms is None else transforms,
            channels,
            log_scale_bound=log_scale_bound,
        )
        super().__init__(
            features,
            context,
            transforms=8 if transforms is None else transforms,
            block=lambda i: AffineCoupling(
                self.features, context, hidden, activation, log_scale_bound, residual
            ),
            linear=linear,
            actnorm=actnorm,
            standardize=standardize,
            image=image,
            logit=_pixel_logit(logit, image),
        )


class NSF(Flow):
    """Neural spline flow: monotone rational-quadratic splines with identity tails outside
    ``[-bound, bound]``, in coupling blocks (``variant="coupling"``, one pass either way)
    or autoregressive blocks (``variant="autoregressive"``, one pass to score).

    ``residual=True`` gives the coupling blocks conditioners of residual blocks (linear at
    initialization); ``standardize=True`` standardizes the data first (see :class:`Flow`).
    Both help most when data are few, e.g. neural posterior estimation. ``logit=alpha``
    puts the logit pre-transform of data in :math:`[0, 1]` (pixels) last, its
    log-determinant counted (:class:`~pyro_xform.transforms.Logit`); the default,
    ``"auto"``, does so with :math:`\\alpha = 0.05` for the multi-scale image flow (which
    then expects pixels in :math:`[0, 1]`; ``logit=None`` for data of another range) and not
    for the flat blocks (``bench/MEASUREMENTS.md``).

    On images (``features`` a shape ``(C, H, W)`` of at least 8 x 8 that squeezes at least
    once, under ``architecture="auto"``) it is a multi-scale flow of spline couplings, a
    :class:`~pyro_xform.transforms.MultiscaleFlow` with ``transforms`` steps a scale and
    conditioners of ``channels`` feature maps (``variant`` must be ``"coupling"``);
    ``architecture="mlp"`` keeps the blocks on the flat vector.

    Examples:
        >>> import torch, pyro_xform
        >>> flow = pyro_xform.NSF(features=2)
        >>> flow().log_prob(torch.zeros(2)).shape
        torch.Size([])

    References:
        Neural Spline Flows (Durkan, Bekasov, Murray, Papamakarios, 2019, arXiv:1906.04032).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 4,
        hidden: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
        variant: str = "coupling",
        activation: str = "relu",
        linear: str | None = "permutation",
        actnorm: bool = False,
        residual: bool = False,
        standardize: bool | str = False,
        architecture: str = "auto",
        channels: int = 64,
        logit: float | str | None = "auto",
    ) -> None:
        if variant not in ("coupling", "autoregressive"):
            raise ValueError(f"variant must be 'coupling' or 'autoregressive', got {variant!r}")
        if residual and variant != "coupling":
            raise ValueError("residual conditioners are for variant='coupling' (MADE is not residual)")

        def block(i: int) -> Bijector:
            if variant == "coupling":
                return SplineCoupling(self.features, context, hidden, activation, bins, bound, residual)
            return SplineAutoregressive(self.features, context, hidden, activation, "density", bins, bound)

        image = None
        if variant == "coupling":
            image = _multiscale(
                features,
                context,
                architecture,
                transforms,
                channels,
                coupling="spline",
                bins=bins,
                bound=bound,
            )
        super().__init__(
            features,
            context,
            transforms=transforms,
            block=block,
            linear=linear,
            actnorm=actnorm,
            standardize=standardize,
            image=image,
            logit=_pixel_logit(logit, image),
        )
