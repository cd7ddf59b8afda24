import os

import pyro
import pytest
import torch

os.environ.setdefault("CI", "1")  # tutorials and the demo run in smoke mode under pytest


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state and a clean Pyro param store."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
