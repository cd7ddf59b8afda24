"""Images: every family's image network against its flat twin and the peers, one run.

Section ``bpd``: each model trains for ``--steps`` steps (batch 64, Adam 1e-3, fresh
dequantization noise every batch) and reports test bits/dim on the data's own scale
(``(NLL / D + log L) / log 2`` for L levels; the test images are dequantized once) and its
training wall-clock. Exact where the model's density is exact (the flows); flow matching and
diffusion by the Hutchinson estimate of their ODE density (rk4, ``--ode-steps`` steps, one Rademacher
probe per image and pass, ``--passes`` passes; the figure is their mean, ± its standard
error), with the same solver for the U-Net and the MLP field; the VAE by IWAE with
``--iwae`` particles; PixelCNN on the integer pixels (exact, the same scale). The peer is
zuko's NSF on the flat vector with our NSF's settings (4 coupling layers of 2x64, 8 bins).

Section ``throughput``: a flow-matching training step (CondOT path,
independent coupling, Adam) on Fashion-MNIST ``(1, 28, 28)`` images, batch 64 by default,
for ``pyro_xform.FlowMatching`` (its default U-Net for this shape: 32 channels, widths
1, 2, 2, one residual block a resolution, no attention; the step is ``fit``'s own loss,
standardization included) and for torchcfm's ``UNetModel`` built as close to it as its
options allow (32 channels, ``channel_mult=(1, 2, 2)``, one residual block, no
attention), trained with torchcfm's ``ConditionalFlowMatcher``. Parameter counts are
printed beside the times; rounds are interleaved and the medians compared, so machine noise
hits both alike. Peak memory is reported on CUDA only (``torch.cuda.max_memory_allocated``);
on the CPU a process's peak resident size cannot be split between two models in one run.

Still to come in this script (issue 19): the sample grids, the Fréchet distance
on a classifier trained here, and torchcfm's U-Net scored by our ODE.

Data: Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), or the
8x8 digits as ``(1, 8, 8)`` images with ``--data digits`` (no package needed).

    pip install -e ".[bench]"
    python bench/images.py --section bpd --data digits [--steps 2000] [--only RealNVP,FM-unet]
    python bench/images.py --section throughput [--threads 2] [--batch 64] [--rounds 7] [--steps 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import pyro_xform as px
from pyro_xform.objectives import get_objective


def images(name: str, split: str = "train") -> torch.Tensor:
    if name == "digits":
        return getattr(px.datasets.digits(image=True), split)
    return getattr(px.datasets.fashion_mnist(), split)[:4096]


LEVELS = {"digits": 17, "fashion-mnist": 256}


def candidates(shape, levels):
    """name -> (model factory, how it is scored)."""
    return {
        "RealNVP-multiscale": (lambda: px.RealNVP(shape), "exact"),
        "RealNVP-flat": (lambda: px.RealNVP(shape, architecture="mlp"), "exact"),
        "NSF-multiscale": (lambda: px.NSF(shape), "exact"),
        "NSF-flat": (lambda: px.NSF(shape, architecture="mlp"), "exact"),
        "FM-unet": (lambda: px.FlowMatching(shape), "hutchinson"),
        "FM-mlp": (lambda: px.FlowMatching(shape, architecture="mlp"), "hutchinson"),
        "Diffusion-unet": (lambda: px.Diffusion(shape), "hutchinson"),
        "VAE-conv": (lambda: px.VAE(shape, latent=16), "iwae"),
        "PixelCNN": (lambda: px.DiscreteAutoregressive(shape, categories=levels), "discrete"),
    }


def zuko_nsf(train, test, args, levels):
    import zuko

    torch.manual_seed(0)
    d = train[0].numel()
    flow = zuko.flows.NSF(d, transforms=4, hidden_features=(64, 64), bins=8)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    dequantize, flat = px.datasets.Dequantize(levels), train.flatten(1)
    start = time.perf_counter()
    for _ in range(args.steps):
        batch = dequantize(flat[torch.randint(0, len(flat), (64,))])
        optimizer.zero_grad()
        (-flow().log_prob(batch).mean()).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        nll = -float(flow().log_prob(test.flatten(1)).mean())
    return nll, 0.0, seconds


def score(model, kind, test, args, levels):
    """Test NLL in nats per image (on the [0, 1) scale; discrete: of the integer pixels) and
    its standard error."""
    with torch.no_grad():
        if kind == "exact":
            return -float(model().log_prob(test).mean()), 0.0
        if kind == "iwae":
            bounds = [model.iwae(b, particles=args.iwae, chunk=50) for b in test.split(60)]
            return -float(torch.cat(bounds).mean()), 0.0
        if kind == "discrete":  # -log P(k) less D log L: the continuous scale bits_per_dim takes
            nll = -float(model().log_prob((test * levels).floor()).mean())
            return nll - test[0].numel() * math.log(levels), 0.0
        d = model(solver="rk4", steps=args.ode_steps, trace="hutchinson", probes=1)
        passes = [-torch.cat([d.log_prob(b) for b in test.split(120)]).mean() for _ in range(args.passes)]
        passes = torch.stack(passes)
        check_solver(model, test[: args.check], args)
        return float(passes.mean()), float(passes.std() / math.sqrt(args.passes))


def check_solver(model, test, args) -> None:
    """The fixed-step solve's density against dopri5 at 1e-5 on the same images and probes
    (same seed), so a figure is not an artefact of the solver's error."""
    dims = test[0].numel()
    for name, settings in (
        (f"rk4 x{args.ode_steps}", dict(solver="rk4", steps=args.ode_steps)),
        ("dopri5 1e-5", dict(solver="dopri5", rtol=1e-5, atol=1e-5)),
    ):
        torch.manual_seed(1)
        d = model(trace="hutchinson", probes=4, **settings)
        nll = -float(d.log_prob(test).mean())
        print(f"  solver check, {len(test)} images: {name:<12} {nll / dims:.4f} nats/dim", flush=True)


