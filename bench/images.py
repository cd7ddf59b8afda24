"""Images: our U-Net flow matching against torchcfm's ``UNetModel`` of the same size, one run.

Section ``throughput`` (the one built so far): a flow-matching training step (CondOT path,
independent coupling, Adam) on Fashion-MNIST ``(1, 28, 28)`` images, batch 64 by default,
for ``pyro_xform.FlowMatching`` (its default U-Net for this shape: 32 channels, widths
1, 2, 2, one residual block a resolution, no attention; the step is ``fit``'s own loss,
standardization included) and for torchcfm's ``UNetModel`` built as close to it as its
options allow (32 channels, ``channel_mult=(1, 2, 2)``, one residual block, no
attention), trained with torchcfm's ``ConditionalFlowMatcher``. Parameter counts are
printed beside the times; rounds are interleaved and the medians compared, so machine noise
hits both alike. Peak memory is reported on CUDA only (``torch.cuda.max_memory_allocated``);
on the CPU a process's peak resident size cannot be split between two models in one run.

Still to come in this script (issue 19): test bits/dim of every family with a likelihood,
sample grids, and the Fréchet distance on a classifier trained here.

Data: Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), or the
8x8 digits as ``(1, 8, 8)`` images with ``--data digits`` (no package needed).

    pip install -e ".[bench]"
    python bench/images.py [--threads 2] [--batch 64] [--rounds 7] [--steps 5] [--data fashion-mnist]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyro_xform as px
from pyro_xform.objectives import get_objective


def images(name: str) -> torch.Tensor:
    if name == "digits":
        return px.datasets.digits(image=True).train
    return px.datasets.fashion_mnist().train[:4096]


def ours(shape, device):
    model = px.FlowMatching(shape).to(device)
    objective = get_objective("cfm", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        (objective.loss(model, batch, None) / batch.shape[0]).backward()
        optimizer.step()

    return model, step


def torchcfm_model(shape, device):
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
    from torchcfm.models.unet import UNetModel

    net = UNetModel(
        # Attention at a downsampling rate never reached: none, as in ours.
        dim=shape,
        num_channels=32,
        num_res_blocks=1,
        channel_mult=(1, 2, 2),
        attention_resolutions="1000",
    ).to(device)
    matcher = ConditionalFlowMatcher(sigma=0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        x0 = torch.randn_like(batch)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, batch)
        (net(t, xt) - ut).pow(2).mean().backward()
        optimizer.step()

    return net, step


def throughput(args, data, device) -> None:
    shape = tuple(data.shape[1:])
    models = {"pyro_xform": ours(shape, device), "torchcfm": torchcfm_model(shape, device)}
    ours_model = models["pyro_xform"][0]
    ours_model.initialize(data[:1024].to(device))  # fit's first step: the data's standardization
    g = torch.Generator().manual_seed(0)
    times = {name: [] for name in models}
    for _model, step in models.values():  # warm-up (allocator, first-call costs)
        step(data[: args.batch].to(device))
    for _ in range(args.rounds):
        for name, (_, step) in models.items():
            batches = [
                data[torch.randint(0, len(data), (args.batch,), generator=g)].to(device)
                for _ in range(args.steps)
            ]
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / args.steps)
    print(f"flow-matching training step, {shape} images, batch {args.batch}, {device.type}")
    print(f"{'model':<12} {'parameters':>11} {'ms/step':>9} {'images/s':>9}")
    for name, (model, _) in models.items():
        per_step = statistics.median(times[name])
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<12} {params:>11,} {1e3 * per_step:>9.1f} {args.batch / per_step:>9.1f}")
    ratio = statistics.median(times["torchcfm"]) / statistics.median(times["pyro_xform"])
    print(f"throughput, pyro_xform / torchcfm: {ratio:.2f}x (target >= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--data", choices=("fashion-mnist", "digits"), default="fashion-mnist")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    throughput(args, images(args.data), torch.device(args.device))


if __name__ == "__main__":
    main()
