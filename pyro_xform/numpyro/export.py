"""``to_numpyro``: a trained torch model as a NumPyro distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as ndist
import torch

from .. import transforms as T
from ..core import Xform
from ..core import XformDistribution as TorchXformDistribution
from ..families.diffusion import ProbabilityFlow
from ..families.flow_matching import Velocity
from ..nn import TimeMLP
from ..schedules import SCHEDULES
from ..schedules import Schedule as NoiseSchedule
from . import transforms as J
from .nn import Dense, TimeDense, array
from .ode import ODE, ProbabilityFlowField, Schedule, VelocityField

__all__ = ["XformDistribution", "export_bijector", "to_numpyro"]


class XformDistribution(ndist.TransformedDistribution):
    """A NumPyro ``TransformedDistribution`` (base → data) whose ``log_prob`` inverts and
    takes the log-determinant in one pass of its :class:`~pyro_xform.numpyro.transforms.Bijector`,

    .. math:: \\log p(x) = \\log p_Z(T^{-1}(x)) - \\log\\left|\\det \\partial T/\\partial z\\right| ,

    where NumPyro's own ``TransformedDistribution`` would invert and then recompute the
    log-determinant. ``sample_and_log_prob`` draws and scores in one forward pass.

    With ``event_shape`` (an image model's, e.g. ``(1, 28, 28)``) the bijector works on the
    flat view and values are reshaped at the boundary, as in the torch model.

    Attributes:
        bijector: the transform.
        log_prob_kind: ``"exact"``, as for the torch model it came from.
    """

    def __init__(
        self, base: ndist.Distribution, bijector: J.Bijector, event_shape=None, *, validate_args=None
    ) -> None:
        self.bijector = bijector
        self.log_prob_kind = "exact"
        self.data_shape = None if event_shape is None or len(event_shape) == 1 else tuple(event_shape)
        transforms = [bijector]
        if self.data_shape is not None:
            transforms.append(ndist.transforms.ReshapeTransform(self.data_shape, base.event_shape))
        super().__init__(base, transforms, validate_args=validate_args)

    def log_prob(self, value, intermediates=None):
        if self.data_shape is not None:
            value = value.reshape((*value.shape[: value.ndim - len(self.data_shape)], -1))
        # A value broadcasts against the batch (a context's), as in the torch model.
        value = jnp.broadcast_to(
            value, jnp.broadcast_shapes(value.shape[:-1], self.batch_shape) + value.shape[-1:]
        )
        z, ladj = self.bijector.compiled("inverse")(value)
        return self.base_dist.log_prob(z) - ladj

    def sample(self, key, sample_shape=()):
        return self.sample_and_log_prob(key, sample_shape)[0]

    def sample_and_log_prob(self, key, sample_shape=()):
        z = self.base_dist.sample(key, sample_shape)
        x, ladj = self.bijector.compiled("forward")(z)
        if self.data_shape is not None:
            x = x.reshape(x.shape[:-1] + self.data_shape)
        return x, self.base_dist.log_prob(z) - ladj

    def tree_flatten(self):
        return (), (self.base_dist, self.bijector, self.data_shape)

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        return cls(*aux_data)


def _transformer(t) -> object:
    if isinstance(t, T.Affine):
        return J.Affine(t.bound)
    if isinstance(t, T.RQSpline):
        offset = float(t.derivative_offset)
        return J.RQSpline(t.bins, t.bound, t.min_width, t.min_height, t.min_derivative, offset)
    raise NotImplementedError(f"no JAX twin for the element-wise map {type(t).__name__}")


def _schedule(s: NoiseSchedule) -> Schedule:
    if SCHEDULES.get(s.name) is not type(s):
        raise NotImplementedError(f"no JAX twin for the schedule {s!r}")
    return Schedule(s.name, *s.parameters())


def _field(field) -> object:
    if isinstance(field, TimeMLP):
        return TimeDense.of(field)
    if isinstance(field, Velocity):
        skip = None if field.skip is None else _schedule(field.skip)
        return VelocityField(
            TimeDense.of(field.net), field.context, field.null_token, float(field.guidance), skip
        )
    if isinstance(field, ProbabilityFlow):
        if field.null_token:
            raise NotImplementedError("no JAX twin for a diffusion model trained with guidance_dropout yet")
        return ProbabilityFlowField(
            TimeDense.of(field.net), _schedule(field.schedule), field.gaussian_skip, field.output_scale
        )
    raise NotImplementedError(f"no JAX twin for the velocity field {type(field).__name__}")


@torch.no_grad()
def export_bijector(bijector: T.Bijector, context: jax.Array | None = None) -> J.Bijector:
    """The NumPyro twin of a torch bijector, conditioned on ``context`` (a JAX array)."""
    ctx = context if bijector.context_features else None
    if isinstance(bijector, T.Chain):
        return J.Chain([export_bijector(b, context) for b in bijector.bijectors])
    if isinstance(bijector, T.Coupling):
        return J.Coupling(
            Dense.of(bijector.net),
            _transformer(bijector.transformer),
            bijector.n_identity,
            bijector.features,
            ctx,
        )
    if isinstance(bijector, T.Autoregressive):
        return J.Autoregressive(
            Dense.of(bijector.net), _transformer(bijector.transformer), bijector.features, bijector.fast, ctx
        )
    if isinstance(bijector, T.Permutation):
        return J.Permutation(bijector.perm.cpu().numpy(), bijector.inverse_perm.cpu().numpy())
    if isinstance(bijector, T.LULinear):
        lower, upper, ladj = bijector.factors()
        return J.LULinear(array(lower), array(upper), array(bijector.bias), array(ladj))
    if isinstance(bijector, T.TriangularAffine):
        # L = (L / diag) diag: a unit lower factor times a diagonal upper one.
        tril, scale = bijector.scale_tril(), bijector.log_scale.exp()
        ladj = bijector.log_scale.sum()
        return J.LULinear(array(tril / scale), array(torch.diag(scale)), array(bijector.loc), array(ladj))
    if isinstance(bijector, T.ActNorm):
        return J.ActNorm(array(bijector.shift), array(bijector.log_scale))
    if isinstance(bijector, T.Standardize):
        return J.Standardize(array(bijector.loc), array(bijector.scale))
    if isinstance(bijector, T.Logit):
        return J.Logit(bijector.alpha, bijector.low, bijector.high)
    if isinstance(bijector, T.ConditionalStandardize):
        return J.ConditionalStandardize(
            array(bijector.loc), array(bijector.weight), array(bijector.scale_tril), ctx
        )
    if isinstance(bijector, T.ODETransform):
        s = bijector.settings
        if not s.exact:
            raise ValueError("only the exact trace exports; call the model with trace='exact'")
        return ODE(_field(bijector.field), bijector.time, s.solver, s.steps, s.rtol, s.atol, ctx)
    raise NotImplementedError(
        f"{type(bijector).__name__} has no NumPyro twin; exportable: Chain, AffineCoupling, "
        "SplineCoupling, AffineAutoregressive, SplineAutoregressive, Permutation, LULinear, "
        "TriangularAffine, ActNorm, Standardize, ConditionalStandardize, Logit, ODETransform"
    )


def _jax_context(context) -> jax.Array:
    """A context given as a JAX (or NumPy) array, concrete or traced: floating, and finite
    where its values are known."""
    context = jnp.asarray(context)
    if not jnp.issubdtype(context.dtype, jnp.floating):
        raise ValueError(f"the context must be a floating-point array, got dtype {context.dtype}")
    if not isinstance(context, jax.core.Tracer) and not bool(jnp.isfinite(context).all()):
        raise ValueError("the context has NaN or Inf values")
    return context


def to_numpyro(
    model: Xform | TorchXformDistribution, context: torch.Tensor | jax.Array | None = None, **settings
) -> XformDistribution:
    """Export a trained model (or one of its distributions) to NumPyro.

    The weights are copied as JAX arrays of the model's dtype; the result is a NumPyro
    distribution with the same base, transform, support, batch and event shapes, whose
    ``log_prob`` matches the torch one to solver and float precision, and which works as
    a prior in a NumPyro model under NUTS. Sampling takes raw (``PRNGKey``) or typed
    (``jax.random.key``) keys.

    Args:
        model: an exact-likelihood model (flow, :class:`~pyro_xform.FlowMatching`,
            :class:`~pyro_xform.Diffusion`) or a distribution it returned.
        context: the conditioning vector of a conditional model, shape ``(..., context)``;
            its batch shape becomes the distribution's. A JAX context may be a traced value
            (a parameter of a NumPyro model), so that the export is the likelihood of an
            observation: ``numpyro.sample("x", to_numpyro(model, theta), obs=x)``; the
            weights are copied anew at each trace.
        **settings: solver settings of a continuous-time model, as in calling it
            (``solver="rk4", steps=16``; fixed-step solvers are the fastest under NUTS).

    Raises:
        ValueError: a model without an exact density, a wrong context, or a float64 model
            while JAX runs in float32.

    Examples:
        >>> import jax, pyro_xform
        >>> from pyro_xform.numpyro import to_numpyro
        >>> flow = pyro_xform.MAF(2, hidden=(8,))
        >>> prior = to_numpyro(flow)
        >>> x = prior.sample(jax.random.PRNGKey(0), (3,))
        >>> x.shape, prior.log_prob(x).shape, prior.event_shape
        ((3, 2), (3,), (2,))

    References:
        Composable effects for flexible and accelerated probabilistic programming in NumPyro
        (Phan, Pradhan, Jankowiak, 2019, arXiv:1912.11554).
    """
    jax_context = None
    if isinstance(model, Xform):
        if model.log_prob_kind != "exact":
            raise ValueError(
                f"{type(model).__name__} has no exact density (log_prob_kind={model.log_prob_kind!r}); "
                "only exact families export to NumPyro"
            )
        if context is not None and not isinstance(context, torch.Tensor):
            jax_context = _jax_context(context)
            # A stand-in of the same shape builds the torch distribution (a traced context
            # has no values); on the model's device, as a CUDA model refuses a CPU one.
            context = torch.zeros(jax_context.shape, dtype=model.base_loc.dtype, device=model.device)
        distribution = model(context, **settings)
    elif isinstance(model, TorchXformDistribution):
        if settings:
            raise ValueError("solver settings apply to a model, not to a distribution it returned")
        if context is not None:
            raise ValueError("this distribution already has its context")
        distribution = model
    else:
        raise ValueError(f"to_numpyro takes a pyro_xform model or distribution, got {type(model).__name__}")
    if distribution.log_prob_kind != "exact":
        raise ValueError(f"the distribution's log_prob is {distribution.log_prob_kind!r}, not exact")
    if jax_context is not None:  # in the weights' dtype, as the torch model's own context
        ctx = jax_context.astype(array(distribution.base_dist.mean).dtype)
    else:
        ctx = None if distribution.context is None else array(distribution.context)
    bijector = export_bijector(distribution.bijector, ctx)
    base = distribution.base_dist
    loc, scale = array(base.mean), array(base.stddev)
    batch = tuple(distribution.batch_shape)
    numpyro_base = ndist.Normal(jnp.broadcast_to(loc, batch + loc.shape[-1:]), scale).to_event(1)
    return XformDistribution(numpyro_base, bijector, distribution.data_shape)