def bits(args) -> None:
    train, test = images(args.data), images(args.data, "test")[: args.test]
    levels, dims = LEVELS[args.data], train[0].numel()
    shape = tuple(train.shape[1:])
    rows = []
    chosen = candidates(shape, levels)
    only = set(args.only.split(",")) if args.only else None
    for name, (build, kind) in chosen.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = build()
        data = (train * levels).floor() if kind == "discrete" else train
        augment = None if kind == "discrete" else px.datasets.Dequantize(levels)
        start = time.perf_counter()
        px.fit(model, data, steps=args.steps, batch_size=64, lr=1e-3, progress=False, seed=0, augment=augment)
        seconds = time.perf_counter() - start
        nll, se = score(model, kind, test, args, levels)
        bpd = px.datasets.bits_per_dim(nll, dims, levels)
        rows.append((name, kind, bpd, se / dims / math.log(2), seconds))
        print(f"{rows[-1][0]:<20} {rows[-1][2]:.3f} ± {rows[-1][3]:.3f}  ({seconds:.0f} s)", flush=True)
    if not only or "zuko-NSF" in only:
        nll, _, seconds = zuko_nsf(train, test, args, levels)
        rows.append(("zuko-NSF", "exact", px.datasets.bits_per_dim(nll, dims, levels), 0.0, seconds))
    print(f"\ntest bits/dim, {args.data} {shape}, {args.steps} steps, {len(test)} test images")
    print(f"{'model':<20} {'scored':<11} {'bits/dim':>9} {'± se':>7} {'train s':>8}")
    for name, kind, bpd, se, seconds in rows:
        print(f"{name:<20} {kind:<11} {bpd:>9.3f} {se:>7.3f} {seconds:>8.0f}")


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
    parser.add_argument("--section", choices=("bpd", "throughput"), default="bpd")
    parser.add_argument("--steps", type=int, default=None, help="bpd: 2000; throughput: 5 a round")
    parser.add_argument("--test", type=int, default=360, help="bpd: test images scored")
    parser.add_argument("--ode-steps", type=int, default=16)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--check", type=int, default=60, help="bpd: images of the solver check")
    parser.add_argument("--iwae", type=int, default=1000)
    parser.add_argument("--only", default=None, help="bpd: comma-separated model names")
    parser.add_argument("--data", choices=("fashion-mnist", "digits"), default="fashion-mnist")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.section == "bpd":
        args.steps = 2000 if args.steps is None else args.steps
        bits(args)
    else:
        args.steps = 5 if args.steps is None else args.steps
        throughput(args, images(args.data), torch.device(args.device))


if __name__ == "__main__":
    main()
