"""Command line: ``pyro-xform demo | fit | sample | evaluate`` (also ``python -m pyro_xform``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import datasets
from .checkpoint import load, save
from .families import FAMILIES
from .fit import fit
from .metrics import sliced_wasserstein

__all__ = ["main"]

#: The families the demo trains, with settings that fit about three minutes of training on
#: 2 cores in total. The continuous-time families learn from a regression loss whose noise
#: only more data per step averages out: they take four times the steps on minibatches twice
#: as large (a step of theirs costs about a third of a flow's at equal size; at equal wall
#: clock, larger minibatches beat more steps, bench/MEASUREMENTS.md). The discrete
#: autoregressive model sees the data quantized to a 64 x 64 grid (two positions, 64
#: categories); its density is the exact histogram density, comparable with the others.
DEMO = {
    "NSF": dict(kwargs={}, lr=5e-3, step_factor=1),
    "MAF": dict(kwargs={}, lr=5e-3, step_factor=1),
    "RealNVP": dict(kwargs={}, lr=5e-3, step_factor=1),
    "IAF": dict(kwargs={}, lr=5e-3, step_factor=1),
    "FlowMatching": dict(kwargs={}, lr=5e-3, step_factor=4, batch_size=1024),
    "Diffusion": dict(kwargs={}, lr=5e-3, step_factor=4, batch_size=1024),
    "VAE": dict(kwargs={"latent": 2, "hidden": (128, 128)}, lr=2e-3, step_factor=1),
    "Autoencoder": dict(kwargs={"latent": 2, "hidden": (64, 64)}, lr=2e-3, step_factor=1),
    "GAN": dict(kwargs={"latent": 2, "hidden": (128, 128)}, lr=2e-4, step_factor=1),
    "DiscreteAutoregressive": dict(kwargs={"categories": 64}, lr=2e-3, step_factor=1, grid=64),
}


class _Grid:
    """A regular grid over the data's bounding box: points <-> cell indices (as floats)."""

    def __init__(self, data: torch.Tensor, cells: int) -> None:
        pad = 0.01 * (data.max(0).values - data.min(0).values)
        self.low, self.cells = data.min(0).values - pad, cells
        self.width = (data.max(0).values + pad - self.low) / cells

    def index(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.low) / self.width).floor().clamp(0, self.cells - 1)

    def point(self, index: torch.Tensor) -> torch.Tensor:
        return self.low + (index + torch.rand_like(index)) * self.width

    def log_density(self, log_mass: torch.Tensor) -> torch.Tensor:
        """Histogram density: the cell's mass spread uniformly over the cell."""
        return log_mass - self.width.log().sum()


def _load_data(spec: str, split: str = "train") -> torch.Tensor:
    """A named data set (toy or digits) or a ``.pt``/``.npy`` file of shape (N, D)."""
    if spec in datasets.TOYS or spec == "digits":
        return getattr(datasets.load(spec), split)
    path = Path(spec)
    if not path.exists():
        raise SystemExit(
            f"error: {spec!r} is neither a data set name ({', '.join(sorted(datasets.TOYS))}, "
            "digits) nor an existing .pt/.npy file"
        )
    if path.suffix == ".npy":
        return torch.as_tensor(np.load(path, allow_pickle=False), dtype=torch.get_default_dtype())
    data = torch.load(path, weights_only=True)
    if not isinstance(data, torch.Tensor):
        raise SystemExit(f"error: {spec} does not hold a tensor")
    return data


