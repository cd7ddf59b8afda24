"""Images: every family on real pictures against the peers, one run.

Section ``table`` (the default): each family's default image network (and, with
``--only``, its flat twin or an option such as ``RealNVP-nologit``) trains for ``--steps``
steps of batch ``--batch`` (Adam 1e-3, 2e-4 for the GAN; fresh dequantization noise every
batch; the Autoencoder then fits its code density for as many steps) and reports:

- test bits/dim on the data's own scale (``(NLL / D + log L) / log 2`` for L levels; the
  test images are dequantized once): exact for the flows; flow matching and diffusion by
  the Hutchinson estimate of their probability-flow ODE density (rk4, ``--ode-steps``
  steps, one Rademacher probe per image and pass, ``--passes`` passes; the figure is their
  mean, ± its standard error; ``--check`` images are also solved by dopri5 at 1e-5 to show
  the fixed-step figure is not a solver artefact); the VAE by IWAE with ``--iwae``
  particles; PixelCNN on the integer pixels (exact, the same scale); none for the GAN and
  the Autoencoder;
- a sample grid PNG per family (``--out``/images-<data>/<model>.png);
- the Fréchet distance of ``--samples`` draws to as many test images on the 64 features of
  a small CNN classifier trained here on the training set (no downloaded weights), beside
  the figure of as many training images (the scale: two real samples);
- the training wall-clock.

Peers at the same steps, batch and learning rate: zuko's NSF on the flat vector (4 coupling
layers of 2x64, 8 bins), and torchcfm's ``UNetModel`` of our U-Net's size trained by its
``ConditionalFlowMatcher`` on ``2x - 1``, scored and sampled by our ODE on its field
(``transforms.ODETransform``), so the two flow-matching rows differ only in the network
and its training code.

The default budgets (``BUDGETS``): Fashion-MNIST 400 steps a family (about 25,600 images,
less than half an epoch), 100 test images scored, 128 draws: the whole table in about an
hour on 2 CPU cores; a GPU run takes ``--steps``, ``--batch``, ``--test`` and
``--samples`` as large as its time allows (``--device cuda``). Digits (1x8x8, 17 levels):
2000 steps, 360 test images, the flat twins included.

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

Data: Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), or the
8x8 digits as ``(1, 8, 8)`` images with ``--data digits`` (no package needed).

    pip install torch==2.13.0 -e ".[bench]"
    python bench/images.py [--data digits] [--steps 400] [--only RealNVP-multiscale,FM-unet]
    python bench/images.py --device cuda --steps 20000 --batch 256 --test 10000 --samples 5000
    python bench/images.py --section throughput [--threads 2] [--batch 64] [--rounds 7] [--steps 5]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import time

import pyro
import torch
from digits import grid

import pyro_xform as px
from pyro_xform.metrics import frechet_distance
from pyro_xform.objectives import get_objective


@functools.cache
def dataset(name: str) -> px.datasets.Labelled:
    return px.datasets.digits(image=True, labels=True) if name == "digits" else px.datasets.fashion_mnist()


def images(name: str, split: str = "train", labels: bool = False):
    return getattr(dataset(name), f"{split}_labels" if labels else split)


LEVELS = {"digits": 17, "fashion-mnist": 256}
# Flat-vector twins of the image networks: on digits they show what the image network buys;
# on Fashion-MNIST they are left out of the default table (--only runs them).
FLAT = ("RealNVP-flat", "NSF-flat", "FM-mlp")
# Options off by default, measured against the default with --only (bench/MEASUREMENTS.md).
OPTIONS = (
    "RealNVP-nologit",
    "NSF-nologit",
    "FM-unet-channel",
    "Diffusion-unet-channel",
    "FM-unet-channel-attention",
    "FM-unet-marginal",
    "Diffusion-unet-marginal",
    "FM-unet-attention-gn1",
    "FM-unet-attention-geotime",
    "Diffusion-unet-attention",
    "FM-unet-raw",
    "Diffusion-unet-raw",
    "Diffusion-unet-vp",
)


def norm_per_channel(model):
    """A probe: every group normalization of the U-Net with one channel a group (torchcfm's
    32 groups at 32 channels), the same parameters."""
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, torch.nn.GroupNorm):
                setattr(module, name, torch.nn.GroupNorm(child.num_channels, child.num_channels))
    return model


class GeometricTime(torch.nn.Module):
    """A probe: the transformer-style time features of DDPM's U-Nets, frequencies geometric
    from 1 to 1/1000 of 1000 t, as many features as ours."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features, self.half = out_features, (out_features - 1) // 2

    def forward(self, t):
        k = torch.arange(self.half, dtype=t.dtype, device=t.device)
        angle = 1000 * t[..., None] * torch.exp(-math.log(1000.0) * k / self.half)
        return torch.cat([t[..., None], angle.sin(), angle.cos()], -1)


