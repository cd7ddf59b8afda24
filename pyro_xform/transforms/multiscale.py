"""A multi-scale coupling flow on images (RealNVP/Glow): squeezes, per-channel ActNorm,
invertible 1x1 convolutions and affine couplings with convolutional conditioners, with
half the channels factored out at every scale but the last."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Bijector
from .elementwise import Affine, RQSpline

__all__ = ["MultiscaleFlow", "scales_for"]


def scales_for(shape: Sequence[int], most: int = 3) -> int:
    """How many squeezes an image of ``shape`` ``(C, H, W)`` takes (at most ``most``): each
    halves even sides and leaves at least 2 x 2."""
    h, w, scales = shape[1], shape[2], 0
    while scales < most and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4:
        h, w, scales = h // 2, w // 2, scales + 1
    return scales


def _squeeze(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def _unsqueeze(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, 2 * h, 2 * w)


class _ActNorm(nn.Module):
    """Per-channel :math:`x = z e^{s} + b`, set from the first data-side activations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        if not bool(self.initialized) and x.shape[0] > 1:
            self.shift.copy_(x.mean((0, 2, 3))[:, None, None])
            self.log_scale.copy_(x.std((0, 2, 3)).clamp_min(1e-6).log()[:, None, None])
            self.initialized.fill_(True)

    def _ladj(self, x: Tensor) -> Tensor:
        return (self.log_scale.sum() * x.shape[2] * x.shape[3]).expand(x.shape[0])

    def forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return z * self.log_scale.exp() + self.shift, self._ladj(z)

    def inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return (x - self.shift) * (-self.log_scale).exp(), self._ladj(x)