def demo(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    smoke = bool(os.environ.get("CI"))
    steps = args.steps or (30 if smoke else 1500)
    train, test = datasets.load(args.data, n_train=20_000, n_test=5_000)
    names = args.families or list(DEMO)
    rows, samples = [], {}
    print(
        f"pyro-xform demo: {args.data}, {train.shape[0]} training points, {steps} steps per flow "
        "(4x, on minibatches of 1024 instead of 512, for the continuous-time families)"
    )
    for name in names:
        if name not in DEMO:
            raise SystemExit(f"error: unknown family {name!r}; the demo knows {', '.join(DEMO)}")
        torch.manual_seed(0)
        model = FAMILIES[name](features=2, **DEMO[name]["kwargs"])
        grid = _Grid(train, DEMO[name]["grid"]) if "grid" in DEMO[name] else None
        result = fit(
            model,
            train if grid is None else grid.index(train),
            steps=steps * DEMO[name]["step_factor"],
            batch_size=DEMO[name].get("batch_size", 512),
            lr=DEMO[name]["lr"],
            schedule="cosine",
            seed=0,
            progress=not args.quiet,
        )
        model.eval()
        with torch.no_grad():
            dist = model()
            if dist.log_prob_kind is None:
                nll = math.nan
            elif grid is None:
                nll = float(-dist.log_prob(test).mean())
            else:
                nll = float(-grid.log_density(dist.log_prob(grid.index(test))).mean())
            samples[name] = dist.sample((test.shape[0],))
            if grid is not None:
                samples[name] = grid.point(samples[name])
        swd = sliced_wasserstein(samples[name], test)
        rows.append((name, dist.log_prob_kind, nll, swd, result.seconds))
        print(f"  {name}: trained in {result.seconds:.1f} s", flush=True)
    print()
    print(f"{'family':<22} {'log_prob':<9} {'test NLL':>9} {'sliced W1':>10} {'train s':>8}")
    for name, kind, nll, swd, secs in rows:
        shown = "n/a" if math.isnan(nll) else f"{nll:.3f}"
        print(f"{name:<22} {kind!s:<9} {shown:>9} {swd:>10.3f} {secs:>8.1f}")
    print("(estimate: importance-weighted, K=100; n/a: the model has no density)")
    print(
        f"(sliced W1 of the test set against a second draw of the data: "
        f"{sliced_wasserstein(datasets.toy(args.data, test.shape[0], seed=2), test):.3f})"
    )
    out = Path(args.out)
    _plot(test, samples, out)
    print(f"samples beside the data: {out}")
    return 0


def _plot(data: torch.Tensor, samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("data", data), *samples.items()]
    cols = min(6, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    lim = float(data.abs().max()) * 1.1
    for ax, (title, x) in zip(axes.flat, panels, strict=False):
        x = x.detach().cpu().numpy()
        ax.hist2d(x[:, 0], x[:, 1], bins=100, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
        ax.set_title(title if len(title) < 16 else "DiscreteAR", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cmd_fit(args: argparse.Namespace) -> int:
    data = _load_data(args.data)
    if args.family not in FAMILIES:
        raise SystemExit(f"error: unknown family {args.family!r}; choose from {', '.join(sorted(FAMILIES))}")
    kwargs = json.loads(args.kwargs) if args.kwargs else {}
    model = FAMILIES[args.family](features=data.shape[1], **kwargs)
    result = fit(
        model,
        data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        validation=args.validation,
        checkpoint=args.checkpoint,
        progress=not args.quiet,
    )
    save(model, args.out)
    print(f"{result}\nsaved {args.out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    model = load(args.model).eval()
    if args.seed is not None:
        torch.manual_seed(args.seed)
    with torch.no_grad():
        x = model().sample((args.n,))
    out = Path(args.out)
    if out.suffix == ".npy":
        np.save(out, x.numpy())
    else:
        torch.save(x, out)
    print(f"wrote {args.n} samples of shape {tuple(x.shape[1:])} to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load(args.model).eval()
    data = _load_data(args.data, split="test").to(next(model.parameters()).dtype)
    model.check_data(data)
    with torch.no_grad():
        dist = model()
        if dist.log_prob_kind is None:
            raise SystemExit("error: this model has no density; evaluate it by its samples")
        nll = float(-dist.log_prob(data).mean())
    line = f"test NLL: {nll:.4f} nats ({dist.log_prob_kind}) on {data.shape[0]} points"
    if args.data == "digits":
        line += f", {datasets.bits_per_dim(nll, data.shape[1]):.3f} bits/dim"
    print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-xform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train the families on a 2-D toy set; print a table; plot samples")
    p.add_argument("--data", default="checkerboard", choices=sorted(datasets.TOYS))
    p.add_argument(
        "--steps", type=int, default=None, help="steps per family (default 1500; 30 when CI is set)"
    )
    p.add_argument("--families", nargs="*", default=None)
    p.add_argument("--out", default="pyro-xform-demo.png")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=demo)

    p = sub.add_parser("fit", help="train a family on a data set and save it")
    p.add_argument("--family", default="NSF")
    p.add_argument("--data", required=True, help="toy name, 'digits', or a .pt/.npy file of shape (N, D)")
    p.add_argument("--kwargs", default=None, help="JSON of constructor arguments")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--validation", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="training checkpoint (resumed if it exists)")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("sample", help="draw samples from a saved model")
    p.add_argument("model")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", required=True, help=".npy or .pt")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="test NLL of a saved model")
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        code = args.func(args)
    except (ValueError, FloatingPointError) as error:  # bad input or a diverged fit: a message, no traceback
        raise SystemExit(f"error: {error}") from None
    if args.command == "demo":
        print(f"done in {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
