"""One guarded optimizer step of :func:`~pyro_xform.fit` that never waits for the device.

A non-finite loss or gradient must never reach the parameters. Checking it with
``bool(torch.isfinite(loss))`` stalls a GPU on every step (the host waits for the device to
finish before it can queue the next step), so the check stays on the device: the update is
skipped there, by the fused Adam kernel's ``found_inf`` input (the protocol of
``torch.amp.GradScaler``), and whether it was skipped is a device tensor that the training
loop reads, with the loss, when it next logs. Only an optimizer without that input (the
unfused fallback) reads it at once. Without clipping, the gradient norm is computed but
nothing is rescaled.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GuardedStep"]


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
        >>> float(step((w * float("nan")).sum())), w.tolist()
        (1.0, [1.0, 1.0])
        >>> float(step((w**2).sum())), bool((w < 1).all())
        (0.0, True)
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
        """Take the step; returns 1.0 where it was skipped (a non-finite gradient), else 0.0,
        as a float32 tensor on the loss's device. A non-finite loss with a finite gradient
        is applied; the caller sees the loss itself."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.gradient_sync is not None:
            # A non-finite loss on one rank poisons the summed gradient on every rank.
            loss = self.gradient_sync(torch.where(torch.isfinite(loss.detach()), loss, math.nan))
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        skipped = (~torch.isfinite(norm)).to(torch.float32)
        if self.max_norm != math.inf:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.max_norm, norm)
        if self.fused:
            self.optimizer.found_inf = skipped
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        elif not bool(skipped):
            self.optimizer.step()
        return skipped
