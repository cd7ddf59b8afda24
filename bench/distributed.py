"""Throughput of a diffusion fit on 1 process and on 2 processes (DDP, gloo) on this machine.

    python bench/distributed.py [--steps 300] [--batch 256]

The 2-process run is launched by ``torchrun`` (``torch.distributed.run``) exactly as a user
would launch it; each rank uses one thread and a batch of ``--batch`` rows, so the global
batch is twice as large. Reported: samples per second, and the scaling efficiency
(2-process throughput over twice the 1-process, 1-thread throughput). Both 1-process
runs (1 thread; 2 threads, i.e. the same cores as the 2 processes) are measured in the
same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def train(steps: int, batch: int, threads: int) -> dict:
    import torch

    import pyro_xform as px

    torch.set_num_threads(threads)
    data, _ = px.datasets.load("digits")
    model = px.Diffusion(64, hidden=(256, 256))
    # A short warm-up fit first, so that allocation and DDP construction are not timed.
    px.fit(model, data, steps=5, batch_size=batch, progress=False, seed=0)
    result = px.fit(model, data, steps=steps, batch_size=batch, progress=False, seed=1)
    return {
        "world": result.world_size,
        "seconds": result.seconds,
        "samples_per_s": steps * batch * result.world_size / result.seconds,
        "final_loss": sum(result.losses[-20:]) / 20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # one rank under torchrun
        result = train(args.steps, args.batch, threads=1)
        if int(os.environ["RANK"]) == 0:
            with open(args.worker, "w") as f:
                json.dump(result, f)
        return

    rows = {}
    for threads in (1, 2):
        rows[f"1 process, {threads} thread{'s' * (threads > 1)}"] = train(args.steps, args.batch, threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
        command += [__file__, "--steps", str(args.steps), "--batch", str(args.batch), "--worker", out]
        subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        with open(out) as f:
            rows["2 processes (DDP, gloo), 1 thread each"] = json.load(f)

    print(f"\nDiffusion(64, hidden=(256, 256)) on digits, {args.steps} steps, batch {args.batch} per process")
    print(f"{'run':42s} {'samples/s':>10s} {'seconds':>8s} {'loss (last 20)':>15s}")
    for name, row in rows.items():
        print(f"{name:42s} {row['samples_per_s']:10.0f} {row['seconds']:8.1f} {row['final_loss']:15.4f}")
    one = rows["1 process, 1 thread"]["samples_per_s"]
    two_threads = rows["1 process, 2 threads"]["samples_per_s"]
    ddp = rows["2 processes (DDP, gloo), 1 thread each"]["samples_per_s"]
    print(f"\nscaling efficiency, 2 processes vs 2 x (1 process, 1 thread): {ddp / (2 * one):.2f}")
    print(f"speed-up, 2 processes vs 1 process with 2 threads:            {ddp / two_threads:.2f}x")


if __name__ == "__main__":
    main()
