"""``AutoXformGuide``: an autoguide whose posterior is any exact pyro_xform family."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import nn

from ..core import Xform, XformDistribution
from ..families import FAMILIES
from ..transforms import ActNorm, Chain, TriangularAffine

__all__ = ["AutoXformGuide"]

_LINEAR = ("auto", "triangular", "diagonal")
# A full Cholesky factor has D(D-1)/2 entries: beyond this many latents it costs more
# memory and time than the flow it helps, and the diagonal affine takes its place.
_TRIANGULAR_UP_TO = 256


class AutoXformGuide(AutoContinuous):
    """A Pyro autoguide whose posterior over all continuous latents (packed into one
    unconstrained vector :math:`u`, as :class:`~pyro.infer.autoguide.AutoContinuous` does)
    is any exact pyro_xform family followed by a learned affine map:

    .. math:: q(u) = \\text{family}_\\phi \\text{ pushed through } u \\mapsto \\mu + L u,
        \\qquad \\mu = u_0,\\ L = \\texttt{init\\_scale}\\, I \\text{ at the start},

    so it starts as a Gaussian at the init location and can bend into funnels, banana
    shapes and multiple modes. The defaults, an ``"IAF"`` (its draws, all the ELBO needs,
    cost one pass) starting at unit scale, are those that measured best against Pyro's
    ``AutoIAFNormal`` and ``AutoNormalizingFlow`` in ``bench/guides.py`` (a narrow start
    must first grow to a funnel's width). :math:`L` is lower-triangular (the
    Cholesky factor of ``AutoMultivariateNormal``), so linear correlations are learned at
    a Gaussian's speed and the family only learns the rest; beyond 256 latents, or with
    ``linear="diagonal"``, :math:`L` is diagonal. Any family with an exact density
    serves: ``"NSF"``, ``"MAF"``, ``"IAF"`` (fast to sample: the ELBO only samples),
    ``"RealNVP"``, ``"FlowMatching"``, ``"Diffusion"`` (pass ``settings={"solver": "rk4",
    "steps": 8}`` for a cheap fixed-step solve), or a model instance.

    Amortized: with ``encoder`` (a module mapping the model's arguments to a vector), the
    family is conditioned on ``encoder(*args, **kwargs)``, so one guide serves every data set.

    ``median`` and ``quantiles`` are Monte Carlo estimates (``num_samples`` draws), per
    coordinate in the unconstrained space, then constrained.

    Args:
        model: a Pyro model with continuous latents.
        family: a family name from :data:`pyro_xform.FAMILIES` (default ``"IAF"``), an
            :class:`~pyro_xform.Xform` class, or a built model whose ``features`` equals the
            latent dimension.
        encoder: a module, ``encoder(*args, **kwargs) -> Tensor`` of shape ``(k,)``.
        init_loc_fn: per-site initialization (Pyro's).
        init_scale: initial posterior scale in the unconstrained space (default 1).
        linear: the affine map's factor :math:`L`: ``"triangular"``, ``"diagonal"`` or
            ``"auto"`` (triangular up to 256 latents).
        settings: keyword arguments of every call of the family (solver settings).
        **family_kwargs: constructor arguments of the family (``hidden``, ``transforms``...).

    Examples:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> def model():
        ...     a = pyro.sample("a", dist.Normal(0.0, 3.0))
        ...     pyro.sample("b", dist.Normal(0.0, torch.exp(a / 2)))
        >>> guide = AutoXformGuide(model, "NSF", hidden=(16,))
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        >>> loss = svi.step()
        >>> sorted(guide.median()), guide.quantiles([0.1, 0.9])["a"].shape
        (['a', 'b'], torch.Size([2]))

    References:
        Automatic differentiation variational inference (Kucukelbir et al., 2016,
        arXiv:1603.00788). Variational inference with normalizing flows (Rezende, Mohamed,
        2015, arXiv:1505.05770).
    """

    def __init__(
        self,
        model: Callable,
        family: str | type | Xform = "IAF",
        *,
        encoder: nn.Module | None = None,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 1.0,
        linear: str = "auto",
        settings: dict | None = None,
        **family_kwargs,
    ) -> None:
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale!r}")
        if linear not in _LINEAR:
            raise ValueError(f"linear must be one of {_LINEAR}, got {linear!r}")
        self._linear = linear
        self._family, self._family_kwargs = family, family_kwargs
        self._init_scale, self._settings = float(init_scale), dict(settings or {})
        super().__init__(model, init_loc_fn=init_loc_fn)
        self.encoder = encoder

    def _context(self, *args, **kwargs) -> torch.Tensor | None:
        if self.encoder is None:
            return None
        context = self.encoder(*args, **kwargs)
        if not isinstance(context, torch.Tensor) or context.dim() < 1:
            raise ValueError("the encoder must return a tensor of shape (k,)")
        return context

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        context = self._context(*args, **kwargs)
        k = 0 if context is None else context.shape[-1]
        family = self._family
        if isinstance(family, Xform):
            if family.features != self.latent_dim or family.context_features != k:
                raise ValueError(
                    f"the family has features={family.features}, context={family.context_features}; "
                    f"the model has {self.latent_dim} unconstrained latent dimensions, the encoder gives {k}"
                )
            xform = family
        else:
            cls = FAMILIES.get(family) if isinstance(family, str) else family
            if cls is None:
                raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
            xform = cls(self.latent_dim, k, **self._family_kwargs)
        if xform.log_prob_kind != "exact":
            raise ValueError(
                f"a guide needs an exact density; {type(xform).__name__} has {xform.log_prob_kind!r}"
            )
        loc = self._init_loc()
        # The family follows the model's latents (device and dtype), wherever it was built.
        self.xform = xform.to(dtype=loc.dtype, device=loc.device)
        self.affine = self._affine(loc)

    def _affine(self, loc: torch.Tensor) -> nn.Module:
        linear = self._linear
        if linear == "auto":
            linear = "triangular" if self.latent_dim <= _TRIANGULAR_UP_TO else "diagonal"
        if linear == "triangular":
            affine = TriangularAffine(self.latent_dim, loc, self._init_scale)
            return affine.to(dtype=loc.dtype, device=loc.device)
        affine = ActNorm(self.latent_dim).to(dtype=loc.dtype, device=loc.device)
        with torch.no_grad():
            affine.shift.copy_(loc)
            affine.log_scale.fill_(math.log(self._init_scale))
            affine.initialized.fill_(True)
        return affine

    def get_posterior(self, *args, **kwargs) -> XformDistribution:
        """The posterior over the packed unconstrained latents, given the model's arguments."""
        inner = self.xform(self._context(*args, **kwargs), **self._settings)
        # Reading the modules through the guide (a PyroModule) puts their parameters in this
        # step's trace, which is what SVI optimizes: a chain held from an earlier step alone
        # would leave the affine map's parameters out.
        chain = self._chain(inner.bijector, self.affine)
        return XformDistribution(inner.base_dist, chain, inner.context, log_prob_kind="exact")

    def _chain(self, bijector: nn.Module, affine: nn.Module) -> Chain:
        """The family's transform followed by the affine map, built once per pair (a
        discrete flow hands over the same transform every step; an ODE family may not)."""
        cached = self.__dict__.get("_chain_cache")
        if cached is None or cached[0] is not bijector or cached[1] is not affine:
            # A plain tuple, not a submodule: the parameters stay registered once.
            self.__dict__["_chain_cache"] = cached = (bijector, affine, Chain([bijector, affine]))
        return cached[2]

    @torch.no_grad()
    def _draws(self, num_samples: int, *args, **kwargs) -> torch.Tensor:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self.get_posterior(*args, **kwargs).sample((num_samples,))

    def _constrained(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            site["name"]: biject_to(site["fn"].support)(value) for site, value in self._unpack_latent(latent)
        }

    @torch.no_grad()
    def median(self, *args, num_samples: int = 1000, **kwargs) -> dict[str, torch.Tensor]:
        """Posterior medians per coordinate (Monte Carlo, ``num_samples`` draws)."""
        return self._constrained(self._draws(num_samples, *args, **kwargs).median(0).values)

    @torch.no_grad()
    def quantiles(self, quantiles, *args, num_samples: int = 1000, **kwargs) -> dict[str, torch.Tensor]:
        """Posterior quantiles per coordinate (Monte Carlo), stacked along a first dimension."""
        draws = self._draws(num_samples, *args, **kwargs)
        q = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device)
        latents = torch.quantile(draws, q, dim=0)
        result: dict[str, list[torch.Tensor]] = {}
        for latent in latents:
            for name, value in self._constrained(latent).items():
                result.setdefault(name, []).append(value)
        return {k: torch.stack(v) for k, v in result.items()}
