"""The GPU check: the test suite on a device, then training throughput there against the CPU.

One command for a machine with a GPU (a few minutes in all):

    python bench/device.py                 # --device cuda
    python bench/device.py --device cpu    # a dry run of the same script on the CPU

1. Runs the device-sensitive part of the test suite with ``pytest --device <device>``
   (every model, tensor and noise draw made on that device by default; data kept on the
   CPU where a test says so).
2. Times ``pyro_xform.fit`` steps of NSF, FlowMatching and Diffusion on the 2-D checkerboard
   with the data on the CPU (``fit`` moves each minibatch), at two batch sizes, on the CPU
   (``--threads`` threads) and on the device, and prints steps per second and the ratio.
3. Times the image U-Net's flow-matching step against torchcfm's ``UNetModel`` of equal
   size on the device, with each one's peak memory (``bench/images.py --section throughput``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

import pyro_xform as px

SUITE = [
    "tests/conformance",
    "tests/test_devices.py",
    "tests/test_fit.py",
    "tests/test_infer.py",
    "tests/test_latent.py",
    "tests/test_continuous.py",
    "tests/test_pyro_integration.py",
]
FAMILIES = ("NSF", "FlowMatching", "Diffusion")


def run_suite(device: str, timeout: float) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--device", device]
    print("$", " ".join(command + SUITE), flush=True)
    started = time.perf_counter()
    try:
        rc = subprocess.run(command + SUITE, timeout=timeout, env={**os.environ, "CI": "1"}).returncode
    except subprocess.TimeoutExpired:
        print(f"the suite ran past {timeout:.0f} s", flush=True)
        return 124
    print(f"suite on {device}: rc {rc} in {time.perf_counter() - started:.0f} s", flush=True)
    return rc


def steps_per_second(family: str, device: torch.device, batch: int, steps: int, data) -> float:
    torch.manual_seed(0)
    model = px.FAMILIES[family](2).to(device)
    px.fit(model, data, steps=5, batch_size=batch, progress=False, seed=0)  # warm-up (kernels, caches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result = px.fit(model, data, steps=steps, batch_size=batch, progress=False, seed=1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / result.seconds


def throughput(device: torch.device, steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    data, _ = px.datasets.load("checkerboard")
    print(f"\nfit steps per second, data on the CPU, {threads} CPU thread(s), {steps} steps")
    print(f"{'family':<14}{'batch':>7}{'cpu':>10}{device!s:>10}{'ratio':>9}")
    for family in FAMILIES:
        for batch in (512, 4096):
            cpu = steps_per_second(family, torch.device("cpu"), batch, steps, data)
            dev = steps_per_second(family, device, batch, steps, data)
            print(f"{family:<14}{batch:>7}{cpu:>10.1f}{dev:>10.1f}{dev / cpu:>8.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--suite-timeout", type=float, default=360.0)
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--image-timeout", type=float, default=120.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device here; try --device cpu for a dry run")
        print(torch.cuda.get_device_name(device), "torch", torch.__version__, flush=True)
    rc = 0 if args.skip_suite else run_suite(args.device, args.suite_timeout)
    throughput(device, args.steps, args.threads)
    image_throughput(args.device, args.image_timeout)
    sys.exit(rc)


def image_throughput(device: str, timeout: float) -> None:
    """The image U-Net's training step against torchcfm's of equal size on the device, with
    the peak memory (bench/images.py's throughput section; it needs the bench extra and the
    Fashion-MNIST package, else the 8x8 digits)."""
    script = os.path.join(os.path.dirname(__file__), "images.py")
    data = "fashion-mnist" if px.datasets.FASHION_MNIST.is_dir() else "digits"
    command = [sys.executable, script, "--section", "throughput", "--device", device, "--data", data]
    for batch in ("64", "256"):
        run = [*command, "--batch", batch, "--rounds", "5"]
        print("$", " ".join(run), flush=True)
        try:
            subprocess.run(run, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"the image throughput ran past {timeout:.0f} s", flush=True)


if __name__ == "__main__":
    main()
