"""``fit``: the one training loop for every family."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import FORMAT, atomic_save, config_of, read
from .core import Xform, is_count
from .descent import GuardedStep
from .distributed import Distributed, World, fingerprint, rank_seed
from .objectives import Objective, get_objective
from .rng import get_rng_states, set_rng_states

__all__ = ["LR_SCHEDULES", "FitResult", "TrainState", "fit"]

#: Learning-rate schedules of :func:`fit`.
LR_SCHEDULES = ("constant", "cosine", "plateau")
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
    min_delta: float = 0.0,
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
        min_delta: a measurement counts as an improvement (for ``patience`` and the
            ``"plateau"`` schedule) only when it is lower than the last one that counted by
            more than this (per example, in the loss's units, e.g. nats): a run whose
            validation loss creeps down by less stops, instead of spending its steps on
            gains too small to matter. The best parameters are kept whatever it is.
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
        FloatingPointError: the loss or its gradient became NaN/Inf. A non-finite gradient
            is never applied (the step is skipped on the device, without waiting for it),
            and the error, naming the first such step, is raised when the losses are next
            read: at the next validation or checkpoint, every 50 steps, or at the end. The
            parameters are finite.
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
    obj = world.on_every_rank(
        lambda: _checked_arguments(
            model,
            data,
            context,
            objective,
            steps,
            batch_size,
            patience,
            min_delta,
            lr,
            augment,
            schedule,
            ema,
            validation,
        )
    )
    world.agree(
        lambda: {
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
    generator = world.seed(seed)
    data, context, val_data, val_context = _split(model, data, context, validation, generator, world)
    if data.shape[0] < world.size:
        raise ValueError(f"{data.shape[0]} training rows cannot be shared by {world.size} processes")
    eval_every = eval_every or max(1, min(100, steps // 20))
    run = _Run(
        model=model,
        objective=obj,
        world=world,
        steps=steps,
        lr=lr,
        schedule=schedule,
        augment=augment,
        optimizers=[_adam(group, lr, weight_decay, obj.adam) for group in obj.parameter_groups(model)],
        generator=generator,
        validator=None
        if val_data is None
        else _Validator(
            obj, val_data, val_context, eval_every, patience, min_delta, schedule == "plateau", batch_size
        ),
        checkpointer=None
        if checkpoint is None
        else _Checkpointer(checkpoint, checkpoint_every or eval_every, model, world),
    )
    run.start(data, context, batch_size, ema, clip_grad)
    run.train(progress)
    return run.result(started)


def _checked_arguments(
    model,
    data,
    context,
    objective,
    steps,
    batch_size,
    patience,
    min_delta,
    lr,
    augment,
    schedule,
    ema,
    validation,
):
    obj = get_objective(objective, model)
    if ema is not None and not (isinstance(ema, float) and 0 < ema < 1):
        raise ValueError(f"ema must be a decay in (0, 1), e.g. 0.999, got {ema!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("patience", patience)):
        if not is_count(value):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a function of a batch, got {type(augment).__name__}")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "plateau" and validation is None:
        raise ValueError("schedule='plateau' anneals on validation measurements; give validation")
    model.check_data(data)
    _check_dtype(model, data, "data")
    _check_context(model, context, data.shape[0], "context")
    if context is not None:
        _check_dtype(model, context, "context")
    return obj


def _split(model, data, context, validation, generator, world: World):
    """``(data, context, validation data, validation context)``: a validation fraction is
    held out of ``data`` by the seeded ``generator``; given validation data is checked."""
    if validation is None:
        return data, context, None, None
    if isinstance(validation, float):
        if not 0 < validation < 1:
            raise ValueError(f"a validation fraction must lie in (0, 1), got {validation}")
        n_val = max(1, round(validation * data.shape[0]))
        if n_val >= data.shape[0]:
            raise ValueError("the validation fraction leaves no training data")
        order = torch.randperm(data.shape[0], generator=generator)
        val, train = order[:n_val], order[n_val:]
        if context is None:
            return data[train], None, data[val], None
        return data[train], context[train], data[val], context[val]
    val_data, val_context = validation if isinstance(validation, tuple) else (validation, None)

    def check() -> None:
        model.check_data(val_data, name="validation data")
        _check_dtype(model, val_data, "validation data")
        _check_context(model, val_context, val_data.shape[0], "validation context")

    world.on_every_rank(check)
    world.agree(lambda: {"the validation data (shape, dtype, checksum)": fingerprint(val_data)})
    return data, context, val_data, val_context


@dataclass
class TrainState:
    """Where a run stands: everything a checkpoint keeps besides the model's and the
    optimizers' states (its :meth:`state_dict` keys are those of the checkpoint file)."""

    perm: Tensor  # the shuffle of this epoch
    step: int = 0
    pos: int = 0  # the position in the shuffle
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best: dict[str, Tensor] | None = None  # the parameters of the best validation
    best_val: float = math.inf
    best_step: int | None = None
    bad: int = 0  # validations since the last improvement by more than min_delta
    ref_val: float = math.inf  # the validation loss of that improvement
    stopped: bool = False
    ema: list[Tensor] | None = None
    lr_scale: float = 1.0  # the plateau schedule's

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, saved: dict) -> TrainState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclass
class _Run:
    """One call of :func:`fit`, from its checked arguments: :meth:`start`, :meth:`train`,
    :meth:`result`."""

    model: Xform
    objective: Objective
    world: World
    steps: int
    lr: float
    schedule: str
    augment: Callable[[Tensor], Tensor] | None
    optimizers: list[torch.optim.Optimizer]
    generator: torch.Generator
    validator: _Validator | None
    checkpointer: _Checkpointer | None

    def start(self, data, context, batch_size: int, ema: float | None, clip_grad: float | None) -> None:
        """The state of a fresh run, or of the checkpoint's; the model initialized from data."""
        model, world, n = self.model, self.world, data.shape[0]
        resumed = None
        if self.checkpointer is not None:
            resumed = self.checkpointer.resume(model, self.optimizers, self.generator, n, ema)
        self.state = resumed or TrainState(perm=torch.randperm(n, generator=self.generator))
        self.batches = _Batches(self.state, data, context, self.generator, world, batch_size, model.device)
        if resumed is None:
            # The first rows of the shuffle, the same on every rank (a data-dependent initialization).
            model.initialize(
                *self.batches.take(self.state.perm[: max(self.batches.global_batch, _INIT_ROWS)])
            )
        world.broadcast_module(model)
        self.averaged, self.ema = None, ema
        if ema is not None:  # after the data-dependent initialization
            if self.state.ema is None:
                self.state.ema = [p.detach().clone() for p in model.parameters()]
            self.averaged = _Averaged(model, self.state.ema)
            self.state.ema = self.averaged.average  # on the parameters' devices
        syncs = world.gradient_syncs(self.optimizers)
        self.guarded = [GuardedStep(o, clip_grad, s) for o, s in zip(self.optimizers, syncs, strict=True)]
        self.log = _LossLog(self.state.losses, self.objective.loss_names(), world.distributed)

    def train(self, progress: bool) -> None:
        """The loop: a step, and validation, a read of the losses and a checkpoint when due."""
        state, model = self.state, self.model
        was_training = model.training
        model.train()
        bar = tqdm(
            total=self.steps,
            initial=state.step,
            disable=not (progress and self.world.rank == 0 and sys.stderr.isatty()),
            desc=f"fit {type(model).__name__} ({self.objective.name})",
            dynamic_ncols=True,
        )
        # The data were validated once; Pyro's per-step re-validation would only cost time.
        with pyro.validation_enabled(False), self.world.explained(lambda: state.step + 1):
            try:
                while state.step < self.steps and not state.stopped:
                    self.step()
                    bar.update(1)
                    last = state.step == self.steps
                    validating = self.validator is not None and self.validator.due(state.step, last)
                    if validating or state.step % _READ_EVERY == 0 or last:
                        self.read_losses()  # raises FloatingPointError on a skipped non-finite step
                        bar.set_postfix(loss=f"{state.losses[-1]:.4f}", refresh=False)
                    if validating:
                        self.validator(state, model, self.batches, self.averaged)
                    if self.checkpointer is not None and self.checkpointer.due(state, last):
                        self.read_losses()
                        self.checkpointer.save(state, model, self.optimizers, self.generator, self.averaged)
                self.read_losses()
                self.world.barrier()  # the last checkpoint is on disk when fit returns on any rank
            finally:
                bar.close()
                model.train(was_training)

    def step(self) -> None:
        """One training iteration: a minibatch, the objective's losses, a guarded step on each."""
        state = self.state
        batch, context = self.batches.next()
        if self.augment is not None:
            batch = _augmented(self.model, self.augment, batch)
        scale = _lr_scale(self.schedule, state, self.steps)
        for group in (g for optimizer in self.optimizers for g in optimizer.param_groups):
            group["lr"] = self.lr * scale
        state.step += 1
        guarded = [
            (group, loss.detach(), self.guarded[group](loss))
            for group, loss in self.objective.losses(self.model, batch, context, state.step)
        ]
        self.log.add(state.step, guarded, batch.shape[0])
        if self.averaged is not None:
            self.averaged.update(min(self.ema, (1 + state.step) / (10 + state.step)))

    def read_losses(self) -> None:
        """Read the losses off the device; each rank's become those of the global minibatches."""
        totals, rows = self.log.read()
        if totals:
            sums = self.world.all_sum(totals + rows)
            k = len(totals)
            self.state.losses[-k:] = [t / c for t, c in zip(sums[:k], sums[k:], strict=True)]

    def result(self, started: float) -> FitResult:
        state, model = self.state, self.model
        if state.best is not None:
            model.load_state_dict(state.best)
        elif self.averaged is not None:
            self.averaged.swap()
        return FitResult(
            model=model,
            objective=self.objective.name,
            losses=list(state.losses),
            val_steps=list(state.val_steps),
            val_losses=list(state.val_losses),
            best_step=state.best_step,
            best_val=None if state.best_step is None else state.best_val,
            steps=state.step,
            stopped_early=state.stopped,
            seconds=time.perf_counter() - started,
            world_size=self.world.size,
        )


