"""Classifier-free guidance, shared by flow matching and diffusion: the context is dropped
at a rate in training, and at sampling the conditional and unconditional outputs of one
network are mixed.

The network sees the context with a flag appended, :math:`(c, 1)`; the null context is
all zeros, :math:`(0, 0)`, so it cannot be confused with any :math:`c`. Both families'
outputs (a velocity; a noise prediction) enter their ODE affinely, so mixing the outputs
with weights :math:`1 - w` and :math:`w` mixes the fields the same way, divergences
included.

References:
    Classifier-Free Diffusion Guidance (Ho, Salimans, 2022, arXiv:2207.12598).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["check_guidance", "flagged", "guided", "with_guidance"]


def check_guidance(context: int, dropout: float, guidance: float, standardize: bool | str = "auto") -> None:
    """Raise ``ValueError`` unless the guidance settings fit a model of ``context`` features
    standardized by ``standardize``."""
    if dropout and standardize == "regression":
        raise ValueError(
            "classifier-free guidance mixes conditional and unconditional outputs in one standardized "
            "space; standardize='regression' makes that space depend on the context"
        )
    if not 0 <= dropout < 1:
        raise ValueError(f"guidance_dropout must lie in [0, 1), got {dropout}")
    if dropout and not context:
        raise ValueError("classifier-free guidance (guidance_dropout > 0) needs a conditional model")
    if guidance != 1.0 and not dropout:
        raise ValueError("a guidance scale other than 1 needs a model trained with guidance_dropout > 0")


def flagged(context: Tensor, dropout: float = 0.0) -> Tensor:
    """``context`` with the flag appended, :math:`(c, 1)`; with ``dropout`` each row is
    replaced by the null context :math:`(0, 0)` with that probability (training).

    Examples:
        >>> flagged(torch.tensor([[2.0, 3.0]]))
        tensor([[2., 3., 1.]])
    """
    keep = context.new_ones((*context.shape[:-1], 1))
    if dropout:
        keep = (torch.rand_like(keep) >= dropout).to(context.dtype)
    return torch.cat([context * keep, keep], -1)


def guided(net: Callable, x: Tensor, t: Tensor, context: Tensor, guidance: float):
    """:math:`o_\\varnothing + w\\,(o_c - o_\\varnothing)` of ``net(x, t, context)`` (a tensor
    or a tuple of tensors, e.g. a field and its divergence); at :math:`w = 1` the
    conditional output alone, one network evaluation."""
    cond = net(x, t, flagged(context))
    if guidance == 1.0:
        return cond
    null = net(x, t, context.new_zeros((*context.shape[:-1], context.shape[-1] + 1)))
    if isinstance(cond, tuple):
        return tuple(n + guidance * (c - n) for c, n in zip(cond, null, strict=True))
    return null + guidance * (cond - null)


def with_guidance(field, guidance: float | None, dropout: float):
    """``field`` (a family's, with a ``with_guidance`` method) at guidance scale ``guidance``
    (``None``: as it is), sharing its network; a scale other than 1 needs a model trained
    with context dropout."""
    if guidance is None:
        return field
    if guidance != 1.0 and not dropout:
        raise ValueError("guidance needs a model trained with guidance_dropout > 0")
    return field.with_guidance(guidance)
