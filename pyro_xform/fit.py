"""``fit``: the one training loop for every family."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import FORMAT, atomic_save, config_of, read
from .core import Xform, is_count
from .descent import FINITE, LOSS_NOT_FINITE, GuardedStep
from .distributed import Distributed, World, fingerprint
from .objectives import Objective, get_objective
from .rng import get_rng_states, set_rng_states

__all__ = ["SCHEDULES", "FitResult", "fit"]

#: Learning-rate schedules of :func:`fit`.
SCHEDULES = ("constant", "cosine", "plateau")
#: Data-dependent initialization (standardizers, ActNorm) sees at least this many rows: a
#: minibatch of 512 leaves a regression on a 10-D context visibly noisy (0.1 nats on a
#: 10-D Gaussian posterior); every row would cost memory on large data sets.
_INIT_ROWS = 10_000
#: Steps between reads of the training losses from the device (each read waits for it).
_READ_EVERY = 50


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        model: the trained model (the best validation parameters when a validation set
            was given).
        objective: the objective's name.
        losses: training loss per step (per example).
        val_steps, val_losses: the steps at which the validation loss was measured, and its
            values (per example).
        best_step, best_val: the step with the lowest validation loss, and that loss.
        steps: steps taken in total (including those before a resume).
        stopped_early: whether early stopping ended the run.
        seconds: wall-clock time of this call.
        world_size: the number of processes that trained the model together.
    """

    model: Xform
    objective: str
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_val: float | None = None
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    world_size: int = 1

    def __repr__(self) -> str:
        last = f"{self.losses[-1]:.4f}" if self.losses else "n/a"
        best = "" if self.best_val is None else f", best_val={self.best_val:.4f} at step {self.best_step}"
        return (
            f"FitResult({type(self.model).__name__}, objective={self.objective!r}, steps={self.steps}, "
            f"loss={last}{best}, stopped_early={self.stopped_early}, seconds={self.seconds:.1f})"
        )


def _check_context(model: Xform, context: Tensor | None, n: int, name: str) -> None:
    model.check_context(context if context is None else context[:0])
    if context is None:
        return
    if context.dim() != 2 or context.shape[0] != n:
        raise ValueError(
            f"{name} has shape {tuple(context.shape)}; expected ({n}, {model.context_features}), "
            "one row per data row"
        )
    bad = ~torch.isfinite(context).all(1)
    if bad.any():
        raise ValueError(f"{name} has NaN or Inf values (first at row {int(bad.nonzero()[0, 0])})")


def _check_dtype(model: Xform, tensor: Tensor, name: str) -> None:
    param = next(model.parameters(), None)
    if param is not None and tensor.dtype != param.dtype:
        raise ValueError(
            f"{name} has dtype {tensor.dtype} but the model's parameters are {param.dtype}; "
            f"convert one of them (e.g. model.to({tensor.dtype}) or {name}.to({param.dtype}))"
        )


