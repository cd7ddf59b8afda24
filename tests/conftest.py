import os

import pyro
import pytest
import torch

os.environ.setdefault("CI", "1")  # tutorials and the demo run in smoke mode under pytest


def pytest_addoption(parser):
    group = parser.getgroup("pyro_xform")
    group.addoption(
        "--device",
        default=None,
        help="torch's default device for every test (e.g. cuda): models, data and noise are made there",
    )
    group.addoption(
        "--dtype",
        default=None,
        choices=("float32", "float64"),
        help="torch's default floating dtype for every test",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped without one")
    device = config.getoption("--device")
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise pytest.UsageError("--device cuda: this machine has no CUDA device")
        # For the whole session, so module-scoped fixtures and module-level tensors follow too.
        torch.set_default_device(device)
    dtype = config.getoption("--dtype")
    if dtype is not None:
        torch.set_default_dtype(getattr(torch, dtype))


@pytest.fixture
def device(request) -> torch.device:
    """The device the suite runs on (``--device``, default the CPU)."""
    return torch.device(request.config.getoption("--device") or "cpu")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state and a clean Pyro param store."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device (run with --device cuda on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
