"""One rank of a multi-process ``fit``, launched by ``tests/test_distributed.py`` the way
``torchrun`` launches a script: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
set in the environment. Writes what the test checks to ``<out>/rank<r>.pt``.

Usage: ``python distributed_worker.py SCENARIO OUT``
"""

import os
import sys


def _data(n=96, features=2, seed=1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g, dtype=torch.float64) * 0.5 + 0.25


def mle(out, rank):
    """Maximum likelihood on 2 ranks with a validation split and a checkpoint."""
    import torch

    import pyro_xform as px

    torch.manual_seed(100 + rank)  # different initial weights: fit must broadcast rank 0's
    model = px.MAF(2, hidden=(8,), transforms=2).double()
    result = px.fit(
        model,
        _data(),
        steps=6,
        batch_size=16,
        validation=0.25,
        eval_every=3,
        seed=3,
        progress=False,
        checkpoint=os.path.join(out, "run.pt"),
    )
    return {
        "state": model.state_dict(),
        "losses": result.losses,
        "val": result.val_losses,
        "world": result.world_size,
    }


def objectives(out, rank):
    """Every objective runs on 2 ranks and keeps the ranks' parameters identical; so does a
    model of images (the same 4 numbers a row, as 1 x 2 x 2 images)."""
    import torch

    import pyro_xform as px

    data = _data(64, 4).to(torch.get_default_dtype()).clamp(-2, 2)
    models = {
        "cfm": px.FlowMatching(4, hidden=(16,)),
        "dsm": px.Diffusion(4, hidden=(16,)),
        "elbo": px.VAE(4, latent=2, hidden=(16,)),
        "reconstruction": px.Autoencoder(4, latent=2, hidden=(16,)),
        "adversarial": px.GAN(4, latent=2, hidden=(16,), discriminator_hidden=(16,)),
        "mle": px.NSF(4, hidden=(16,), transforms=2),
        "elbo-image": px.VAE((1, 2, 2), latent=2, hidden=(16,)),
    }
    states = {}
    for name, model in models.items():
        torch.manual_seed(7 + rank)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        rows = data.reshape(-1, *model.event_shape)
        objective = name.removesuffix("-image")
        result = px.fit(model, rows, objective=objective, steps=3, batch_size=16, seed=5, progress=False)
        states[name] = {"before": before, "after": model.state_dict(), "losses": result.losses}
    return states


def misconfigured(out, rank):
    """Rank 1 passes data of another shape, then data with a NaN: every rank raises the
    same clear error both times."""
    import pyro_xform as px

    errors = {}
    shape = _data(64, 2) if rank == 0 else _data(64, 2)[:50]
    nan = _data(64, 2)
    if rank == 1:
        nan[5, 0] = float("nan")
    for name, data in (("mismatch", shape), ("bad_rank", nan)):
        try:
            px.fit(px.MAF(2).double(), data, steps=2, progress=False, seed=0)
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    return errors


def dies(out, rank):
    """Rank 1 dies at its third step; rank 0 stops with a message instead of hanging."""
    import pyro_xform as px

    calls = []

    def augment(batch):
        calls.append(1)
        if rank == 1 and len(calls) == 3:
            os._exit(3)
        return batch

    try:
        px.fit(
            px.MAF(2).double(),
            _data(),
            steps=50,
            batch_size=16,
            augment=augment,
            progress=False,
            seed=0,
            distributed=px.Distributed(timeout=30.0),
        )
    except RuntimeError as e:
        return {"error": str(e)}
    return {"error": None}


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, os.environ.get("PYRO_XFORM_TEST_DTYPE", "float32")))
    scenario, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    result = globals()[scenario](out, rank)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    # Leave together, so that no rank tears its group down under a peer still talking to it,
    # and rank 0, which hosts the rendezvous store, last.
    import time

    import torch.distributed as dist

    if scenario != "dies" and dist.is_initialized():
        dist.barrier()
        world = dist.get_world_size()
        dist.destroy_process_group()
        open(os.path.join(out, f"left{rank}"), "w").close()
        deadline = time.monotonic() + 60
        while rank == 0 and time.monotonic() < deadline:
            if all(os.path.exists(os.path.join(out, f"left{r}")) for r in range(world)):
                break
            time.sleep(0.05)
        for r in range(world) if rank == 0 else ():
            if os.path.exists(os.path.join(out, f"left{r}")):
                os.remove(os.path.join(out, f"left{r}"))
    # The results are on disk and the group is gone: skip the interpreter's teardown, where
    # gloo's worker threads can still abort the process (pytorch/pytorch#179291).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
