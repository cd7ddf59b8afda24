"""Affine layers set from data: learned per coordinate (ActNorm), fixed per coordinate
(Standardize), or fixed and conditional on the context (ConditionalStandardize)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Bijector

__all__ = ["ActNorm", "ConditionalStandardize", "Standardize", "channel_moments", "data_moments"]


def data_moments(x: Tensor, features: int) -> tuple[Tensor, Tensor] | None:
    """The per-coordinate mean and standard deviation (floored at 1e-6) of ``x``'s rows of
    ``features`` numbers; ``None`` for fewer than two rows."""
    flat = x.detach().reshape(-1, features)
    if flat.shape[0] < 2:
        return None
    return flat.mean(0), flat.std(0).clamp_min(1e-6)


class ActNorm(Bijector):
    """Per-coordinate affine map :math:`x = z\\,e^{s} + b`, initialized from data:
    :meth:`initialize` sets :math:`b` and :math:`s` to the mean and log standard deviation
    of the activations reaching it, so they leave it standardized. ``fit`` does this once,
    on the first batch (see :meth:`pyro_xform.transforms.Chain.initialize`).

    Examples:
        >>> layer = ActNorm(2)
        >>> x = torch.randn(100, 2) * 3 + 1
        >>> layer.initialize(x)
        >>> z, _ = layer.inverse_and_ladj(x)
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma, Dhariwal, 2018,
        arXiv:1807.03039).
    """

    def __init__(self, features: int) -> None:
        super().__init__(features, 0)
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    def initialize(self, x, context=None) -> None:
        """Set shift and log-scale from activations ``x`` (data side), once."""
        moments = None if bool(self.initialized) else data_moments(x, self.features)
        if moments is not None:
            with torch.no_grad():
                self.shift.copy_(moments[0])
                self.log_scale.copy_(moments[1].log())
                self.initialized.fill_(True)

    def forward_and_ladj(self, z, context=None):
        x = z * self.log_scale.exp() + self.shift
        return x, self.log_scale.sum().expand(x.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        z = (x - self.shift) * (-self.log_scale).exp()
        return z, self.log_scale.sum().expand(x.shape[:-1])


def channel_moments(x: Tensor, features: int, channels: int) -> tuple[Tensor, Tensor] | None:
    """The mean and standard deviation (floored at 1e-6) of each of ``channels`` channels of
    ``x``'s flat images (channel-major, ``features`` numbers a row), over the rows and the
    pixels, repeated for every pixel of the channel; ``None`` for fewer than two values."""
    flat = x.detach().reshape(-1, channels, features // channels)
    if flat.shape[0] * flat.shape[2] < 2:
        return None
    values = flat.transpose(0, 1).reshape(channels, -1)
    pixels = features // channels
    return (
        values.mean(1).repeat_interleave(pixels),
        values.std(1).clamp_min(1e-6).repeat_interleave(pixels),
    )


class Standardize(Bijector):
    """Fixed per-coordinate affine map :math:`x = \\mu + \\sigma \\odot y` whose
    :math:`\\mu, \\sigma` are the data's mean and standard deviation, set once by
    :meth:`initialize` and stored as buffers (not trained). Continuous-time families put it
    last, so their network works on standardized data while the density stays that of
    ``x``: :math:`\\log p(x) = \\log p(y) - \\sum_i \\log \\sigma_i`.

    With ``channels`` the data are flat images of that many channels (channel-major) and
    the statistics are per channel, over all its pixels, as image models scale pixels: a
    pixel that is nearly constant in the data (a border) is not blown up to unit variance.

    Examples:
        >>> layer = Standardize(2)
        >>> layer.initialize(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> layer.inverse_and_ladj(torch.tensor([[1.0, 20.0]]))[0]
        tensor([[0., 0.]])
        >>> image = Standardize(4, channels=1)
        >>> image.initialize(torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]]))
        >>> image.loc, image.scale
        (tensor([1., 1., 1., 1.]), tensor([1.0690, 1.0690, 1.0690, 1.0690]))
    """

    def __init__(self, features: int, channels: int | None = None) -> None:
        super().__init__(features, 0)
        if channels is not None and (channels < 1 or features % channels):
            raise ValueError(f"{features} features do not split into {channels} channels")
        self.channels = channels
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x, context=None) -> None:
        """Set the mean and standard deviation from data ``x``, once."""
        if bool(self.initialized):
            moments = None
        elif self.channels is None:
            moments = data_moments(x, self.features)
        else:
            moments = channel_moments(x, self.features, self.channels)
        if moments is not None:
            self.loc.copy_(moments[0])
            self.scale.copy_(moments[1])
            self.initialized.fill_(True)

    def forward_and_ladj(self, z, context=None):
        x = self.loc + self.scale * z
        return x, self.scale.log().sum().expand(x.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        return (x - self.loc) / self.scale, self.scale.log().sum().expand(x.shape[:-1])


class ConditionalStandardize(Bijector):
    """Fixed affine map given the context, :math:`x = \\mu + W c + L y`, set once by
    :meth:`initialize` from data by least squares (with a tiny ridge): :math:`(\\mu, W)`
    regress :math:`x` on :math:`c`, and :math:`L` is the Cholesky factor of the residuals'
    covariance. The layer after it (towards the base) then sees
    :math:`y = L^{-1}(x - \\mu - W c)`: what the context does not explain linearly,
    whitened. A model that is the identity on :math:`y` is the linear-Gaussian fit
    :math:`\\mathcal N(\\mu + W c, L L^\\top)`, so a conditional family built on this layer
    only has to learn the departure from it — the Gaussian part of a posterior comes
    exactly from the regression, not from 10^4 noisy gradient steps.
    :math:`\\log|\\det| = \\sum_i \\log L_{ii}`.

    With fewer than :math:`2 (C + 1)` rows (``C`` the context size) the regression would
    fit noise, and the layer regresses on the intercept alone (:math:`W = 0`).

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> layer = ConditionalStandardize(1, context=1)
        >>> c = torch.linspace(-1, 1, 50).unsqueeze(-1)
        >>> layer.initialize(3 * c + 1 + 0.1 * torch.randn(50, 1), c)
        >>> abs(float(layer.weight) - 3) < 0.1, abs(float(layer.loc) - 1) < 0.1
        (True, True)

    References:
        The linear-Gaussian baseline of Benchmarking simulation-based inference (Lueckmann
        et al., 2021, arXiv:2101.04653); Elucidating the design space of diffusion-based
        generative models (Karras, Aittala, Aila, Laine, 2022, arXiv:2206.00364) on making
        the network learn only what a Gaussian does not explain.
    """

    #: Ridge of the regression relative to the trace of the centered context's Gram matrix
    #: (per column): far below any real direction of a standardized context, large enough
    #: that a constant, duplicated or collinear column gets a bounded coefficient, not 1e13.
    ridge = 1e-6

    def __init__(self, features: int, context: int) -> None:
        if context < 1:
            raise ValueError("ConditionalStandardize needs a context; use Standardize without one")
        super().__init__(features, context)
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("weight", torch.zeros(features, context))
        self.register_buffer("scale_tril", torch.eye(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x, context=None) -> None:
        """Set :math:`\\mu, W, L` from data ``x`` and its ``context``, once.

        The regression is solved in float64 (on the CPU where the data's device has no
        float64, as MPS) by ridge-regularized normal equations on the centered data, so the
        intercept is not penalized and a rank-deficient context (a constant or repeated
        column) still gives finite, bounded coefficients on every device.
        """
        if context is None:
            raise ValueError("ConditionalStandardize.initialize needs the context of the data")
        if bool(self.initialized) or x.reshape(-1, self.features).shape[0] < 2:
            return
        work = self._float64_device(x.device)
        flat = x.detach().reshape(-1, self.features).to(work, torch.float64)
        n = flat.shape[0]
        if n >= 2 * (self.context_features + 1):
            ctx = context.detach().expand(x.shape[:-1] + context.shape[-1:])
            ctx = ctx.reshape(-1, self.context_features).to(work, torch.float64)
            loc, weight = self._ridge_regression(ctx, flat, self.ridge)
            residual, dof = flat - loc - ctx @ weight.T, n - self.context_features - 1
        else:  # too few rows to regress on the context: the intercept alone
            loc, weight = flat.mean(0), flat.new_zeros(self.features, self.context_features)
            residual, dof = flat - loc, n - 1
        cov = residual.T @ residual / max(dof, 1)
        # A jitter relative to the residual scale keeps the factor defined for a flat coordinate.
        floor = cov.diagonal().clamp_min(1e-12) * 1e-6 + 1e-12
        self.loc.copy_(loc)
        self.weight.copy_(weight)
        self.scale_tril.copy_(torch.linalg.cholesky(cov + torch.diag(floor)))
        self.initialized.fill_(True)

    @staticmethod
    def _float64_device(device: torch.device) -> torch.device:
        """``device`` if it computes in float64, else the CPU (MPS has no float64)."""
        try:
            torch.empty(0, dtype=torch.float64, device=device)
        except (TypeError, RuntimeError):
            return torch.device("cpu")
        return device

    @staticmethod
    def _ridge_regression(
        ctx: torch.Tensor, x: torch.Tensor, ridge: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, weight)`` minimizing :math:`\\|x - \\mu - W c\\|^2 + \\lambda \\|W\\|^2`, with
        :math:`\\lambda` = ``ridge`` times the mean diagonal of the centered context's Gram
        matrix; centering first leaves the intercept :math:`\\mu` unpenalized."""
        c_mean, x_mean = ctx.mean(0), x.mean(0)
        c, r = ctx - c_mean, x - x_mean
        gram = c.T @ c
        # A tiny absolute term keeps the factor defined for an all-constant context (W = 0).
        lam = ridge * gram.diagonal().mean() + torch.finfo(gram.dtype).tiny
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        factor = torch.linalg.cholesky(gram + lam * eye)
        weight = torch.cholesky_solve(c.T @ r, factor).T
        return x_mean - weight @ c_mean, weight

    def _mean(self, context):
        return self.loc + context @ self.weight.T

    def _ladj(self, x):
        return self.scale_tril.diagonal().log().sum().expand(x.shape[:-1])

    def forward_and_ladj(self, z, context=None):
        x = self._mean(context) + z @ self.scale_tril.T
        return x, self._ladj(x)

    def inverse_and_ladj(self, x, context=None):
        r = x - self._mean(context)
        # r L^{-T} as one triangular solve over all rows: z L^T = r.
        flat = r.reshape(-1, self.features)
        z = torch.linalg.solve_triangular(self.scale_tril.T, flat, upper=True, left=False).reshape(r.shape)
        return z, self._ladj(r)
