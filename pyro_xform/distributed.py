"""Multi-process training for :func:`~pyro_xform.fit`, on ``torch.distributed`` and
PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` (DDP).

The same ``fit`` call runs under ``torchrun``: every rank holds the whole data set, a
permutation shared by all ranks (one seed) fixes each epoch's order, and rank :math:`r`
trains on the :math:`r`-th slice of every global minibatch of ``world * batch_size`` rows.
Each optimizer's parameters are wrapped in DDP, whose reducer all-reduces the gradients
during the backward pass. Every objective's loss is a *sum* over its minibatch, so the
gradients are summed over ranks (a DDP communication hook), not averaged: a step on
:math:`W` ranks with batch :math:`b` each is the step of one process with batch
:math:`Wb`,

.. math:: \\nabla_\\theta \\sum_{i \\in B} \\ell_i(\\theta)
    = \\sum_{r=1}^{W} \\nabla_\\theta \\sum_{i \\in B_r} \\ell_i(\\theta).

Decisions that must agree (a non-finite loss, early stopping) are taken on all-reduced
figures, so every rank stops at the same step; only rank 0 writes checkpoints and shows
the progress bar. Collectives time out (``Distributed(timeout=...)``), so a dead rank
stops the others with a message instead of a hang.

References:
    PyTorch distributed: experiences on accelerating data parallel training (Li et al.,
    2020, arXiv:2006.15704).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Distributed", "World"]


@dataclass(frozen=True)
class Distributed:
    """Options of multi-process training, passed as ``fit(..., distributed=Distributed(...))``.

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPU); ``None`` picks by the model's device.
        timeout: seconds a collective waits for the other ranks before it fails, e.g. when
            a rank died. Both apply when ``fit`` creates the process group (which then
            stays up for the rest of the script); an existing group keeps its own.

    Examples:
        >>> Distributed(timeout=60.0).timeout
        60.0
    """

    backend: str | None = None
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.backend not in (None, "gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo', 'nccl' or None, got {self.backend!r}")
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")


def _launched() -> bool:
    """Whether a launcher such as ``torchrun`` set up a multi-process world."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _sum_hook(process_group, bucket):
    # The losses are sums over the minibatch: the global batch's gradient is the sum over ranks.
    group = process_group if process_group is not None else dist.group.WORLD
    future = dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future()
    return future.then(lambda f: f.value()[0])