def _lr_scale(schedule: str, state: TrainState, steps: int) -> float:
    """The learning rate's factor at this step: a function of the step and the state, so a
    resumed run continues exactly."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * state.step / steps))
    return state.lr_scale if schedule == "plateau" else 1.0


class _Validator:
    """Measures the validation loss every ``every`` steps and keeps the best parameters;
    ``patience`` measurements without an improvement by more than ``min_delta`` stop the
    run; ``plateau`` halves the learning rate at each of them."""

    def __init__(
        self,
        objective,
        data,
        context,
        every: int,
        patience: int,
        min_delta: float,
        plateau: bool,
        batch_size: int,
    ):
        self.objective, self.data, self.context = objective, data, context
        self.every, self.patience, self.min_delta = every, patience, min_delta
        self.plateau, self.batch_size = plateau, batch_size

    def due(self, step: int, last: bool) -> bool:
        return step % self.every == 0 or last

    def __call__(
        self, state: TrainState, model: Xform, batches: _Batches, averaged: _Averaged | None
    ) -> None:
        with averaged or contextlib.nullcontext():
            val = _validate(self.objective, model, batches, self.data, self.context, self.batch_size)
            best = _clone_state(model) if val < state.best_val else None
        state.val_steps.append(state.step)
        state.val_losses.append(val)
        if best is not None:
            state.best, state.best_val, state.best_step = best, val, state.step
        if val < state.ref_val - self.min_delta:
            state.ref_val, state.bad = val, 0
            return
        state.bad += 1
        state.stopped = state.bad >= self.patience
        if self.plateau:
            state.lr_scale *= 0.5


class _Checkpointer:
    """Writes the run to ``path`` every ``every`` steps (atomically; rank 0) and resumes it."""

    def __init__(self, path, every: int, model: Xform, world: World) -> None:
        self.path, self.every, self.world = path, every, world
        self.config = config_of(model)

    def due(self, state: TrainState, last: bool) -> bool:
        return state.step % self.every == 0 or last or state.stopped

    def resume(self, model, optimizers, generator, n: int, ema: float | None) -> TrainState | None:
        # Rank 0 reads the file and shares it: the other ranks may not see its disk.
        exists = self.world.rank == 0 and os.path.exists(self.path)
        saved = self.world.broadcast(read(self.path) if exists else None)
        if saved is None:
            return None
        state = _resume(self.path, saved, self.config, model, optimizers, generator, n, self.world)
        if (state.ema is None) != (ema is None):
            had = "without" if state.ema is None else "with"
            raise ValueError(f"checkpoint {self.path} was written {had} an ema; resume it the same way")
        return state

    def save(self, state: TrainState, model, optimizers, generator, averaged: _Averaged | None) -> None:
        rngs = self.world.gather(get_rng_states(model.device))
        if self.world.rank != 0:
            return
        current = _clone_state(model)
        resume = dict(
            state.state_dict(),
            params=current,
            optim=[optimizer.state_dict() for optimizer in optimizers],
            rng=rngs[0],
            gen=generator.get_state(),
        )
        if self.world.distributed:
            resume["rngs"] = rngs
        if state.best is not None:
            best = state.best
        elif averaged is not None:
            with averaged:
                best = _clone_state(model)
        else:
            best = current
        atomic_save(
            {"format": FORMAT, "config": self.config, "state_dict": best, "resume": resume}, self.path
        )


def _resume(path, saved, config, model, optimizers, generator, n, world: World) -> TrainState:
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
        set_rng_states(rng, model.device)
    elif rngs is not None and len(rngs) == world.size:
        set_rng_states(rngs[world.rank], model.device)  # the same world: the same run, bit for bit
    else:  # another world size: fresh, distinct streams
        torch.manual_seed(rank_seed(int(torch.randint(2**62, (), generator=generator)), world.rank))
    generator.set_state(resume.pop("gen"))
    return TrainState.from_state_dict(resume)


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()  # so the copy below overlaps with the device's work
    return tensor.to(device, non_blocking=True)


class _Batches:
    """Minibatches without replacement, reshuffled every epoch (the shuffle and the position
    in it are the state's, so a checkpoint keeps them), moved to the model's device. The data
    may live anywhere: a data set rarely fits on a GPU."""

    def __init__(
        self, state: TrainState, data, context, generator, world: World, batch_size: int, device
    ) -> None:
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
        if state.pos + self.world.size > n:  # a tail with less than one row per rank ends the epoch
            state.perm, state.pos = torch.randperm(n, generator=self.generator), 0
        if self._perm is None or self._perm[0] is not state.perm:
            # Indexing data on a GPU with CPU indices would copy the indices every step.
            self._perm = (state.perm, state.perm.to(self.data.device))
        idx = self.world.share(self._perm[1][state.pos : state.pos + self.global_batch])
        state.pos += self.global_batch
        return self.take(idx)


class _LossLog:
    """The training losses, kept on the device until :meth:`read` (reading each step's would
    make the host wait for the device at every step), with the statuses of the guarded steps
    (:class:`~pyro_xform.descent.GuardedStep`), checked when they are read."""

    def __init__(self, losses: list[float], names: list[str], distributed: bool = False) -> None:
        self.losses, self.names, self.distributed = losses, names, distributed
        self._steps: list[tuple[int, list[tuple[int, Tensor, Tensor]], int]] = []

    def add(self, step: int, guarded: list[tuple[int, Tensor, Tensor]], rows: int) -> None:
        """Step ``step``'s ``(group, loss, skipped)`` of each guarded step, the losses summed
        over the ``rows`` examples; the step's reported loss is the last of group 0."""
        self._steps.append((step, guarded, rows))

    def read(self) -> tuple[list[float], list[int]]:
        """Append the unread losses (per example) to ``losses``; returns their sums and row
        counts.

        Raises:
            FloatingPointError: a step's loss or gradient was NaN/Inf (a non-finite gradient
                was never applied).
        """
        if not self._steps:
            return [], []
        steps, self._steps = self._steps, []
        # One read of the device for all of them: the losses and the skipped flags.
        flat = torch.stack(
            [t.to(loss.dtype) for _, g, _ in steps for _, loss, skip in g for t in (loss, skip)]
        )
        values = iter(flat.tolist())
        sums = []
        for step, guarded, _ in steps:
            reported = None
            for group, _, _ in guarded:
                loss, skipped = next(values), next(values)
                if not math.isfinite(loss) or skipped:
                    self._fail(step, self.names[group], loss_finite=math.isfinite(loss))
                reported = loss if group == 0 else reported
            sums.append(reported)
        rows = [s[2] for s in steps]
        self.losses.extend(total / count for total, count in zip(sums, rows, strict=True))
        return sums, rows

    def _fail(self, step: int, name: str, loss_finite: bool) -> None:
        if not loss_finite:
            cause = f"the {name} became NaN/Inf" + (" on this rank" if self.distributed else "")
        else:
            cause = f"the gradient of the {name} became NaN/Inf" + (
                " (on this or another rank)" if self.distributed else ""
            )
        raise FloatingPointError(
            f"{cause} at step {step}; no non-finite gradient was applied and the parameters are "
            "finite (try a smaller lr, clip_grad, or check the data)"
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
