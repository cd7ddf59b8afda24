"""``fit`` on 2 real processes (gloo, loopback), launched like ``torchrun`` launches them."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyro_xform as px

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path, world: int = 2, timeout: float = 120) -> list:
    """Run ``scenario`` of the worker on ``world`` processes; returns each rank's result
    (None for a rank that wrote nothing) and the exit codes."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            # The workers build their models in the suite's default dtype (pytest --dtype).
            PYRO_XFORM_TEST_DTYPE=str(torch.get_default_dtype()).removeprefix("torch."),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            p.kill()
    results = []
    for rank in range(world):
        path = out / f"rank{rank}.pt"
        results.append(torch.load(path, weights_only=False) if path.exists() else None)
    return results, [p.returncode for p in procs], logs


def _single_mle(steps, checkpoint=None):
    torch.manual_seed(100)  # rank 0's initial weights
    model = px.MAF(2, hidden=(8,), transforms=2).double()
    from distributed_worker import _data

    result = px.fit(
        model,
        _data(),
        steps=steps,
        batch_size=32,
        validation=0.25,
        eval_every=3,
        seed=3,
        progress=False,
        checkpoint=checkpoint,
    )
    return model, result


@pytest.fixture(autouse=True)
def _worker_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(WORKER.parent))


def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path):
    (r0, r1), codes, logs = launch("mle", tmp_path)
    assert codes == [0, 0], logs
    assert r0["world"] == r1["world"] == 2
    # Every rank holds the same parameters and reports the same losses.
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    assert r0["losses"] == r1["losses"] and r0["val"] == r1["val"]
    # One process with batch 2b on the same data order takes the same steps.
    model, result = _single_mle(6)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(result.losses), rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.tensor(r0["val"]), torch.tensor(result.val_losses), rtol=1e-10, atol=0)

    # Only rank 0 wrote: one checkpoint, no temporary files. It resumes on one process
    # and continues the same run as an uninterrupted single-process one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt", "rank1.pt", "run.pt"]
    resumed, again = _single_mle(10, checkpoint=tmp_path / "run.pt")
    assert again.steps == 10 and again.losses[:6] == r0["losses"]
    straight, straight_result = _single_mle(10)
    torch.testing.assert_close(
        torch.tensor(again.losses), torch.tensor(straight_result.losses), rtol=1e-9, atol=0
    )
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-9, atol=1e-12)


def test_every_objective_keeps_the_ranks_identical(tmp_path):
    (r0, r1), codes, logs = launch("objectives", tmp_path)
    assert codes == [0, 0], logs
    assert set(r0) == {"cfm", "dsm", "elbo", "reconstruction", "adversarial", "mle", "elbo-image"}
    for name in r0:
        after0, after1 = r0[name]["after"], r1[name]["after"]
        moved = False
        for key, value in after0.items():
            assert torch.equal(value, after1[key]), (name, key)
            assert torch.isfinite(value).all(), (name, key)
            moved |= not torch.equal(value, r0[name]["before"][key])
        assert moved, name
        assert r0[name]["losses"] == r1[name]["losses"], name


def test_a_misconfigured_world_fails_on_every_rank(tmp_path):
    (r0, r1), codes, logs = launch("misconfigured", tmp_path)
    assert codes == [0, 0], logs
    assert "ranks disagree on the data" in r0["mismatch"] and "rank 1: ((50, 2)" in r0["mismatch"]
    assert r1["mismatch"] == r0["mismatch"]
    assert r0["bad_rank"].startswith("rank 1: data has NaN or Inf") and "row 5" in r0["bad_rank"]
    assert r1["bad_rank"].startswith("data has NaN or Inf")


def test_a_dead_rank_stops_the_others_with_a_message(tmp_path):
    (r0, r1), codes, logs = launch("dies", tmp_path)
    assert codes == [0, 3], logs
    assert r1 is None
    assert "distributed training stopped on rank 0 of 2" in r0["error"]
    assert "Another rank probably died" in r0["error"]


def test_distributed_true_outside_a_launcher_says_how_to_launch(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        px.fit(px.MAF(2), torch.randn(8, 2), steps=1, progress=False, distributed=True)
    with pytest.raises(ValueError, match="backend"):
        px.Distributed(backend="mpi")
    with pytest.raises(ValueError, match="timeout"):
        px.Distributed(timeout=0)