def _clone_state(model: Xform) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(
    model: Xform,
    data: Tensor,
    *,
    objective: str | Objective | None = None,
    context: Tensor | None = None,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    schedule: str = "constant",
    validation: float | Tensor | tuple[Tensor, Tensor] | None = None,
    patience: int = 10,
    eval_every: int | None = None,
    weight_decay: float = 0.0,
    clip_grad: float | None = None,
    ema: float | None = None,
    augment: Callable[[Tensor], Tensor] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    seed: int | None = None,
    distributed: bool | Distributed | None = None,
) -> FitResult:
    """Train any family with its default objective or a named compatible one.

    Minibatches are drawn without replacement, reshuffled every epoch; the optimizer is
    Adam. For maximum likelihood the loss is Pyro's ``Trace_ELBO`` of
    ``pyro.sample("x", model(context), obs=batch)`` with an empty guide (see
    :mod:`pyro_xform.objectives`).

    Args:
        model: the model to train, in place.
        data: training data, shape ``(N, *event_shape)``.
        objective: objective name (``"mle"``, ``"elbo"``, ``"cfm"``, ``"dsm"``, ``"reconstruction"``,
            ``"adversarial"``) or an :class:`~pyro_xform.objectives.Objective` instance with
            options; ``None`` takes the model's default.
        context: conditioning rows, shape ``(N, context)``, for a conditional model.
        steps: total number of optimizer steps (a resumed run continues up to this count).
        batch_size: minibatch size.
        lr: Adam learning rate.
        schedule: ``"constant"``, ``"cosine"`` (decays the learning rate from ``lr`` to 0
            over ``steps``, :math:`\\eta_t = \\tfrac{\\eta}{2}(1 + \\cos(\\pi t / T))`) or
            ``"plateau"`` (halves it at every validation measurement that does not improve
            on the best: the run anneals as soon as it starts to overfit, however many
            steps that takes; needs ``validation``).
        validation: a fraction of ``data`` to hold out, held-out data, or ``(data, context)``.
            With it, the validation loss is measured every ``eval_every`` steps, training
            stops after ``patience`` measurements without improvement, and the best
            parameters are kept.
        patience: early-stopping patience, in validation measurements.
        eval_every: steps between validation measurements (default ``steps // 20``, at most 100).
        weight_decay: Adam weight decay.
        clip_grad: clip the gradient norm to this value.
        ema: keep an exponential moving average of the parameters with this decay (e.g.
            0.999; warmed up as :math:`\\min(d, (1 + t) / (10 + t))` at step :math:`t`).
            Validation, the best parameters and the returned model then use the average,
            which is far less noisy than the last iterate of a regression objective
            (``"cfm"``, ``"dsm"``). Checkpoints keep it and resume it.
        augment: a function applied to every training minibatch (not to validation data),
            e.g. :class:`pyro_xform.datasets.Dequantize` for fresh dequantization noise. Its
            output must keep the batch's shape and dtype and be finite.
        checkpoint: path of a checkpoint file; written atomically every ``checkpoint_every``
            steps and at the end. If it exists, training resumes from it and continues the
            same run bit for bit.
        checkpoint_every: steps between checkpoints (default ``eval_every``).
        progress: show a progress bar with the loss (only on a terminal).
        seed: seed of the data order and of the objective's randomness.
        distributed: train on several processes with DistributedDataParallel (see
            :mod:`pyro_xform.distributed`). ``None`` (default) does so when launched by
            ``torchrun`` (``RANK``/``WORLD_SIZE`` set) or inside an initialized process
            group; ``True`` requires it; ``False`` trains this process alone;
            a :class:`~pyro_xform.Distributed` sets the backend and the timeout.
            Every rank passes the same data; ``batch_size`` is per rank.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: bad data or context (NaN/Inf, shape, dtype, empty), before any
            parameter changes.
        FloatingPointError: the loss or its gradient became NaN/Inf; the parameters are
            left at the last good step.
        RuntimeError: (distributed) another rank died or stopped answering.

    Examples:
        >>> import torch, pyro_xform
        >>> data = pyro_xform.datasets.toy("moons", n=512)
        >>> result = pyro_xform.fit(pyro_xform.MAF(features=2), data, steps=20, progress=False, seed=0)
        >>> len(result.losses), result.losses[-1] < result.losses[0]
        (20, True)
    """
    started = time.perf_counter()
    if not isinstance(model, Xform):
        raise ValueError(f"model must be a pyro_xform.Xform, got {type(model).__name__}")
    world = World.start(distributed, model.device)
    return _fit(
        world,
        started,
        model,
        data,
        objective=objective,
        context=context,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        validation=validation,
        patience=patience,
        eval_every=eval_every,
        weight_decay=weight_decay,
        clip_grad=clip_grad,
        ema=ema,
        augment=augment,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        seed=seed,
    )


