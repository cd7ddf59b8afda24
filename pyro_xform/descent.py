"""One guarded optimizer step of :func:`~pyro_xform.fit` that never waits for the device.

A non-finite loss or gradient must never reach the parameters. Checking it with
``bool(torch.isfinite(loss))`` stalls a GPU on every step (the host waits for the device to
finish before it can queue the next step), so the check stays on the device: the update is
skipped there, by the fused Adam kernel's ``found_inf`` input (the protocol of
``torch.amp.GradScaler``), and the step's status is a device tensor that the training loop
reads when it next logs. Only an optimizer without that input (the unfused fallback) reads
the status at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["FINITE", "GRADIENT_NOT_FINITE", "LOSS_NOT_FINITE", "GuardedStep"]

#: Step statuses, as the values of the tensor :meth:`GuardedStep.__call__` returns.
FINITE, GRADIENT_NOT_FINITE, LOSS_NOT_FINITE = 0, 1, 2


class GuardedStep:
    """``optimizer.step()`` on the gradient of a loss, skipped where the loss or the gradient
    is NaN/Inf.

    Args:
        optimizer: the optimizer of one parameter group.
        clip_grad: clip the gradient norm to this value (``None``: no clipping).
        gradient_sync: under :mod:`torch.distributed`, the DDP wrapper that sums the
            gradients over the ranks during the backward pass. A non-finite loss on one rank
            poisons the summed gradient on all of them, so every rank skips the step, with
            no extra collective.

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> step = GuardedStep(torch.optim.Adam([w], lr=0.1, fused=True), clip_grad=None)
        >>> int(step((w * float("nan")).sum())), w.tolist()
        (2, [1.0, 1.0])
        >>> int(step((w**2).sum())), bool((w < 1).all())
        (0, True)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        clip_grad: float | None,
        gradient_sync: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.optimizer, self.gradient_sync = optimizer, gradient_sync
        self.max_norm = math.inf if clip_grad is None else clip_grad
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.fused = bool(optimizer.defaults.get("fused"))

    def __call__(self, loss: Tensor) -> Tensor:
        """Take the step; returns its status (``FINITE``, ``GRADIENT_NOT_FINITE`` or
        ``LOSS_NOT_FINITE``) as a tensor on the loss's device."""
        finite = torch.isfinite(loss.detach()).all()
        self.optimizer.zero_grad(set_to_none=True)
        if self.gradient_sync is not None:
            loss = self.gradient_sync(torch.where(finite, loss, math.nan))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        ok = finite & torch.isfinite(norm)
        if self.fused:
            self.optimizer.found_inf = (~ok).to(torch.float32)
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        elif bool(ok):
            self.optimizer.step()
        return (~finite).to(torch.uint8) + (~ok).to(torch.uint8)
