"""Saving and loading models: a ``state_dict`` plus a JSON config in one file, written
atomically (temporary file + rename) and read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .core import Xform, spec_of
from .families import FAMILIES, Embedded

__all__ = ["atomic_save", "build", "load", "read", "save"]

FORMAT = "pyro_xform/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``,
    so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def config_of(model: Xform) -> str:
    """The JSON config that rebuilds ``model``'s architecture."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} records no config; build it from a pyro_xform family")
    try:
        return json.dumps(spec_of(model), sort_keys=True)
    except TypeError as e:
        raise ValueError(f"the constructor arguments of {type(model).__name__} are not JSON: {e}") from None


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"family", "kwargs"}


def build(config: str | dict) -> Xform:
    """Build an untrained model from a config written by :func:`save`; a nested model (a
    VAE's prior, an autoencoder's density) is built from its own recorded config first."""
    if isinstance(config, str):
        config = json.loads(config)
    family = config["family"]
    if family not in _CLASSES:
        raise ValueError(f"unknown family {family!r}; known: {sorted(_CLASSES)}")
    kwargs = {k: build(v) if _is_spec(v) else v for k, v in config["kwargs"].items()}
    for name, value in _BEFORE.get(family, {}).items():
        kwargs.setdefault(name, value)
    if family == "Autoencoder" and kwargs.get("density") is None:
        # Files written before 2026-12-08 record no density: theirs was this MAF.
        kwargs["density"] = FAMILIES["MAF"](kwargs.get("latent", 8), transforms=4, hidden=(64, 64))
    return _CLASSES[family](**kwargs)


#: What a config may name: the families, and the wrapper that embeds a family's context.
_CLASSES = {**FAMILIES, Embedded.__name__: Embedded}


# Arguments added after files were written, whose default is not what those files were built
# with: a config without one is rebuilt as it was (a multi-scale flow without the logit).
_BEFORE = {"RealNVP": {"logit": None}, "NSF": {"logit": None}}


def save(model: Xform, path: str | os.PathLike, **extra: Any) -> None:
    """Save a model (architecture and weights) to ``path`` atomically; ``extra`` entries
    (tensors, numbers, strings, lists, dicts: what ``weights_only`` reads) are stored beside
    them, for whatever holds the model (e.g. an estimator's standardization).

    Examples:
        >>> import tempfile, os, torch, pyro_xform
        >>> flow = pyro_xform.MAF(features=2)
        >>> path = os.path.join(tempfile.mkdtemp(), "maf.pt")
        >>> pyro_xform.save(flow, path)
        >>> again = pyro_xform.load(path)
        >>> x = torch.randn(3, 2)
        >>> torch.equal(again().log_prob(x), flow().log_prob(x))
        True
    """
    contents = {"format": FORMAT, "config": config_of(model), "state_dict": model.state_dict()}
    atomic_save({**extra, **contents}, path)


def read(path: str | os.PathLike) -> dict:
    """Read a pyro_xform file (model or training checkpoint) with ``weights_only=True``."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pyro_xform file")
    return obj


def load(path: str | os.PathLike) -> Xform:
    """Load a model saved by :func:`save` or a training checkpoint written by ``fit``."""
    obj = read(path)
    model = build(obj["config"])
    state = obj["state_dict"]
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), None)
    if dtype is not None:
        model.to(dtype)
    model.load_state_dict(state)
    return model