def _checked_arguments(
    model, data, context, objective, steps, batch_size, patience, lr, augment, schedule, ema, validation
):
    obj = get_objective(objective, model)
    if ema is not None and not (isinstance(ema, float) and 0 < ema < 1):
        raise ValueError(f"ema must be a decay in (0, 1), e.g. 0.999, got {ema!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("patience", patience)):
        if not is_count(value):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a function of a batch, got {type(augment).__name__}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "plateau" and validation is None:
        raise ValueError("schedule='plateau' anneals on validation measurements; give validation")
    model.check_data(data)
    _check_dtype(model, data, "data")
    _check_context(model, context, data.shape[0], "context")
    if context is not None:
        _check_dtype(model, context, "context")
    return obj


def _on_every_rank(world: World, check):
    """Run a local check; in a distributed run, a check that fails on one rank fails on all,
    with that rank's message, instead of leaving the others waiting."""
    if not world.distributed:
        return check()
    try:
        result, error = check(), None
    except ValueError as e:
        result, error = None, str(e)
    errors = world.gather(error)
    for rank, message in enumerate(errors):
        if message is not None:
            raise ValueError(message if rank == world.rank else f"rank {rank}: {message}")
    return result


def _rank_seed(seed: int, rank: int) -> int:
    # Distinct noise on every rank (objectives draw their own), rank 0 keeping the seed itself.
    return (seed + rank * 0x9E3779B97F4A7C15) % 2**63


def _fit(
    world: World,
    started: float,
    model: Xform,
    data: Tensor,
    *,
    objective,
    context,
    steps,
    batch_size,
    lr,
    schedule,
    validation,
    patience,
    eval_every,
    weight_decay,
    clip_grad,
    ema,
    augment,
    checkpoint,
    checkpoint_every,
    progress,
    seed,
) -> FitResult:
    device = model.device
    obj = _on_every_rank(
        world,
        lambda: _checked_arguments(
            model,
            data,
            context,
            objective,
            steps,
            batch_size,
            patience,
            lr,
            augment,
            schedule,
            ema,
            validation,
        ),
    )
    if world.distributed:  # a checksum reads all the data: only where there is something to compare
        world.agree(
            {
                "the data (shape, dtype, checksum)": fingerprint(data),
                "the context (shape, dtype, checksum)": fingerprint(context),
                "the model": type(model).__name__,
                "the objective": obj.name,
                "steps": steps,
                "batch_size": batch_size,
                "the checkpoint path": None if checkpoint is None else os.fspath(checkpoint),
                "seed": seed,
            }
        )

    # Seeds: a seed fixes the data order, the validation split and the objective's draws.
    # Under torch.distributed the data order is shared by all ranks and the draws are not.
    if world.distributed:
        shared = world.broadcast(int(torch.randint(2**62, ())) if seed is None else seed)
        torch.manual_seed(_rank_seed(shared, world.rank))
        generator = torch.Generator().manual_seed(shared)
    else:
        if seed is not None:
            torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)

    val_data = val_context = None
    if validation is not None:
        if isinstance(validation, float):
            if not 0 < validation < 1:
                raise ValueError(f"a validation fraction must lie in (0, 1), got {validation}")
            n_val = max(1, round(validation * data.shape[0]))
            if n_val >= data.shape[0]:
                raise ValueError("the validation fraction leaves no training data")
            order = torch.randperm(data.shape[0], generator=generator)
            val_idx, train_idx = order[:n_val], order[n_val:]
            val_data, data = data[val_idx], data[train_idx]
            if context is not None:
                val_context, context = context[val_idx], context[train_idx]
        else:
            val_data, val_context = validation if isinstance(validation, tuple) else (validation, None)

            def check_validation():
                model.check_data(val_data, name="validation data")
                _check_dtype(model, val_data, "validation data")
                _check_context(model, val_context, val_data.shape[0], "validation context")

            _on_every_rank(world, check_validation)
            if world.distributed:
                world.agree({"the validation data (shape, dtype, checksum)": fingerprint(val_data)})
    eval_every = eval_every or max(1, min(100, steps // 20))
    checkpoint_every = checkpoint_every or eval_every

    optimizers = [_adam(group, lr, weight_decay, obj.adam) for group in obj.parameter_groups(model)]
    n = data.shape[0]
    if n < world.size:
        raise ValueError(f"{n} training rows cannot be shared by {world.size} processes")
    global_batch = batch_size * world.size
    state = {
        "step": 0,
        "perm": torch.randperm(n, generator=generator),
        "pos": 0,
        "losses": [],
        "val_steps": [],
        "val_losses": [],
        "best": None,
        "best_val": math.inf,
        "best_step": None,
        "bad": 0,
        "stopped": False,
        "ema": None,
        "lr_scale": 1.0,
    }
    config = config_of(model) if checkpoint is not None else None
    if checkpoint is not None:
        # Rank 0 reads the file and shares it: the other ranks may not see its disk.
        saved = world.broadcast(read(checkpoint) if world.rank == 0 and os.path.exists(checkpoint) else None)
        if saved is not None:
            state = _resume(checkpoint, saved, config, model, optimizers, generator, n, world, device)
            if (state.get("ema") is None) != (ema is None):
                had = "without" if state.get("ema") is None else "with"
                raise ValueError(f"checkpoint {checkpoint} was written {had} an ema; resume it the same way")

    def save_checkpoint() -> None:
        rngs = world.gather(get_rng_states(device))
        if world.rank != 0:
            return
        current = _clone_state(model)
        resume = dict(
            state,
            params=current,
            optim=[optimizer.state_dict() for optimizer in optimizers],
            rng=rngs[0],
            gen=generator.get_state(),
        )
        if world.distributed:
            resume["rngs"] = rngs
        if state["best"] is not None:
            best = state["best"]
        elif averaged is not None:
            with averaged:
                best = _clone_state(model)
        else:
            best = current
        atomic_save({"format": FORMAT, "config": config, "state_dict": best, "resume": resume}, checkpoint)

    log = _LossLog(state["losses"], obj.loss_names(), world)
    batches = _Batches(state, data, context, generator, world, batch_size, device)

    def reduce_losses() -> None:
        """Read the losses off the device; replace this rank's by those of the global minibatches."""
        log.read()
        if log.pending:
            sums = world.all_sum([v for v, _ in log.pending] + [c for _, c in log.pending])
            k = len(log.pending)
            state["losses"][-k:] = [total / count for total, count in zip(sums[:k], sums[k:], strict=True)]
            log.pending.clear()

    if state["step"] == 0:
        # The first rows of the shuffle, the same on every rank (a data-dependent initialization).
        model.initialize(*batches.take(state["perm"][: max(global_batch, _INIT_ROWS)]))
    world.broadcast_module(model)
    if ema is not None and state.get("ema") is None:  # after the data-dependent initialization
        state["ema"] = [p.detach().clone() for p in model.parameters()]
    averaged = _Averaged(model, state["ema"]) if ema is not None else None
    if averaged is not None:
        state["ema"] = averaged.average  # on the parameters' devices
    guarded = [
        GuardedStep(optimizer, clip_grad, sync)
        for optimizer, sync in zip(optimizers, world.gradient_syncs(optimizers), strict=True)
    ]
    was_training = model.training
    model.train()
    bar = tqdm(
        total=steps,
        initial=state["step"],
        disable=not (progress and world.rank == 0 and sys.stderr.isatty()),
        desc=f"fit {type(model).__name__} ({obj.name})",
        dynamic_ncols=True,
    )
    # The data were validated once above; Pyro's per-step re-validation would only cost time.
    with pyro.validation_enabled(False):
        try:
            while state["step"] < steps and not state["stopped"]:
                batch, batch_context = batches.next()
                if augment is not None:
                    batch = _augmented(model, augment, batch)

                if schedule != "constant":  # a function of the step and the state: resumes exactly
                    scale = state.get("lr_scale", 1.0)
                    if schedule == "cosine":
                        scale = 0.5 * (1 + math.cos(math.pi * state["step"] / steps))
                    for group in (g for optimizer in optimizers for g in optimizer.param_groups):
                        group["lr"] = lr * scale
                state["step"] += 1
                statuses, value = [], None
                for group, loss in obj.losses(model, batch, batch_context, state["step"]):
                    statuses.append((group, guarded[group](loss)))
                    value = loss.detach() if group == 0 else value
                log.add(state["step"], value, statuses, batch.shape[0])
                if averaged is not None:
                    averaged.update(min(ema, (1 + state["step"]) / (10 + state["step"])))
                bar.update(1)

                last = state["step"] == steps
                validating = val_data is not None and (state["step"] % eval_every == 0 or last)
                if validating or state["step"] % _READ_EVERY == 0 or last:
                    log.read()  # raises FloatingPointError on a skipped non-finite step
                    bar.set_postfix(loss=f"{state['losses'][-1]:.4f}", refresh=False)
                if validating:
                    with averaged or contextlib.nullcontext():
                        val = _validate(obj, model, batches, val_data, val_context, batch_size)
                        best = _clone_state(model) if val < state["best_val"] else None
                    state["val_steps"].append(state["step"])
                    state["val_losses"].append(val)
                    if best is not None:
                        state.update(best=best, best_val=val, best_step=state["step"], bad=0)
                    else:
                        state["bad"] += 1
                        state["stopped"] = state["bad"] >= patience
                        if schedule == "plateau":
                            state["lr_scale"] = state.get("lr_scale", 1.0) * 0.5
                if checkpoint is not None and (
                    state["step"] % checkpoint_every == 0 or last or state["stopped"]
                ):
                    reduce_losses()
                    save_checkpoint()
            reduce_losses()
            world.barrier()  # the last checkpoint is on disk when fit returns on any rank
        except RuntimeError as e:
            if not world.distributed:
                raise
            raise RuntimeError(
                f"distributed training stopped on rank {world.rank} of {world.size} at step "
                f"{state['step'] + 1}: {e}\nAnother rank probably died or stopped answering; see its "
                "log. (Collectives time out after Distributed(timeout=...) seconds.)"
            ) from e
        finally:
            bar.close()
            model.train(was_training)

    if state["best"] is not None:
        model.load_state_dict(state["best"])
    elif averaged is not None:
        averaged.swap()
    return FitResult(
        model=model,
        objective=obj.name,
        losses=list(state["losses"]),
        val_steps=list(state["val_steps"]),
        val_losses=list(state["val_losses"]),
        best_step=state["best_step"],
        best_val=None if state["best_step"] is None else state["best_val"],
        steps=state["step"],
        stopped_early=state["stopped"],
        seconds=time.perf_counter() - started,
        world_size=world.size,
    )


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()  # so the copy below overlaps with the device's work
    return tensor.to(device, non_blocking=True)


class _Batches:
    """Minibatches without replacement, reshuffled every epoch (``state["perm"]``,
    ``state["pos"]``: the position in the shuffle, kept in the checkpoint), moved to the
    model's device. The data may live anywhere: a data set rarely fits on a GPU."""

    def __init__(self, state, data, context, generator, world: World, batch_size: int, device) -> None:
        self.state, self.data, self.context, self.generator = state, data, context, generator
        self.world, self.device = world, device
        self.global_batch = batch_size * world.size
        self._perm: tuple[Tensor, Tensor] | None = None  # the shuffle, and its copy on the data's device

    def take(self, idx: Tensor, data: Tensor | None = None, context: Tensor | None = None):
        """Rows ``idx`` of the data (or of ``data``/``context``) and their context, on the device."""
        if data is None:
            data, context = self.data, self.context
        rows = [None if t is None else _to_device(t[idx.to(t.device)], self.device) for t in (data, context)]
        return rows[0], rows[1]

    def next(self) -> tuple[Tensor, Tensor | None]:
        state, n = self.state, self.data.shape[0]
        if state["pos"] + self.world.size > n:  # a tail with less than one row per rank ends the epoch
            state["perm"], state["pos"] = torch.randperm(n, generator=self.generator), 0
        if self._perm is None or self._perm[0] is not state["perm"]:
            # Indexing data on a GPU with CPU indices would copy the indices every step.
            self._perm = (state["perm"], state["perm"].to(self.data.device))
        idx = self.world.share(self._perm[1][state["pos"] : state["pos"] + self.global_batch])
        state["pos"] += self.global_batch
        return self.take(idx)


class _LossLog:
    """The training losses, kept on the device until :meth:`read` (reading each step's would
    make the host wait for the device at every step), with the statuses of the guarded steps
    (:class:`~pyro_xform.descent.GuardedStep`), checked when they are read."""

    def __init__(self, losses: list[float], names: list[str], world: World) -> None:
        self.losses, self.names, self.world = losses, names, world
        self._steps: list[tuple[int, Tensor, list[tuple[int, Tensor]], int]] = []
        #: (loss x rows, rows) of every read step, for the distributed mean over the ranks.
        self.pending: list[tuple[float, int]] = []

    def add(self, step: int, loss: Tensor, statuses: list[tuple[int, Tensor]], rows: int) -> None:
        """Step ``step``'s loss (summed over its ``rows`` examples) and its guarded steps' statuses."""
        self._steps.append((step, loss, statuses, rows))

    def read(self) -> None:
        """Append the unread losses to ``losses``.

        Raises:
            FloatingPointError: a step's loss or gradient was NaN/Inf (that step was skipped).
        """
        if not self._steps:
            return
        steps, self._steps = self._steps, []
        codes = torch.stack([torch.stack([code for _, code in s[2]]) for s in steps]).tolist()
        for (step, _, statuses, _), row in zip(steps, codes, strict=True):
            for (group, _), code in zip(statuses, row, strict=True):
                if code != FINITE:
                    self._fail(step, self.names[group], code)
        sums = torch.stack([s[1] for s in steps]).tolist()
        self.losses.extend(total / s[3] for total, s in zip(sums, steps, strict=True))
        if self.world.distributed:
            self.pending.extend((total, s[3]) for total, s in zip(sums, steps, strict=True))

    def _fail(self, step: int, name: str, code: int) -> None:
        if code == LOSS_NOT_FINITE:
            cause = f"the {name} became NaN/Inf" + (" on this rank" if self.world.distributed else "")
        else:
            cause = f"the gradient of the {name} became NaN/Inf" + (
                " (on this or another rank)" if self.world.distributed else ""
            )
        raise FloatingPointError(
            f"{cause} at step {step}; that step was skipped and the parameters are finite, those "
            "of the last good step (try a smaller lr, clip_grad, or check the data)"
        )


class _Averaged:
    """An exponential moving average of a model's parameters, held in ``average`` (a list
    in the order of ``model.parameters()``); ``with`` it, the model holds the average."""

    def __init__(self, model: Xform, average: list[Tensor]) -> None:
        self.params = list(model.parameters())
        if len(average) != len(self.params):
            raise ValueError("the saved parameter average does not match the model")
        # A resumed average was read onto the CPU.
        self.average = [a.to(p.device) for a, p in zip(average, self.params, strict=True)]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        for p, a in zip(self.params, self.average, strict=True):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)

    def __enter__(self) -> _Averaged:
        self.swap()
        return self

    def __exit__(self, *exc) -> None:
        self.swap()


def _augmented(model: Xform, augment: Callable[[Tensor], Tensor], batch: Tensor) -> Tensor:
    out = augment(batch)
    if not isinstance(out, Tensor) or out.shape != batch.shape or out.dtype != batch.dtype:
        raise ValueError("augment must return a tensor of the batch's shape and dtype")
    model.check_data(out, name="an augmented batch")  # finite, and in the model's support
    return out


def _adam(params: list[Tensor], lr: float, weight_decay: float, options: dict) -> torch.optim.Adam:
    # The fused kernel updates every tensor in one call: the per-tensor loop of the default
    # implementation costs as much as a small flow's forward pass.
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, **options)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **options)


