"""Importance-sampling estimates of a marginal log-density, computed a chunk of particles
at a time."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["log_mean_weight"]

# Elements of one chunk of particles (rows x particles x event size) held at once.
_CHUNK_ELEMENTS = 2**20


def log_mean_weight(
    log_weights: Callable[[int], Tensor], particles: int, rows: int, size: int, chunk: int | None = None
) -> Tensor:
    """:math:`\\log \\frac1K \\sum_{k=1}^K w_k` from ``log_weights(k)``, which draws ``k``
    particles and returns their log-weights, shape ``(k, *rows)``.

    Args:
        log_weights: draws ``k`` particles; returns :math:`\\log w`, particles first.
        particles: :math:`K`.
        rows: how many rows each particle covers (to size the chunks).
        size: the largest event size a particle touches (to size the chunks).
        chunk: particles per call (default: about a million elements at a time).

    Examples:
        >>> out = log_mean_weight(lambda k: torch.zeros(k, 3), particles=10, rows=3, size=1, chunk=4)
        >>> out
        tensor([0., 0., 0.])
    """
    chunk = chunk or max(1, min(particles, _CHUNK_ELEMENTS // (max(1, rows) * size)))
    parts = [
        torch.logsumexp(log_weights(min(chunk, particles - start)), 0) for start in range(0, particles, chunk)
    ]
    return torch.logsumexp(torch.stack(parts), 0) - math.log(particles)
