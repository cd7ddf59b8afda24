"""The deterministic autoencoder with a latent density: a two-stage generative model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as pdist
import torch
from torch import Tensor

from ..core import GeneratedDistribution, Xform, as_xform, is_count, spec_of
from ..nn import MLP, ConvDecoder, ConvEncoder, image_network
from ..transforms import LatentMap
from .flows import NSF
from .importance import log_mean_weight

__all__ = ["Autoencoder"]


class Autoencoder(Xform):
    """A deterministic autoencoder :math:`z = E(x; c)`, :math:`\\hat x = D(z; c)` with a latent
    density :math:`p(z)` (any exact :class:`~pyro_xform.Xform`, an NSF by default): a
    generative model that samples :math:`x = D(z)`, :math:`z \\sim p(z)`.

    The objective ``"reconstruction"`` minimizes, per example,

    .. math:: \\|D(E(x)) - x\\|^2 + \\lambda \\|E(x)\\|^2 - \\log p(\\operatorname{sg}[E(x)]),

    so the networks learn to reconstruct (with a small code penalty :math:`\\lambda` that keeps
    the codes at unit scale) while the density is fitted to the gradient-stopped codes — the
    two stages run together, and :func:`pyro_xform.fit_latent` refits the density to the final codes.

    Without a noise model the decoder is a deterministic map into a low-dimensional set, so
    there is no density (``log_prob_kind is None``). With ``noise=σ`` the model is
    :math:`x \\sim \\mathcal N(D(z), \\sigma^2 I)` and ``log_prob`` is an importance-sampling
    estimate with the latent density as proposal, :math:`\\log \\frac1K \\sum_k
    \\mathcal N(x; D(z_k), \\sigma^2 I)`, :math:`z_k \\sim p(z)` (``"estimate"``; unbiased in
    :math:`p`, high-variance in high dimension — a VAE is the better density model).

    Args:
        features: data size.
        context: conditioning size.
        latent: code size.
        hidden: encoder hidden sizes (the decoder mirrors them).
        activation: activation name.
        architecture, channels: the encoder and decoder: ``"auto"`` (convolutional, a
            :class:`~pyro_xform.nn.ConvEncoder` and :class:`~pyro_xform.nn.ConvDecoder` of
            base width ``channels`` with a dense layer of ``hidden[-1]``, for images of at
            least 8 x 8; else MLPs), ``"mlp"`` or ``"image"``
            (:func:`~pyro_xform.nn.image_network`).
        density: the latent density: ``None`` (an :class:`~pyro_xform.NSF` with its
            defaults; the samples were far nearer the data than with the MAF of before on
            every 2-D set measured, ``bench/MEASUREMENTS.md``) or an exact model with
            ``features == latent`` and ``context`` 0 or the autoencoder's.
        noise: the standard deviation of a Gaussian decoder noise, or ``None``.
        code_penalty: :math:`\\lambda`.
        particles: :math:`K` of ``log_prob`` (with ``noise``).

    Examples:
        >>> import torch, pyro_xform
        >>> ae = pyro_xform.Autoencoder(features=4, latent=2, hidden=(16,))
        >>> result = pyro_xform.fit(ae, torch.randn(64, 4), steps=3, progress=False)
        >>> ae().sample((5,)).shape, ae().log_prob_kind
        (torch.Size([5, 4]), None)

    References:
        Reducing the dimensionality of data with neural networks (Hinton, Salakhutdinov,
        2006, doi:10.1126/science.1127647). From variational to deterministic autoencoders
        (Ghosh et al., 2019, arXiv:1903.12436).
    """

    log_prob_kind = None
    default_objective = "reconstruction"

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        latent: int = 8,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        architecture: str = "auto",
        channels: int = 32,
        density: Xform | dict | None = None,
        noise: float | None = None,
        code_penalty: float = 1e-2,
        particles: int = 1000,
    ) -> None:
        super().__init__(features, context)
        features = self.features  # the flat size the networks work on
        if not is_count(latent):
            raise ValueError(f"latent must be a positive int, got {latent!r}")
        if noise is not None and not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive number or None, got {noise!r}")
        if not (isinstance(code_penalty, (int, float)) and math.isfinite(code_penalty) and code_penalty >= 0):
            raise ValueError(f"code_penalty must be a finite number >= 0, got {code_penalty!r}")
        if not is_count(particles):
            raise ValueError(f"particles must be a positive int, got {particles!r}")
        self.latent, self.noise, self.code_penalty, self.particles = latent, noise, code_penalty, particles
        self.log_prob_kind = None if noise is None else "estimate"
        hidden = tuple(hidden)
        if image_network(self.event_shape, architecture):
            self.encoder = ConvEncoder(self.event_shape, latent, channels, hidden[-1], context, activation)
            self.decoder = ConvDecoder(latent, self.event_shape, 1, channels, hidden[-1], context, activation)
        else:
            self.encoder = MLP(features, latent, hidden, context, activation, zero_last=False)
            self.decoder = MLP(latent, features, hidden[::-1], context, activation, zero_last=False)
        density = as_xform(density, name="density")
        if density is None:
            density = NSF(latent)
            # Recorded as built: a file that records no density was written with the MAF of
            # before (pyro_xform.checkpoint rebuilds that one).
            self.config["density"] = spec_of(density)
        if density.event_shape != (latent,) or density.context_features not in (0, context):
            raise ValueError(
                f"the density must have features={latent} and context 0 or {context}; got "
                f"features={tuple(density.event_shape)}, context={density.context_features}"
            )
        if density.log_prob_kind != "exact":
            raise ValueError(f"the latent density needs an exact log_prob; {type(density).__name__} has none")
        self.density = density

    def density_context(self, context: Tensor | None) -> Tensor | None:
        return context if self.density.context_features else None

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The code :math:`E(x; c)` of data ``x`` of shape ``(..., *event_shape)``."""
        return self.encoder(self.flatten(x), context)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The reconstruction :math:`D(z; c)`, shape ``(..., *event_shape)``."""
        return self.unflatten(self.decoder(z, context))

    def latent_distribution(
        self, context: Tensor | None = None, batch_shape=()
    ) -> torch.distributions.Distribution:
        d = self.density(self.density_context(context))
        batch_shape = torch.Size(batch_shape)
        return d if d.batch_shape == batch_shape else d.expand(batch_shape)

    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        """Data-dependent initialization of the latent density on the first batch's codes."""
        with torch.no_grad():
            codes = self.encode(data, context)
        self.density.initialize(codes, self.density_context(context))

    def reconstruction_loss(self, batch: Tensor, context: Tensor | None = None) -> Tensor:
        """The objective ``"reconstruction"`` summed over the batch (see the class)."""
        batch = self.flatten(batch)
        z = self.encoder(batch, context)
        error = (self.decoder(z, context) - batch).pow(2).sum(-1)
        penalty = self.code_penalty * z.pow(2).sum(-1)
        nll = -self.density(self.density_context(context)).log_prob(z.detach())
        return (error + penalty + nll).sum()

    def reconstruction_error(self, batch: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`\\sum_i \\|D(E(x_i)) - x_i\\|^2`, the validation figure of ``"reconstruction"``
        (the latent density is refitted afterwards, so it does not decide early stopping)."""
        batch = self.flatten(batch)
        return (self.decoder(self.encoder(batch, context), context) - batch).pow(2).sum()

    @torch.no_grad()
    def codes(self, data: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The codes :math:`E(x_i; c_i)` of ``data`` and the context the latent density takes
        with them (``None`` for an unconditional density): what
        :func:`pyro_xform.fit_latent` fits the density to."""
        self.check_data(data)
        context = self.check_context(context)
        return self.encode(data, context), self.density_context(context)

    def _log_prob(self, value: Tensor, context: Tensor | None) -> Tensor:
        value = self.flatten(value)
        prior = self.latent_distribution(context, value.shape[:-1])

        def log_weights(k: int) -> Tensor:
            mean = self.decoder(prior.sample((k,)), context)
            return pdist.Normal(mean, self.noise).to_event(1).log_prob(value)

        return log_mean_weight(log_weights, self.particles, value.shape[:-1].numel(), self.features)

    def forward(self, context: Tensor | None = None) -> GeneratedDistribution:
        context = self.check_context(context)
        batch_shape = () if context is None else context.shape[:-1]
        noise = self.noise
        return GeneratedDistribution(
            self.latent_distribution(context, batch_shape),
            LatentMap(self.decoder, self.latent, self.features),
            context,
            log_prob_kind=self.log_prob_kind,
            density=None if noise is None else self._log_prob,
            observe=None if noise is None else self._observation,
            event_shape=self.data_shape,
            no_density=(
                "an autoencoder without a decoder noise model has no density (log_prob_kind is "
                "None): build it with noise=σ for an estimate, use a VAE, or compare by samples "
                "(pyro_xform.metrics.sliced_wasserstein)"
            ),
        )

    def _observation(self, mean: Tensor) -> torch.distributions.Distribution:
        """:math:`p(x \\mid z) = \\mathcal N(D(z), \\sigma^2 I)` over the event shape."""
        return pdist.Normal(self.unflatten(mean), self.noise).to_event(len(self.event_shape))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, latent={self.latent}, noise={self.noise}"
