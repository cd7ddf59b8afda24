"""Session settings for the whole suite (tests/ has its own conftest for the fixtures)."""

import importlib.util
import os

import torch

# The NumPyro twins need the jax extra; without it their doctests are not collected.
collect_ignore_glob = [] if importlib.util.find_spec("numpyro") else ["pyro_xform/numpyro/*"]


def pytest_configure(config):
    # Under pytest-xdist (pyproject's addopts run one worker a core) each worker computes on
    # one thread: two workers of two threads each on two cores run slower than one process.
    # Subprocesses the tests start (the distributed ranks, the CLI) inherit the setting.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
