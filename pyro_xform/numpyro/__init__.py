"""JAX/NumPyro twins of the trained transforms: train in Pyro, run NUTS in NumPyro.

Imported on demand only (``import pyro_xform`` never loads JAX); it needs the ``jax`` extra,
``pip install "pyro-xform[jax]"``.

Examples:
    >>> import jax, pyro_xform
    >>> from pyro_xform.numpyro import to_numpyro
    >>> flow = pyro_xform.NSF(2, hidden=(8,))
    >>> prior = to_numpyro(flow)  # a NumPyro distribution: use it in numpyro.sample
    >>> x = prior.sample(jax.random.PRNGKey(0), (4,))
    >>> prior.log_prob(x).shape, prior.support
    ((4,), RealVector(Real(), 1))
"""

try:
    import jax  # noqa: F401
    import numpyro  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"pyro_xform.numpyro needs JAX and NumPyro ({e.name} is missing); install the extra: "
        'pip install "pyro-xform[jax]"'
    ) from e

from . import transforms
from .distributions import numpyro_distribution
from .export import XformDistribution, export_bijector, to_numpyro
from .likelihood import likelihood, sample_posterior
from .ode import ODE

__all__ = [
    "ODE",
    "XformDistribution",
    "export_bijector",
    "likelihood",
    "numpyro_distribution",
    "sample_posterior",
    "to_numpyro",
    "transforms",
]
