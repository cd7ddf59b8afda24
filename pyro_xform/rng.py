"""Random-number state per device: fork it, save it, restore it.

Objectives draw their noise from torch's default generator of the device the model lives on
(``torch.randn(..., device=x.device)``): the CPU generator for a CPU model, that CUDA
device's generator for a CUDA model. Everything that promises to leave the training stream
alone or to resume it bit for bit must therefore handle the generator of that device, not
only the CPU's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["draw_seed", "fixed_seed", "get_rng_states", "set_rng_states"]


def draw_seed() -> int:
    """A seed drawn from torch's global CPU generator, for work that needs one seed shared
    by several steps (one validation split for several trainings, one stream for a
    sampler) where the caller gave none: reproducible under ``torch.manual_seed``.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> a = draw_seed()
        >>> _ = torch.manual_seed(0)
        >>> a == draw_seed()
        True
    """
    return int(torch.randint(2**31 - 1, ()))


def _accelerator(device: torch.device) -> bool:
    return device.type not in ("cpu", "meta")


def _module(device: torch.device):
    # torch.cuda, torch.mps, torch.xpu...: each has get_rng_state/set_rng_state/manual_seed.
    return getattr(torch, device.type)


def _indexed(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def fixed_seed(device: torch.device | str, seed: int = 0) -> Iterator[None]:
    """Draw from ``seed`` on the CPU and on ``device`` inside the block; both generators are
    restored afterwards, so the stream outside the block is as if the block had not run.

    Unlike ``torch.manual_seed`` (which reseeds every CUDA device and forks none), only the
    generators that are forked are seeded.

    Examples:
        >>> import torch
        >>> before = torch.get_rng_state()
        >>> with fixed_seed("cpu"):
        ...     a = torch.rand(2)
        >>> with fixed_seed("cpu"):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b), torch.equal(torch.get_rng_state(), before)
        (True, True)
    """
    device = _indexed(torch.device(device))
    states = get_rng_states(device)
    torch.random.default_generator.manual_seed(seed)
    if _accelerator(device):
        _seed(device, seed)
    try:
        yield
    finally:
        set_rng_states(states, device)


def _seed(device: torch.device, seed: int) -> None:
    if device.type == "cuda":
        torch.cuda.default_generators[device.index].manual_seed(seed)
    else:
        _module(device).manual_seed(seed)


def _restore(device: torch.device, state: Tensor) -> None:
    module = _module(device)
    if device.index is not None:
        module.set_rng_state(state, device.index)
    else:
        module.set_rng_state(state)


def get_rng_states(device: torch.device | str) -> dict[str, Tensor]:
    """The state of the CPU generator and of ``device``'s, by device name (a dict of tensors
    that ``torch.load(weights_only=True)`` reads back)."""
    device = _indexed(torch.device(device))
    states = {"cpu": torch.get_rng_state()}
    if _accelerator(device):
        module = _module(device)
        states[str(device)] = (
            module.get_rng_state(device.index) if device.index is not None else module.get_rng_state()
        )
    return states


def set_rng_states(states: dict[str, Tensor] | Tensor, device: torch.device | str) -> None:
    """Restore what :func:`get_rng_states` returned (a bare tensor is a CPU state): the CPU
    generator and ``device``'s. A state saved for another device is not restored: a run
    moved to another device draws other numbers there in any case."""
    if isinstance(states, Tensor):
        states = {"cpu": states}
    torch.set_rng_state(states["cpu"].cpu())
    device = _indexed(torch.device(device))
    if _accelerator(device) and str(device) in states:
        _restore(device, states[str(device)].cpu())