def geometric_time(model):
    net = model.network
    net.time = GeometricTime(net.time.out_features)
    return model


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
        "Autoencoder-conv": (lambda: px.Autoencoder(shape, latent=16), "samples only"),
        "GAN-dcgan": (lambda: px.GAN(shape, latent=16), "samples only"),
        "RealNVP-nologit": (lambda: px.RealNVP(shape, logit=None), "exact"),
        "NSF-nologit": (lambda: px.NSF(shape, logit=None), "exact"),
        "FM-unet-channel": (lambda: px.FlowMatching(shape, standardize="channel"), "hutchinson"),
        "Diffusion-unet-channel": (lambda: px.Diffusion(shape, standardize="channel"), "hutchinson"),
        "FM-unet-channel-attention": (
            lambda: px.FlowMatching(shape, standardize="channel", attention=True),
            "hutchinson",
        ),
        "FM-unet-marginal": (lambda: px.FlowMatching(shape, standardize="marginal"), "hutchinson"),
        "Diffusion-unet-attention": (lambda: px.Diffusion(shape, attention=True), "hutchinson"),
        "FM-unet-raw": (lambda: px.FlowMatching(shape, standardize=False), "hutchinson"),
        "Diffusion-unet-raw": (lambda: px.Diffusion(shape, standardize=False), "hutchinson"),
        "FM-unet-attention-gn1": (
            lambda: norm_per_channel(px.FlowMatching(shape, attention=True)),
            "hutchinson",
        ),
        "FM-unet-attention-geotime": (
            lambda: geometric_time(px.FlowMatching(shape, attention=True)),
            "hutchinson",
        ),
        "Diffusion-unet-marginal": (lambda: px.Diffusion(shape, standardize="marginal"), "hutchinson"),
        "Diffusion-unet-vp": (lambda: px.Diffusion(shape, sde="vp"), "hutchinson"),
    }


class Classifier(torch.nn.Module):
    """The small CNN whose penultimate layer gives the Fréchet features (trained here on the
    training set: no downloaded weights)."""

    def __init__(self, shape, classes: int = 10, width: int = 32, features: int = 64) -> None:
        super().__init__()
        pool = torch.nn.MaxPool2d(2) if shape[-1] >= 16 else torch.nn.Identity()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(shape[0], width, 3, padding=1),
            torch.nn.ReLU(),
            pool,
            torch.nn.Conv2d(width, 2 * width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(2 * width * 16, features),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(features, classes)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x):
        return torch.cat([self.body(b.clamp(0, 1)) for b in x.split(500)])


def train_classifier(args) -> Classifier:
    x, y = images(args.data), images(args.data, labels=True)
    x_test, y_test = images(args.data, "test"), images(args.data, "test", labels=True)
    torch.manual_seed(0)
    net = Classifier(tuple(x.shape[1:]), int(y.max()) + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.classifier_epochs):
        for index in torch.randperm(len(x)).split(128):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[index]), y[index]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(-1) == y_test).double().mean())
    print(f"feature classifier: test accuracy {accuracy:.3f} ({args.classifier_epochs} epochs)", flush=True)
    return net.eval()


