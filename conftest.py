"""Collection settings for the doctests under pyro_xform/ (tests/ has its own conftest)."""

import importlib.util

# The NumPyro twins need the jax extra; without it their doctests are not collected.
collect_ignore_glob = [] if importlib.util.find_spec("numpyro") else ["pyro_xform/numpyro/*"]
