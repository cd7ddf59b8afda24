"""Two-stage training: a latent-variable model first, then a density on its codes.

The families hold the data side (:meth:`VAE.codes <pyro_xform.VAE.codes>`,
:meth:`VAE.set_prior <pyro_xform.VAE.set_prior>`, :meth:`Autoencoder.codes
<pyro_xform.Autoencoder.codes>`); the training of the second stage is :func:`~pyro_xform.fit`'s,
so it lives here, above both.
"""

from __future__ import annotations

from torch import Tensor

from .core import Xform
from .families import VAE, Autoencoder
from .fit import FitResult, fit

__all__ = ["fit_latent", "fit_prior"]


def fit_prior(
    vae: VAE, prior: Xform, data: Tensor, context: Tensor | None = None, per_row: int = 1, **fit_kwargs
) -> FitResult:
    """Fit ``prior`` to the aggregate posterior of ``data``,
    :math:`q(z) = \\frac1N \\sum_i q(z \\mid x_i, c_i)` (``per_row`` draws per row), by the
    prior's own default objective, then make it the VAE's prior (two-stage training, as in
    latent diffusion). The encoder and decoder are unchanged; the KL-optimal prior is the
    aggregate posterior, so a good fit tightens the bound.

    Args:
        vae: a trained VAE.
        prior: an exact model over the latent space (``features == vae.latent``; context 0
            or the VAE's).
        data, context: the data whose codes the prior is fitted to.
        per_row: draws of :math:`q(z \\mid x_i)` per row.
        **fit_kwargs: passed to :func:`~pyro_xform.fit` (``steps``, ``validation``, ...).

    Returns:
        The prior's :class:`~pyro_xform.FitResult`.

    Raises:
        ValueError: the prior does not fit the latent space, or a conditional prior is given
            no context.

    Examples:
        >>> import torch, pyro_xform
        >>> vae = pyro_xform.VAE(features=3, latent=2, hidden=(8,))
        >>> prior = pyro_xform.MAF(2, hidden=(8,))
        >>> result = pyro_xform.fit_prior(vae, prior, torch.randn(64, 3), steps=3, progress=False)
        >>> vae.prior is prior, result.steps
        (True, 3)

    References:
        High-resolution image synthesis with latent diffusion models (Rombach et al., 2021,
        arXiv:2112.10752).
    """
    vae.check_prior(prior)
    codes = vae.codes(data, context, per_row)
    code_context = None
    if prior.context_features:
        if context is None:
            raise ValueError("the prior is conditional: give the context of the data")
        code_context = context.repeat(per_row, 1)
    # No cast: fit refuses a prior of another dtype than the codes, with a clear message.
    result = fit(prior, codes, context=code_context, **fit_kwargs)
    vae.set_prior(prior)
    return result


def fit_latent(
    autoencoder: Autoencoder, data: Tensor, context: Tensor | None = None, **fit_kwargs
) -> FitResult:
    """Refit an autoencoder's latent density to the codes of ``data`` (the second stage) by
    the density's default objective.

    Examples:
        >>> import torch, pyro_xform
        >>> ae = pyro_xform.Autoencoder(features=3, latent=2, hidden=(8,))
        >>> pyro_xform.fit_latent(ae, torch.randn(64, 3), steps=3, progress=False).steps
        3

    Returns:
        The density's :class:`~pyro_xform.FitResult`.
    """
    codes, code_context = autoencoder.codes(data, context)
    return fit(autoencoder.density, codes, context=code_context, **fit_kwargs)
