"""The variational autoencoder as a Pyro model/guide pair, with pluggable prior and
posterior, and its marginal as a distribution with an importance-weighted density."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import Tensor, nn
from torch.distributions import constraints

from ..core import (
    GeneratedDistribution,
    Xform,
    XformDistribution,
    as_xform,
    is_count,
    normal,
    register_normal,
    spec_of,
)
from ..nn import MLP, ConvDecoder, ConvEncoder, image_network
from ..transforms import LatentMap
from .flows import IAF, NSF
from .importance import log_mean_weight

__all__ = ["LIKELIHOODS", "SCALES", "VAE"]

_NAMES = itertools.count()

#: Observation models p(x | z) by name.
LIKELIHOODS = ("normal", "bernoulli", "continuous_bernoulli")
_SUPPORTS = {
    "normal": constraints.real,
    "bernoulli": constraints.boolean,
    "continuous_bernoulli": constraints.unit_interval,
}
#: The normal likelihood's scales by name (a number fixes it).
SCALES = ("auto", "decoder", "learned")
# A learned scale's start, as a fraction of each feature's standard deviation in the first
# batch: a decoder that starts precise has to use the code.
_INITIAL_SCALE = 0.05
# Size of the encoder's conditioning vector h for a flow posterior q(z | x) = T(. ; h).
_POSTERIOR_CONTEXT = 32


def _kl_weighted(weight: float):
    """Weight the latent site: scale by ``weight``, or drop it from the objective at 0."""
    if weight == 1.0:
        return contextlib.nullcontext()
    if weight == 0.0:
        return poutine.mask(mask=False)
    return poutine.scale(scale=weight)


def _draw(q: torch.distributions.Distribution, k: int) -> tuple[Tensor, Tensor]:
    """``k`` reparameterized draws of the posterior and their log-density (one pass for a flow)."""
    if isinstance(q, XformDistribution):
        return q.rsample_and_log_prob((k,))
    z = q.rsample((k,))
    return z, q.log_prob(z)


class VAE(Xform):
    """A variational autoencoder: :math:`z \\sim p(z)`, :math:`x \\sim p_\\theta(x \\mid z, c)`,
    with an amortized posterior :math:`q_\\phi(z \\mid x, c)`, as a Pyro ``model``/``guide``
    pair trained by the ELBO (objective ``"elbo"``):

    .. math:: \\log p(x) \\ge \\mathcal L(x) = \\mathbb E_{q(z \\mid x)}\\big[\\log p(x \\mid z)
        + \\log p(z) - \\log q(z \\mid x)\\big].

    Calling the model gives its marginal :math:`p(x \\mid c)` as a
    :class:`~pyro_xform.GeneratedDistribution`: ``sample`` decodes prior draws (with the
    observation noise), ``log_prob`` is the importance-weighted estimate with :math:`K`
    posterior samples (``log_prob_kind == "estimate"``; a lower bound in expectation that
    tightens as :math:`K` grows),

    .. math:: \\log p(x) \\approx \\log \\frac1K \\sum_{k=1}^K
        \\frac{p(x \\mid z_k)\\, p(z_k)}{q(z_k \\mid x)}, \\qquad z_k \\sim q(z \\mid x).

    The prior is a learned flow by default, a standard normal, or **any** exact
    :class:`~pyro_xform.Xform` on the latent space (a flow; a
    :class:`~pyro_xform.FlowMatching` or :class:`~pyro_xform.Diffusion` model, i.e. latent
    diffusion), trained jointly by the ELBO or afterwards on the codes by
    :func:`pyro_xform.fit_prior`. The posterior is a diagonal normal, or that normal followed by a flow
    conditioned on an encoder output :math:`h(x, c)`: ``"iaf"`` (inverse autoregressive flow)
    or any exact family whose ``context`` equals the size of :math:`h` (32).

    Args:
        features: data size.
        context: conditioning size.
        latent: latent size.
        hidden: hidden sizes of the encoder (the decoder mirrors them).
        activation: activation name.
        architecture, channels: the encoder and decoder: ``"auto"`` (convolutional, a
            :class:`~pyro_xform.nn.ConvEncoder` and :class:`~pyro_xform.nn.ConvDecoder` of
            base width ``channels`` with a dense layer of ``hidden[-1]``, for images of at
            least 8 x 8; else MLPs), ``"mlp"`` or ``"image"``
            (:func:`~pyro_xform.nn.image_network`).
        likelihood: ``"normal"``, ``"bernoulli"`` (binary data) or ``"continuous_bernoulli"``
            (data in :math:`[0, 1]`).
        scale: the normal likelihood's standard deviation: ``"decoder"`` (an output of the
            decoder, so it depends on :math:`z`), ``"learned"`` (one parameter per feature,
            starting at 0.05 of the feature's standard deviation in the first batch), a number
            (fixed), or ``"auto"``: ``"learned"`` for the normal likelihood where the code is
            as large as the datum (``features <= latent``), else ``"decoder"``. Where the
            code can hold the whole datum a precise decoder is attainable, and one that starts
            precise has to use the code; a noise that grows with :math:`z` there explains the
            data as noise and leaves the latent unused (posterior collapse). Where the code
            compresses, the reconstruction error is intrinsic and depends on :math:`z` (the
            background of an image against its strokes), and a shared scale that starts
            small generalizes badly (``bench/MEASUREMENTS.md``).
        prior: ``"flow"`` (a small :class:`~pyro_xform.NSF` over the latent space, two
            transforms of 64 x 64, trained jointly: it takes the shape of the codes' aggregate
            posterior), ``None`` (standard normal) or an exact model with
            ``features == latent`` and ``context`` either 0 or the VAE's.
        posterior: ``"normal"``, ``"iaf"`` or an exact model over the latent with
            ``context == 32``.
        particles: :math:`K` of ``log_prob``.
        name: the prefix of the parameters in Pyro's param store (``pyro.module``); by
            default one of its own (``"vae_0"``, ``"vae_1"``, ...), so two VAEs in one
            process never share parameters through the store.

    Examples:
        >>> import torch, pyro_xform
        >>> vae = pyro_xform.VAE(features=4, latent=2, hidden=(16,))
        >>> x = torch.randn(8, 4)
        >>> vae.elbo(x).shape, vae().log_prob(x).shape, vae().log_prob_kind
        (torch.Size([8]), torch.Size([8]), 'estimate')
        >>> result = pyro_xform.fit(vae, x, steps=3, progress=False)
        >>> result.objective
        'elbo'

    References:
        Auto-encoding variational Bayes (Kingma, Welling, 2013, arXiv:1312.6114).
        Importance weighted autoencoders (Burda, Grosse, Salakhutdinov, 2015, arXiv:1509.00519).
        Improved variational inference with inverse autoregressive flow (Kingma et al., 2016,
        arXiv:1606.04934). Variational lossy autoencoder (Chen et al., 2016, arXiv:1611.02731).
        The continuous Bernoulli (Loaiza-Ganem, Cunningham, 2019, arXiv:1907.06845).
        High-resolution image synthesis with latent diffusion models (Rombach et al., 2021,
        arXiv:2112.10752).
    """

    log_prob_kind = "estimate"
    default_objective = "elbo"

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
        likelihood: str = "normal",
        scale: str | float = "auto",
        prior: Xform | dict | str | None = "flow",
        posterior: str | Xform | dict = "normal",
        particles: int = 100,
        name: str | None = None,
    ) -> None:
        super().__init__(features, context)
        features = self.features  # the flat size the networks work on
        if not is_count(latent):
            raise ValueError(f"latent must be a positive int, got {latent!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        fixed = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        if not (scale in SCALES or (fixed and math.isfinite(scale) and scale > 0)):
            raise ValueError(f"scale must be one of {SCALES} or a positive number, got {scale!r}")
        if scale not in ("auto", "decoder") and likelihood != "normal":
            raise ValueError(f"scale belongs to the normal likelihood, not {likelihood!r}")
        if not is_count(particles):
            raise ValueError(f"particles must be a positive int, got {particles!r}")
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        # Pyro's param store keys parameters by name: a shared default name would hand a second
        # VAE the first one's parameters, and the second would silently never train.
        self._own_name = name is None
        name = f"vae_{next(_NAMES)}" if name is None else name
        self.latent, self.likelihood, self.particles, self.name = latent, likelihood, particles, name
        hidden = tuple(hidden)

        if isinstance(posterior, str):
            if posterior not in ("normal", "iaf"):
                raise ValueError(f"posterior must be 'normal', 'iaf' or an Xform, got {posterior!r}")
            flow = (
                IAF(latent, _POSTERIOR_CONTEXT, transforms=2, hidden=(hidden[-1],))
                if posterior == "iaf"
                else None
            )
        else:
            flow = self._check_latent_model(
                as_xform(posterior, name="posterior"), "posterior", (_POSTERIOR_CONTEXT,)
            )
        self.posterior_flow = flow
        h = _POSTERIOR_CONTEXT if flow is not None else 0
        image = image_network(self.event_shape, architecture)
        if image:
            self.encoder = ConvEncoder(
                self.event_shape, 2 * latent + h, channels, hidden[-1], context, activation
            )
        else:
            self.encoder = MLP(features, 2 * latent + h, hidden, context, activation, zero_last=False)
        if scale == "auto":
            scale = "learned" if likelihood == "normal" and features <= latent else "decoder"
        self.heteroscedastic = likelihood == "normal" and scale == "decoder"
        outputs = 2 * features if self.heteroscedastic else features
        if image:
            per_pixel = 2 if self.heteroscedastic else 1
            self.decoder = ConvDecoder(
                latent, self.event_shape, per_pixel, channels, hidden[-1], context, activation
            )
        else:
            self.decoder = MLP(latent, outputs, hidden[::-1], context, activation, zero_last=False)
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(features))
        else:
            self.register_buffer("log_scale", torch.full((features,), math.log(scale if fixed else 1.0)))
        # A learned scale is set from the first batch (files written before the flag have used theirs).
        self.register_buffer("scale_initialized", torch.tensor(scale != "learned"))
        self._register_load_state_dict_pre_hook(_scale_was_set)
        register_normal(self, "latent", latent)
        if isinstance(prior, str):
            if prior != "flow":
                raise ValueError(f"prior must be 'flow', None or an exact model, got {prior!r}")
            prior = NSF(latent, transforms=2, hidden=(64, 64))
        self.prior = self._check_latent_model(as_xform(prior, name="prior"), "prior", (0, context))

    def __setstate__(self, state) -> None:
        # A deep copy or an unpickled VAE is another model: with a name of its own unless the
        # user chose one, it does not take over the original's parameters in Pyro's store.
        super().__setstate__(state)
        if self.__dict__.get("_own_name"):
            self.name = f"vae_{next(_NAMES)}"

    def _check_latent_model(self, model: Xform | None, what: str, contexts: tuple[int, ...]) -> Xform | None:
        if model is None:
            return None
        if model.event_shape != (self.latent,):
            shape = model.features if len(model.event_shape) == 1 else tuple(model.event_shape)
            raise ValueError(f"the {what} has features={shape}; it must equal latent={self.latent}")
        if model.context_features not in contexts:
            raise ValueError(f"the {what} has context={model.context_features}; it must be one of {contexts}")
        if model.log_prob_kind != "exact":
            raise ValueError(f"the {what} needs an exact density; {type(model).__name__} has none")
        if what == "posterior" and not hasattr(model, "transform"):
            raise ValueError(f"the posterior must be a transform of a base ({type(model).__name__} is not)")
        return model

    # -- the pieces ----------------------------------------------------------------------
    @property
    def analytic_kl(self) -> bool:
        """Whether the KL term is analytic (normal prior and normal posterior)."""
        return self.prior is None and self.posterior_flow is None

    def prior_distribution(
        self, context: Tensor | None = None, batch_shape=()
    ) -> torch.distributions.Distribution:
        """:math:`p(z \\mid c)` with batch shape ``batch_shape``."""
        batch_shape = torch.Size(batch_shape)
        if self.prior is None:
            return normal(self, "latent", batch_shape)
        d = self.prior(context if self.prior.context_features else None)
        return d if d.batch_shape == batch_shape else d.expand(batch_shape)

    def posterior(self, x: Tensor, context: Tensor | None = None) -> torch.distributions.Distribution:
        """The amortized posterior :math:`q(z \\mid x, c)` of data ``x`` of shape
        ``(..., *event_shape)``, batch shape ``(...)``."""
        out = self.encoder(self.flatten(x), context)
        loc, raw = out[..., : self.latent], out[..., self.latent : 2 * self.latent]
        base = pdist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)
        if self.posterior_flow is None:
            return base
        return XformDistribution(base, self.posterior_flow.transform, out[..., 2 * self.latent :])

    def observation(self, params: Tensor) -> torch.distributions.Distribution:
        """:math:`p(x \\mid z)` from the decoder's output (logits, or mean and scale), over
        the event shape."""
        shaped, events = self.unflatten, len(self.event_shape)
        if self.likelihood == "bernoulli":
            return pdist.Bernoulli(logits=shaped(params)).to_event(events)
        if self.likelihood == "continuous_bernoulli":
            return pdist.ContinuousBernoulli(logits=shaped(params).clamp(-30, 30)).to_event(events)
        if self.heteroscedastic:
            loc, raw = params[..., : self.features], params[..., self.features :]
            return pdist.Normal(shaped(loc), shaped(F.softplus(raw) + 1e-3)).to_event(events)
        return pdist.Normal(shaped(params), shaped(self.log_scale.exp())).to_event(events)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The mean of :math:`p(x \\mid z, c)`."""
        return self.observation(self.decoder(z, context)).mean

    # -- Pyro ----------------------------------------------------------------------------
    def model(self, x: Tensor, context: Tensor | None = None, *, kl_weight: float = 1.0) -> Tensor:
        """The generative model, for Pyro: ``z ~ p(z | c)``, ``x ~ p(x | z, c)`` in a plate.

        ``kl_weight`` scales the latent site in both model and guide (β-VAE, KL annealing).
        """
        pyro.module(self.name, self)
        n = x.shape[0]
        with pyro.plate("data", n):
            with _kl_weighted(kl_weight):
                z = pyro.sample("z", self.prior_distribution(context, (n,)))
            pyro.sample("x", self.observation(self.decoder(z, context)), obs=x)
        return z

    def guide(self, x: Tensor, context: Tensor | None = None, *, kl_weight: float = 1.0) -> Tensor:
        """The amortized guide, for Pyro: ``z ~ q(z | x, c)`` in the same plate."""
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            with _kl_weighted(kl_weight):
                return pyro.sample("z", self.posterior(x, context))

    # -- bounds --------------------------------------------------------------------------
    def elbo(self, x: Tensor, context: Tensor | None = None, particles: int = 1) -> Tensor:
        """The ELBO of each row of ``x`` (a Monte Carlo estimate over ``particles`` draws,
        with the KL term in closed form where it has one)."""
        q = self.posterior(x, context)
        prior = self.prior_distribution(context, q.batch_shape)
        z, log_q = _draw(q, particles)
        log_lik = self.observation(self.decoder(z, context)).log_prob(x)
        if self.analytic_kl:
            return log_lik.mean(0) - torch.distributions.kl_divergence(q, prior)
        return (log_lik + prior.log_prob(z) - log_q).mean(0)

    def iwae(
        self, x: Tensor, context: Tensor | None = None, particles: int | None = None, chunk: int | None = None
    ) -> Tensor:
        """The importance-weighted bound :math:`\\log \\frac1K\\sum_k w_k` of each row of ``x``
        (:math:`K` = ``particles``, default the model's), computed ``chunk`` particles at a time."""
        particles = self.particles if particles is None else particles
        if not is_count(particles):
            raise ValueError(f"particles must be a positive int, got {particles!r}")
        q = self.posterior(x, context)
        prior = self.prior_distribution(context, q.batch_shape)

        def log_weights(k: int) -> Tensor:
            z, log_q = _draw(q, k)
            return self.observation(self.decoder(z, context)).log_prob(x) + prior.log_prob(z) - log_q

        rows = q.batch_shape.numel()
        return log_mean_weight(log_weights, particles, rows, max(self.features, self.latent), chunk)

    # -- the contract --------------------------------------------------------------------
    def initialize(self, data: Tensor, context: Tensor | None = None) -> None:
        """Data-dependent initialization on the first batch: a learned decoder scale starts at
        0.05 of each feature's standard deviation, and a learned prior (ActNorm,
        standardization) is initialized on the batch's codes."""
        if not bool(self.scale_initialized) and data.shape[0] > 1:
            with torch.no_grad():
                spread = self.flatten(data).std(0).clamp_min(1e-3 * float(data.std().clamp_min(1e-12)))
                self.log_scale.copy_((_INITIAL_SCALE * spread).log())
                self.scale_initialized.fill_(True)
        if self.prior is not None:
            with torch.no_grad():
                codes = self.posterior(data, context).sample()
            self.prior.initialize(codes, context if self.prior.context_features else None)

    def check_data(self, data: Tensor, *, name: str = "data") -> None:
        super().check_data(data, name=name)
        if self.likelihood == "bernoulli" and not ((data == 0) | (data == 1)).all():
            raise ValueError(f"{name} must be binary (0 or 1) for the Bernoulli likelihood")
        if self.likelihood == "continuous_bernoulli" and not ((data >= 0) & (data <= 1)).all():
            raise ValueError(f"{name} must lie in [0, 1] for the continuous Bernoulli likelihood")

    def forward(self, context: Tensor | None = None, particles: int | None = None) -> GeneratedDistribution:
        context = self.check_context(context)
        batch_shape = () if context is None else context.shape[:-1]
        generator = LatentMap(self.decoder, self.latent, self.features, support=_SUPPORTS[self.likelihood])
        return GeneratedDistribution(
            self.prior_distribution(context, batch_shape),
            generator,
            context,
            log_prob_kind="estimate",
            density=lambda value, ctx: self.iwae(value, ctx, particles),
            observe=self.observation,
            reparameterized=self.likelihood == "normal",
            event_shape=self.data_shape,
        )

    # -- two-stage priors ----------------------------------------------------------------
    def check_prior(self, prior: Xform | None) -> Xform | None:
        """``prior`` if it can be this VAE's prior (an exact model over the latent space, with
        context 0 or the VAE's); else ``ValueError``."""
        return self._check_latent_model(as_xform(prior, name="prior"), "prior", (0, self.context_features))

    def set_prior(self, prior: Xform | None) -> None:
        """Replace the prior (recorded in :attr:`config`, so a saved model keeps it)."""
        self.prior = self.check_prior(prior)
        self.config["prior"] = spec_of(prior)

    @torch.no_grad()
    def codes(self, data: Tensor, context: Tensor | None = None, per_row: int = 1) -> Tensor:
        """Draws of the aggregate posterior: ``per_row`` samples of :math:`q(z \\mid x_i, c_i)`
        for every row, shape ``(per_row * N, latent)``."""
        self.check_data(data)
        q = self.posterior(data, self.check_context(context))
        return q.sample((per_row,)).reshape(-1, self.latent)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, latent={self.latent}, likelihood={self.likelihood!r}"


def _scale_was_set(state_dict, prefix, *args) -> None:
    state_dict.setdefault(prefix + "scale_initialized", torch.tensor(True))