class _Parameters(nn.Module):
    """The parameters of one optimizer, as a module DDP can wrap; its forward is the
    identity on the loss, which is where DDP prepares the reducer for the backward pass."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)

    def forward(self, loss: Tensor) -> Tensor:
        return loss


class GradientSync:
    """The gradient sum over the ranks of one optimizer's parameters, for
    :class:`pyro_xform.descent.GuardedStep`: calling it on the loss prepares DDP's reducer
    for the backward pass."""

    def __init__(self, world: World, params: list[nn.Parameter]) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.world = world
        # A parameter may get no gradient in a step (e.g. a decoder scale unused by a loss):
        # DDP must look for those rather than wait for them.
        device_ids = [params[0].device.index] if params and params[0].is_cuda else None
        self.ddp = DistributedDataParallel(
            _Parameters(params), device_ids=device_ids, find_unused_parameters=True
        )
        self.ddp.register_comm_hook(None, _sum_hook)

    def __call__(self, loss: Tensor) -> Tensor:
        with warnings.catch_warnings():
            # That every parameter got a gradient this time is no news: the search is on purpose.
            warnings.filterwarnings("ignore", message=".*find_unused_parameters=True was specified")
            return self.ddp(loss)


class World:
    """The processes of one training run: ``rank`` of ``size``. ``World.single()`` is the
    one-process world, where every collective is the identity."""

    def __init__(self, rank: int = 0, size: int = 1, device: torch.device | None = None) -> None:
        self.rank, self.size = rank, size
        self.device = device or torch.device("cpu")

    @classmethod
    def single(cls) -> World:
        return cls()

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def start(cls, distributed: bool | Distributed | None, device: torch.device) -> World:
        """Join (or create) the process group that ``distributed`` and the environment ask for."""
        if distributed is None:
            wanted = dist.is_available() and (dist.is_initialized() or _launched())
        elif isinstance(distributed, (bool, Distributed)):
            wanted = bool(distributed) if isinstance(distributed, bool) else True
        else:
            raise ValueError(
                "distributed must be None, a bool or a pyro_xform.Distributed, "
                f"got {type(distributed).__name__}"
            )
        if not wanted:
            return cls.single()
        options = distributed if isinstance(distributed, Distributed) else Distributed()
        if not dist.is_available():
            raise RuntimeError("this torch build has no torch.distributed")
        # A process group created here stays up until exit: tearing it down and building it
        # again on the same rendezvous races between ranks, and the script's next fit needs it.
        if not dist.is_initialized():
            if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
                raise RuntimeError(
                    "distributed training needs the RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
                    "environment that torchrun sets (torchrun --nproc-per-node=2 script.py), or a "
                    "process group initialized with torch.distributed.init_process_group"
                )
            backend = options.backend or ("nccl" if device.type == "cuda" else "gloo")
            if backend == "nccl" and device.type != "cuda":
                raise ValueError("the nccl backend needs the model on a GPU; use gloo on CPU")
            if device.type == "cuda":  # nccl's object collectives use the current device
                torch.cuda.set_device(device)
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=options.timeout))
            # Torn down at exit: a gloo group still alive while the interpreter shuts down
            # can abort the process ("terminate called without an active exception").
            atexit.register(_destroy)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    # Collectives (the identity in a one-process world).
    def all_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def agree(self, what: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Raise the same ``ValueError`` on every rank unless ``what`` is equal on all of them
        (a function giving ``what`` is called only in a distributed run: a data checksum reads
        all of the data)."""
        if not self.distributed:
            return
        what = what() if callable(what) else what
        views = self.gather(what)
        for key in what:
            values = [view[key] for view in views]
            if not all(_same(v, values[0]) for v in values[1:]):
                listing = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
                raise ValueError(
                    f"the ranks disagree on {key} ({listing}); every rank must call fit the same way"
                )

    def on_every_rank(self, check: Callable[[], Any]) -> Any:
        """Run a local check; in a distributed run, a check that fails on one rank fails on
        all, with that rank's message, instead of leaving the others waiting."""
        if not self.distributed:
            return check()
        try:
            result, error = check(), None
        except ValueError as e:
            result, error = None, str(e)
        for rank, message in enumerate(self.gather(error)):
            if message is not None:
                raise ValueError(message if rank == self.rank else f"rank {rank}: {message}")
        return result

    def seed(self, seed: int | None) -> torch.Generator:
        """Seed torch's generators for this rank and return the generator of the data order.

        A seed fixes the data order, the validation split and the objectives' draws. Under
        :mod:`torch.distributed` the data order is shared by all ranks and the draws are not.
        """
        if self.distributed:
            shared = self.broadcast(int(torch.randint(2**62, ())) if seed is None else seed)
            torch.manual_seed(rank_seed(shared, self.rank))
            return torch.Generator().manual_seed(shared)
        if seed is not None:
            torch.manual_seed(seed)
        return torch.Generator().manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)

    @contextlib.contextmanager
    def explained(self, step: Callable[[], int]) -> Iterator[None]:
        """Name the rank and the step in an error of a collective (another rank probably died)."""
        try:
            yield
        except RuntimeError as e:
            if not self.distributed:
                raise
            raise RuntimeError(
                f"distributed training stopped on rank {self.rank} of {self.size} at step "
                f"{step()}: {e}\nAnother rank probably died or stopped answering; see its "
                "log. (Collectives time out after Distributed(timeout=...) seconds.)"
            ) from e

    def share(self, idx: Tensor) -> Tensor:
        """This rank's part of a global minibatch: contiguous, sizes differing by at most one."""
        if not self.distributed:
            return idx
        return torch.tensor_split(idx, self.size)[self.rank]

    def gradient_syncs(self, optimizers: list[torch.optim.Optimizer]) -> list[GradientSync | None]:
        """For each optimizer, the DDP wrapper of its parameters that sums their gradients
        over the ranks during the backward pass (``None`` in a one-process world)."""
        if not self.distributed:
            return [None] * len(optimizers)
        return [
            GradientSync(self, [p for group in optimizer.param_groups for p in group["params"]])
            for optimizer in optimizers
        ]


def rank_seed(seed: int, rank: int) -> int:
    """Distinct noise on every rank (objectives draw their own), rank 0 keeping the seed itself."""
    return (seed + rank * 0x9E3779B97F4A7C15) % 2**63


def _same(a: Any, b: Any) -> bool:
    # Checksums may differ in the last bits between machines that sum in another order.
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def fingerprint(tensor: Tensor | None) -> tuple | None:
    """Shape, dtype and a checksum: what must agree between ranks that share one data set."""
    if tensor is None:
        return None
    t = tensor.detach().to(torch.float64)
    return (tuple(tensor.shape), str(tensor.dtype), float(t.sum()), float(t.abs().sum()))