def zuko_nsf(train, args, levels):
    """zuko's NSF on the flat vector with our flat NSF's settings; returns (train s,
    log-density of images, sampler)."""
    import zuko

    torch.manual_seed(0)
    d = train[0].numel()
    flow = zuko.flows.NSF(d, transforms=4, hidden_features=(64, 64), bins=8).to(args.device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    dequantize, flat = px.datasets.Dequantize(levels), train.flatten(1)
    start = time.perf_counter()
    for _ in range(args.steps):
        batch = dequantize(flat[torch.randint(0, len(flat), (args.batch,))]).to(args.device)
        optimizer.zero_grad()
        (-flow().log_prob(batch).mean()).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    shape = train.shape[1:]
    return seconds, lambda x: flow().log_prob(x.flatten(1)), lambda n: flow().sample((n,)).reshape(n, *shape)


class TorchcfmField(torch.nn.Module):
    """torchcfm's ``net(t, x)`` on images as our ODE's field ``v(x, t)`` on flat vectors."""

    def __init__(self, net, shape) -> None:
        super().__init__()
        self.net, self.shape = net, tuple(shape)

    def forward(self, x, t, context=None):
        y = x.reshape(-1, *self.shape)
        return self.net(t.expand(len(y)), y).reshape(x.shape)


def torchcfm_unet(train, args, levels):
    """torchcfm's ``UNetModel`` of our U-Net's size trained by its ``ConditionalFlowMatcher``
    on ``2x - 1`` (its usual scaling) for the same steps, batch and learning rate; scored and
    sampled by our ODE on its field (the density on ``x`` adds ``D log 2``)."""
    shape = tuple(train.shape[1:])
    torch.manual_seed(0)
    net, step = torchcfm_model(shape, args.device, lr=1e-3)
    dequantize = px.datasets.Dequantize(levels)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(2 * dequantize(train[torch.randint(0, len(train), (args.batch,))]).to(args.device) - 1)
    seconds = time.perf_counter() - start
    d = train[0].numel()
    base = pyro.distributions.Normal(torch.zeros(d, device=args.device), 1.0).to_event(1)

    def distribution(**settings):
        ode = px.transforms.ODETransform(TorchcfmField(net, shape), d, **settings)
        return px.XformDistribution(base, ode, event_shape=shape)

    def sample(n):
        return (distribution(solver="rk4", steps=args.sample_steps).sample((n,)) + 1) / 2

    return seconds, distribution, sample


def score(model, kind, test, args, levels):
    """Test NLL in nats per image (on the [0, 1) scale; discrete: of the integer pixels) and
    its standard error, or (nan, 0) for a family without a likelihood."""
    with torch.no_grad():
        if kind == "exact":
            return -float(model().log_prob(test).mean()), 0.0
        if kind == "iwae":
            bounds = [model.iwae(b, particles=args.iwae, chunk=50) for b in test.split(60)]
            return -float(torch.cat(bounds).mean()), 0.0
        if kind == "discrete":  # -log P(k) less D log L: the continuous scale bits_per_dim takes
            nll = -float(model().log_prob((test * levels).floor()).mean())
            return nll - test[0].numel() * math.log(levels), 0.0
        if kind == "samples only":
            return math.nan, 0.0
        return hutchinson(model, test, args)


def hutchinson(model, test, args, shift: float = 0.0):
    """Mean and standard error of the Hutchinson PF-ODE NLL over ``--passes`` passes
    (``model(**settings)`` is the distribution; ``shift`` is added to each log-density)."""
    d = model(solver="rk4", steps=args.ode_steps, trace="hutchinson", probes=1)
    passes = torch.stack(
        [-(torch.cat([d.log_prob(b) for b in test.split(120)]) + shift).mean() for _ in range(args.passes)]
    )
    if args.check:
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


@torch.no_grad()
def draw(model, kind, n, args, levels):
    """``n`` samples on the [0, 1) scale (fixed-step solvers for the continuous families)."""
    torch.manual_seed(0)
    if kind == "hutchinson" and isinstance(model, px.Diffusion):
        return model.sample((n,), sampler="heun")
    if kind == "hutchinson":
        return model.sample((n,), solver="rk4", steps=args.sample_steps)
    if kind == "discrete":
        return (model().sample((n,)) + 0.5) / levels
    if isinstance(model, px.VAE):  # the decoder's mean, as image VAEs are shown
        return model.decode(model.prior_distribution().sample((n,)))
    return model().sample((n,))


def train(name, model, kind, train_data, args, levels):
    """Fit with the table's budget; the Autoencoder then fits its code density (two stages)."""
    data = (train_data * levels).floor() if kind == "discrete" else train_data
    augment = None if kind == "discrete" else px.datasets.Dequantize(levels)
    lr = 2e-4 if name.startswith("GAN") else 1e-3  # the GAN's measured rate (bench/digits.py)
    settings = dict(batch_size=args.batch, progress=False, seed=0)
    start = time.perf_counter()
    px.fit(model, data, steps=args.steps, lr=lr, augment=augment, **settings)
    if isinstance(model, px.Autoencoder):
        px.fit_latent(model, train_data, steps=args.steps, lr=1e-3, **settings)
    return time.perf_counter() - start


def table(args) -> None:
    train_data, test = images(args.data), images(args.data, "test")[: args.test].to(args.device)
    levels, dims = LEVELS[args.data], train_data[0].numel()
    shape = tuple(train_data.shape[1:])
    out = os.path.join(args.out, f"images-{args.data}")
    os.makedirs(out, exist_ok=True)
    classifier = train_classifier(args)
    reference = classifier.features(images(args.data, "test")[: args.samples])
    real_fd = frechet_distance(classifier.features(train_data[: args.samples]), reference)
    only = set(args.only.split(",")) if args.only else None
    rows = []

    def report(name, kind, nll, se, seconds, samples):
        samples = samples.cpu()
        fd = frechet_distance(classifier.features(samples), reference)
        grid(samples, os.path.join(out, f"{name}.png"), f"{name}, {args.data}, {args.steps} steps")
        bpd = px.datasets.bits_per_dim(nll, dims, levels) if math.isfinite(nll) else math.nan
        rows.append((name, kind, bpd, se / dims / math.log(2), fd, seconds))
        print(f"{name:<24} {bpd:.3f} ± {rows[-1][3]:.3f}  FD {fd:.2f}  ({seconds:.0f} s)", flush=True)

    for name, (build, kind) in candidates(shape, levels).items():
        skipped = name in OPTIONS or (args.data != "digits" and name in FLAT)
        if (only and name not in only) or (not only and skipped):
            continue
        torch.manual_seed(0)
        model = build().to(args.device)
        seconds = train(name, model, kind, train_data, args, levels)
        nll, se = score(model, kind, test, args, levels)
        report(name, kind, nll, se, seconds, draw(model, kind, args.samples, args, levels))
    if not only or "zuko-NSF" in only:
        seconds, log_prob, sample = zuko_nsf(train_data, args, levels)
        with torch.no_grad():
            nll = -float(log_prob(test).mean())
            report("zuko-NSF", "exact", nll, 0.0, seconds, sample(args.samples))
    if not only or "torchcfm-unet" in only:
        seconds, distribution, sample = torchcfm_unet(train_data, args, levels)
        with torch.no_grad():
            nll, se = hutchinson(distribution, 2 * test - 1, args, shift=dims * math.log(2))
            report("torchcfm-unet", "hutchinson", nll, se, seconds, sample(args.samples))
    print(f"\n{args.data} {shape}, {args.steps} steps of batch {args.batch}, {len(test)} test images scored")
    print(f"Fréchet distance of {args.samples} draws to {args.samples} test images (classifier features)")
    print(f"{'model':<24} {'scored':<13} {'bits/dim':>9} {'± se':>7} {'FD':>8} {'train s':>8}")
    for name, kind, bpd, se, fd, seconds in rows:
        print(f"{name:<24} {kind:<13} {bpd:>9.3f} {se:>7.3f} {fd:>8.2f} {seconds:>8.0f}")
    print(f"{'(training images)':<24} {'':<13} {'':>9} {'':>7} {real_fd:>8.2f}")
    print(f"sample grids: {out}/<model>.png")


def ours(shape, device):
    model = px.FlowMatching(shape).to(device)
    objective = get_objective("cfm", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        (objective.loss(model, batch, None) / batch.shape[0]).backward()
        optimizer.step()

    return model, step


def torchcfm_model(shape, device, lr=2e-4):
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
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

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
    peaks = {name: 0 for name in models}
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
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated())
            times[name].append((time.perf_counter() - start) / args.steps)
    print(f"flow-matching training step, {shape} images, batch {args.batch}, {device.type}")
    print(f"{'model':<12} {'parameters':>11} {'ms/step':>9} {'images/s':>9} {'peak MiB':>9}")
    for name, (model, _) in models.items():
        per_step = statistics.median(times[name])
        params = sum(p.numel() for p in model.parameters())
        peak = f"{peaks[name] / 2**20:>9.0f}" if device.type == "cuda" else f"{'(cuda)':>9}"
        print(f"{name:<12} {params:>11,} {1e3 * per_step:>9.1f} {args.batch / per_step:>9.1f} {peak}")
    ratio = statistics.median(times["torchcfm"]) / statistics.median(times["pyro_xform"])
    print(f"throughput, pyro_xform / torchcfm: {ratio:.2f}x (target >= 1.0)")


# The default budgets: the table in at most an hour on 2 CPU cores (Fashion-MNIST), or the
# measured digits protocol (bench/MEASUREMENTS.md). Any of them is a flag.
BUDGETS = {
    "fashion-mnist": dict(steps=400, test=100, passes=2, check=0, samples=128),
    "digits": dict(steps=2000, test=360, passes=4, check=60, samples=360),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--section", choices=("table", "throughput"), default="table")
    parser.add_argument("--data", choices=("fashion-mnist", "digits"), default="fashion-mnist")
    parser.add_argument("--steps", type=int, default=None, help="table: see BUDGETS; throughput: 5 a round")
    parser.add_argument("--test", type=int, default=None, help="table: test images scored")
    parser.add_argument("--ode-steps", type=int, default=16, help="rk4 steps of the likelihood solve")
    parser.add_argument("--sample-steps", type=int, default=8, help="rk4 steps of flow matching's draws")
    parser.add_argument("--passes", type=int, default=None, help="Hutchinson passes")
    parser.add_argument("--check", type=int, default=None, help="images of the solver check (0: none)")
    parser.add_argument("--iwae", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=None, help="draws for the grids and the FD")
    parser.add_argument("--classifier-epochs", type=int, default=3)
    parser.add_argument("--only", default=None, help="table: comma-separated model names")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.section == "table":
        for key, value in BUDGETS[args.data].items():
            setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
        args.device = torch.device(args.device)
        table(args)
    else:
        args.steps = 5 if args.steps is None else args.steps
        throughput(args, images(args.data)[:4096], torch.device(args.device))


if __name__ == "__main__":
    main()