@torch.no_grad()
def _validate(
    obj, model: Xform, batches: _Batches, data: Tensor, context: Tensor | None, batch_size: int
) -> float:
    # Each rank measures its share; the figure is the all-reduced mean over all of the data.
    world = batches.world
    mine = world.share(torch.arange(data.shape[0]))
    total, chunk = 0.0, max(batch_size, 1024)
    for i in range(0, mine.shape[0], chunk):
        batch, ctx = batches.take(mine[i : i + chunk], data, context)
        total += float(obj.validation_loss(model, batch, ctx)) * batch.shape[0]
    total, count = world.all_sum([total, mine.shape[0]])
    value = total / count
    return value if math.isfinite(value) else math.inf


def _resume(path, saved, config, model, optimizers, generator, n, world: World, device) -> dict:
    if saved["config"] != config:
        raise ValueError(f"checkpoint {path} was written for another model: {saved['config']}")
    resume = saved.get("resume")
    if resume is None:
        raise ValueError(f"{path} holds a model but no training state to resume")
    if resume["perm"].shape[0] != n:
        raise ValueError(
            f"checkpoint {path} was written for {resume['perm'].shape[0]} training rows, not {n}"
        )
    model.load_state_dict(resume.pop("params"))
    states = resume.pop("optim")
    states = [states] if isinstance(states, dict) else states  # files written before several optimizers
    if len(states) != len(optimizers):
        raise ValueError(
            f"checkpoint {path} holds {len(states)} optimizer states, this objective has {len(optimizers)}"
        )
    for optimizer, saved_state in zip(optimizers, states, strict=True):
        optimizer.load_state_dict(saved_state)
    rng, rngs = resume.pop("rng"), resume.pop("rngs", None)
    if not world.distributed:
        set_rng_states(rng, device)
    elif rngs is not None and len(rngs) == world.size:
        set_rng_states(rngs[world.rank], device)  # the same world: the same run, bit for bit
    else:  # another world size: fresh, distinct streams
        torch.manual_seed(_rank_seed(int(torch.randint(2**62, (), generator=generator)), world.rank))
    generator.set_state(resume.pop("gen"))
    return resume