class _InvertibleConv(nn.Module):
    """:math:`x = W z` at every pixel, :math:`W` a learned ``C x C`` matrix (a random
    rotation at first); log-determinant :math:`H W \\log|\\det W|`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def _ladj(self, x: Tensor) -> Tensor:
        return (torch.linalg.slogdet(self.weight)[1] * x.shape[2] * x.shape[3]).expand(x.shape[0])

    def forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return F.conv2d(z, self.weight[:, :, None, None]), self._ladj(z)

    def inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return F.conv2d(x, torch.linalg.inv(self.weight)[:, :, None, None]), self._ladj(x)


class _Coupling(nn.Module):
    """:math:`x_B = \tau(z_B; \theta)`, :math:`\tau` element-wise (affine or a spline) with
    parameters :math:`\theta` a conv net of :math:`z_A` (the first half of the channels) and
    the context; the net's last conv starts at zero, so the coupling starts as the identity."""

    def __init__(self, channels: int, hidden: int, context: int, transformer) -> None:
        super().__init__()
        self.a = channels // 2
        self.b = channels - self.a
        self.first = nn.Conv2d(self.a, hidden, 3, padding=1)
        self.context_layer = nn.Linear(context, hidden) if context else None
        self.middle = nn.Conv2d(hidden, hidden, 1)
        self.transformer = transformer
        self.last = nn.Conv2d(hidden, transformer.params_per_dim * self.b, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def _params(self, a: Tensor, context: Tensor | None) -> Tensor:
        h = self.first(a)
        if self.context_layer is not None:
            h = h + self.context_layer(context)[:, :, None, None]
        p = self.last(F.relu(self.middle(F.relu(h))))
        n, _, height, width = p.shape
        return p.reshape(n, self.b, -1, height, width).permute(0, 1, 3, 4, 2)

    def _map(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        a, b = v[:, : self.a], v[:, self.a :]
        p = self._params(a, context)
        b, ladj = (self.transformer.inverse if inverse else self.transformer.forward)(b, p)
        return torch.cat((a, b), 1), ladj.flatten(1).sum(-1)

    def forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(z, context, inverse=False)

    def inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(x, context, inverse=True)


class MultiscaleFlow(Bijector):
    """A multi-scale flow on images of shape ``(C, H, W)``, on their flat view. From data to
    base, at each of ``scales`` scales: a squeeze (each 2 x 2 block of pixels becomes 4
    channels), ``steps`` steps of per-channel ActNorm, an invertible 1 x 1 convolution and
    a coupling (affine, or a rational-quadratic spline) whose conditioner is a small conv
    net (``hidden`` maps) of half the channels and the context, and, at every scale but the
    last, half the channels factored out to the base. The log-determinant adds the steps':

    .. math:: \\log|\\det| = \\sum_{\\text{ActNorm}} HW\\textstyle\\sum_c s_c
        + \\sum_{1\\times1} HW \\log|\\det W| + \\sum_{\\text{coupling}} \\sum s .

    ActNorm starts from the data (:meth:`initialize`, which ``fit`` calls on the first batch).

    Args:
        shape: the image shape ``(C, H, W)``; ``H, W`` even at every squeeze.
        context: context size (0: none).
        scales: number of scales (default: as many as :func:`scales_for` allows).
        steps: flow steps a scale.
        hidden: feature maps of each conditioner.
        log_scale_bound: bound of each affine coupling's log-scale (see :class:`Affine`).
        coupling: ``"affine"`` (RealNVP, Glow) or ``"spline"`` (NSF; ``bins`` bins with
            identity tails outside ``[-bound, bound]``, see :class:`RQSpline`).

    Examples:
        >>> flow = MultiscaleFlow((1, 8, 8), steps=2, hidden=8)
        >>> x, ladj = flow.forward_and_ladj(torch.randn(3, 64))
        >>> z, _ = flow.inverse_and_ladj(x)
        >>> x.shape, ladj.shape, bool(torch.allclose(z, flow.inverse_and_ladj(x)[0]))
        (torch.Size([3, 64]), torch.Size([3]), True)

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016,
        arXiv:1605.08803). Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma,
        Dhariwal, 2018, arXiv:1807.03039). Neural Spline Flows (Durkan, Bekasov, Murray,
        Papamakarios, 2019, arXiv:1906.04032).
    """

    def __init__(
        self,
        shape: Sequence[int],
        context: int = 0,
        scales: int | None = None,
        steps: int = 4,
        hidden: int = 64,
        log_scale_bound: float = 5.0,
        coupling: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
    ) -> None:
        if coupling not in ("affine", "spline"):
            raise ValueError(f"coupling must be 'affine' or 'spline', got {coupling!r}")
        transformer = Affine(log_scale_bound) if coupling == "affine" else RQSpline(bins, bound)
        shape = tuple(shape)
        super().__init__(shape[0] * shape[1] * shape[2], context)
        scales = scales_for(shape) if scales is None else scales
        if scales > scales_for(shape, most=scales) or scales < 1:
            raise ValueError(f"an image of shape {shape} cannot be squeezed {scales} times (even sides >= 4)")
        self.shape = shape
        self.levels = nn.ModuleList()
        self.out_shapes: list[tuple[int, int, int]] = []  # the factored-out parts, then the rest
        c, h, w = shape
        for scale in range(scales):
            c, h, w = 4 * c, h // 2, w // 2
            steps_here = nn.ModuleList()
            for _ in range(steps):  # base -> data order: coupling, 1x1, ActNorm
                steps_here.extend(
                    [_Coupling(c, hidden, context, transformer), _InvertibleConv(c), _ActNorm(c)]
                )
            self.levels.append(steps_here)
            if scale < scales - 1:
                self.out_shapes.append((c // 2, h, w))
                c = c - c // 2
        self.out_shapes.append((c, h, w))

    def _to_base(self, x: Tensor, context: Tensor | None, initialize: bool = False) -> tuple[Tensor, Tensor]:
        h, ladj, parts = x.reshape(-1, *self.shape), 0.0, []
        for scale, steps in enumerate(self.levels):
            h = _squeeze(h)
            for step in reversed(steps):
                if initialize and isinstance(step, _ActNorm):
                    step.initialize(h)
                h, step_ladj = step.inverse(h, context)
                ladj = ladj + step_ladj
            if scale < len(self.levels) - 1:
                out = self.out_shapes[scale][0]
                parts.append(h[:, :out])
                h = h[:, out:]
        parts.append(h)
        return torch.cat([p.flatten(1) for p in parts], 1), ladj

    def _to_data(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        sizes = [c * h * w for c, h, w in self.out_shapes]
        parts = [p.reshape(-1, *s) for p, s in zip(z.split(sizes, 1), self.out_shapes, strict=True)]
        h, ladj = parts.pop(), 0.0
        for scale in reversed(range(len(self.levels))):
            if scale < len(self.levels) - 1:
                h = torch.cat((parts[scale], h), 1)
            for step in self.levels[scale]:
                h, step_ladj = step.forward(h, context)
                ladj = ladj + step_ladj
            h = _unsqueeze(h)
        return h.flatten(1), ladj

    def _run(self, v: Tensor, context: Tensor | None, to_data: bool) -> tuple[Tensor, Tensor]:
        lead = v.shape[:-1]
        flat = v.reshape(-1, self.features)
        if context is not None:
            context = context.expand(*lead, context.shape[-1]).reshape(-1, context.shape[-1])
        out, ladj = (self._to_data if to_data else self._to_base)(flat, context)
        return out.reshape(*lead, self.features), ladj.reshape(lead)

    def forward_and_ladj(self, z, context=None):
        return self._run(z, context, to_data=True)

    def inverse_and_ladj(self, x, context=None):
        return self._run(x, context, to_data=False)

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Set every ActNorm from the activations the data ``x`` (flat) bring to it."""
        if context is not None:
            context = context.reshape(-1, context.shape[-1])
        self._to_base(x.reshape(-1, self.features), context, initialize=True)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context={self.context_features}, scales={len(self.levels)}"
