"""Inference in base space: a latent site ``x ~ model(c)`` becomes ``z ~ base`` and the
deterministic ``x = T(z; c)``, for every family, implicit ones included."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro.infer.reparam.reparam import Reparam

from ..core import GeneratedDistribution, XformDistribution

__all__ = ["BaseReparam"]


def _standard(fn):
    """The innermost base of ``fn`` and the map from it to ``fn``'s value: a VAE's flow
    prior is itself unwrapped, so inference runs over standard normal noise."""
    if isinstance(fn, XformDistribution):
        base, inner = _standard(fn.base_dist)
        mapping = fn.latent_map if isinstance(fn, GeneratedDistribution) else fn.bijector
        context = fn.context

        def forward(u, inner=inner):
            return mapping.forward_value(inner(u), context)

        return base, forward
    return fn, lambda u: u


class BaseReparam(Reparam):
    """Reparameterize a latent ``pyro.sample`` site whose distribution is a pyro_xform
    model, :math:`x = T(z; c)`, into its base variable:

    .. math:: z \\sim \\mathcal N(0, I) \\;(\\text{site } \\texttt{name\\_base}), \\qquad
        x = T(z; c) \\;(\\text{a deterministic site } \\texttt{name}).

    Unlike Pyro's ``TransformReparam`` it works where the transform is not a bijection —
    a GAN's generator, a VAE's or an autoencoder's decoder — which is how an implicit model
    serves as a prior (e.g. a Bayesian inverse problem sampled with NUTS over :math:`z`).
    It computes the value alone (an ODE family skips its log-determinant), and a prior that
    is itself a model (a VAE with a flow prior) is unwrapped down to standard normal noise.

    Args:
        noise: for a model with observation noise (a VAE or a noisy autoencoder), also
            draw :math:`x \\sim p(x \\mid G(z))` as a latent site ``name_noise``; by default
            :math:`x = \\mathbb E[x \\mid z]`, the noiseless generator (the usual
            generative-prior choice).

    Examples:
        >>> import torch, pyro, pyro.distributions as dist, pyro_xform
        >>> gan = pyro_xform.GAN(features=3, latent=2).requires_grad_(False)
        >>> def model(y):
        ...     x = pyro.sample("x", gan())
        ...     pyro.sample("y", dist.Normal(x, 0.1).to_event(1), obs=y)
        >>> reparam = pyro.poutine.reparam(model, config={"x": BaseReparam()})
        >>> trace = pyro.poutine.trace(reparam).get_trace(torch.zeros(3))
        >>> trace.nodes["x_base"]["value"].shape, trace.nodes["x"]["value"].shape
        (torch.Size([2]), torch.Size([3]))

    References:
        Compressed sensing using generative models (Bora, Jalal, Price, Dimakis, 2017,
        arXiv:1703.03208). NeuTra-lizing bad geometry in Hamiltonian Monte Carlo using
        neural transport (Hoffman et al., 2019, arXiv:1903.03704).
    """

    def __init__(self, noise: bool = False) -> None:
        self.noise = noise

    def apply(self, msg):
        name, fn = msg["name"], msg["fn"]
        if msg["is_observed"]:
            raise ValueError(
                f"BaseReparam applies to latent sites; {name!r} is observed (its density is the model's "
                "log_prob, no reparameterization needed)"
            )
        fn, event_dim = self._unwrap(fn)
        if not isinstance(fn, XformDistribution):
            raise ValueError(
                f"BaseReparam needs a pyro_xform distribution at site {name!r}, got {type(fn).__name__}"
            )
        base, forward = _standard(fn)
        # Dims that Independent wrappers made part of the event stay so on the base site; the
        # model's own event (an image's three dims) is the base's one flat dim.
        extra = event_dim - fn.event_dim
        z = pyro.sample(f"{name}_base", self._wrap(base, base.event_dim + extra))
        x = forward(z)
        if not (isinstance(fn, GeneratedDistribution) and fn.observe is not None):
            x = fn.unflatten(x)  # the flat transform's value as the site's event shape
        else:
            # The generator gives the noise model's parameters (a VAE's decoder): x is its mean,
            # or a draw of it as a latent site of its own.
            noise = fn.observe(x)
            x = pyro.sample(f"{name}_noise", self._wrap(noise, event_dim)) if self.noise else noise.mean
        # A deterministic site: its value is x, it adds nothing to the joint density.
        return {"fn": dist.Delta(x, event_dim=event_dim).mask(False), "value": x, "is_observed": True}
