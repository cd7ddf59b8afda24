"""The generative adversarial network: a deterministic generator of base noise, an implicit
distribution with no density."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..core import GeneratedDistribution, Xform, is_count, normal, register_normal
from ..nn import MLP, ConvDecoder, ConvEncoder, image_network
from ..transforms import LatentMap, Standardize

__all__ = ["GAN"]

IMPLICIT = (
    "a GAN is an implicit model: x = G(z) has no tractable density (log_prob_kind is None). "
    "Compare it by samples (pyro_xform.metrics.sliced_wasserstein), or do inference over its "
    "base variable z with x = G(z) as a deterministic site"
)


class GAN(Xform):
    """A generative adversarial network: :math:`x = \\mu + \\sigma \\odot G_\\theta(z; c)`,
    :math:`z \\sim \\mathcal N(0, I_{\\text{latent}})`, trained against a discriminator
    :math:`D_\\psi(x; c)` by the objective ``"adversarial"``
    (:class:`~pyro_xform.objectives.Adversarial`: non-saturating loss with R1 penalty, or
    WGAN-GP). :math:`\\mu, \\sigma` are the data's mean and standard deviation, set once on
    the first batch, so both networks work on standardized data.

    Calling the model gives a :class:`~pyro_xform.GeneratedDistribution` with
    ``log_prob_kind is None``: ``sample``/``rsample`` work (reparameterized in the generator's
    parameters), ``log_prob`` raises ``NotImplementedError`` saying what to use instead.

    Args:
        features: data size, or an event shape such as ``(1, 28, 28)``.
        context: conditioning size (both networks see the context).
        latent: size of the base noise :math:`z`.
        hidden: generator hidden sizes.
        discriminator_hidden: discriminator hidden sizes (default ``hidden``).
        activation: activation name.
        architecture, channels: the networks: ``"auto"`` (for images of at least 8 x 8, a
            DCGAN-style pair, the generator a :class:`~pyro_xform.nn.ConvDecoder` and the
            discriminator a :class:`~pyro_xform.nn.ConvEncoder` of base width
            ``channels``, each with a dense layer of the last hidden size; else MLPs),
            ``"mlp"`` or ``"image"`` (:func:`~pyro_xform.nn.image_network`).

    Examples:
        >>> import torch, pyro_xform
        >>> gan = pyro_xform.GAN(features=2, latent=2, hidden=(16,))
        >>> data = pyro_xform.datasets.toy("moons", n=256)
        >>> result = pyro_xform.fit(gan, data, steps=5, progress=False)
        >>> gan().sample((3,)).shape
        torch.Size([3, 2])

    References:
        Generative adversarial nets (Goodfellow et al., 2014, arXiv:1406.2661).
        Unsupervised representation learning with deep convolutional generative adversarial
        networks (Radford, Metz, Chintala, 2015, arXiv:1511.06434).
        Which training methods for GANs do actually converge? (Mescheder, Geiger, Nowozin,
        2018, arXiv:1801.04406).
    """

    log_prob_kind = None
    default_objective = "adversarial"

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        latent: int = 8,
        hidden: Sequence[int] = (256, 256),
        discriminator_hidden: Sequence[int] | None = None,
        activation: str = "silu",
        architecture: str = "auto",
        channels: int = 32,
    ) -> None:
        super().__init__(features, context)
        features = self.features  # the flat size the networks work on
        if not is_count(latent):
            raise ValueError(f"latent must be a positive int, got {latent!r}")
        self.latent = latent
        hidden = tuple(hidden)
        hidden_d = tuple(hidden if discriminator_hidden is None else discriminator_hidden)
        if image_network(self.event_shape, architecture):
            shape = self.event_shape
            self.generator = ConvDecoder(latent, shape, 1, channels, hidden[-1], context, activation)
            self.discriminator = ConvEncoder(shape, 1, channels, hidden_d[-1], context, activation)
        else:
            self.generator = MLP(latent, features, hidden, context, activation, zero_last=False)
            self.discriminator = MLP(features, 1, hidden_d, context, activation, zero_last=False)
        # Files written under the old names still load.
        self._register_load_state_dict_pre_hook(_renamed)
        register_normal(self, "latent", latent)
        # The generator draws, and the discriminator scores, standardized data.
        self.standardizer = Standardize(features)

    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        self.standardizer.initialize(self.flatten(data))

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The generator's map from the latent to data, :math:`x = \\mu + \\sigma \\odot G(z; c)`,
        shape ``(..., *event_shape)``."""
        return self.unflatten(self._generate(z, context))

    def _generate(self, z: Tensor, context: Tensor | None) -> Tensor:
        return self.standardizer.forward_and_ladj(self.generator(z, context))[0]

    def discriminate(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The discriminator's score :math:`D(x; c)`, shape ``x.shape[:-1]``."""
        x = self.standardizer.inverse_and_ladj(self.flatten(x))[0]
        return self.discriminator(x, context).squeeze(-1)

    def forward(self, context: Tensor | None = None) -> GeneratedDistribution:

        context = self.check_context(context)
        batch_shape = () if context is None else context.shape[:-1]
        base = normal(self, "latent", batch_shape)
        return GeneratedDistribution(
            base,
            LatentMap(self._generate, self.latent, self.features),
            context,
            log_prob_kind=None,
            no_density=IMPLICIT,
            event_shape=self.data_shape,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, latent={self.latent}"


#: Names in files written before: the discriminator was the critic, the standardization three buffers.
_RENAMED = {"critic.": "discriminator.", "data_loc": "standardizer.loc", "data_scale": "standardizer.scale"}


def _renamed(state_dict, prefix, *args) -> None:
    if prefix + "data_loc" in state_dict and prefix + "initialized" in state_dict:
        state_dict[prefix + "standardizer.initialized"] = state_dict.pop(prefix + "initialized")
    for key in list(state_dict):
        for old, new in _RENAMED.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
