"""JAX/NumPyro twins of the trained transforms: train in Pyro, run NUTS in NumPyro.

Imported on demand only (``import pyro_xform`` never loads JAX); it needs the ``jax`` extra,
``pip install "pyro-xform[jax]"``.

Examples:
    >>> import jax, numpyro, numpyro.distributions as dist, pyro_xform
    >>> from pyro_xform.numpyro import to_numpyro
    >>> prior = to_numpyro(pyro_xform.NSF(2, hidden=(8,)))
    >>> def model(y):
    ...     x = numpyro.sample("x", prior)
    ...     numpyro.sample("y", dist.Normal(x, 0.5).to_event(1), obs=y)
    >>> nuts = numpyro.infer.NUTS(model)
    >>> mcmc = numpyro.infer.MCMC(nuts, num_warmup=20, num_samples=20, progress_bar=False)
    >>> mcmc.run(jax.random.key(0), jax.numpy.zeros(2))
    >>> mcmc.get_samples()["x"].shape
    (20, 2)
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
from .export import XformDistribution, export_bijector, to_numpyro
from .ode import ODE

__all__ = ["ODE", "XformDistribution", "export_bijector", "to_numpyro", "transforms"]
