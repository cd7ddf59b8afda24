"""JAX twins of the conditioner networks (MLP, MADE, TimeMLP), built from trained torch
weights. Each twin is a frozen set of arrays and a pure function of its inputs."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from torch import nn

from .. import nn as tnn

__all__ = ["Dense", "TimeDense", "array"]


def array(tensor) -> jax.Array:
    """A torch tensor as a JAX array of the same dtype (float64 needs ``jax_enable_x64``)."""
    value = np.asarray(tensor.detach().cpu().numpy())
    if value.dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "this model is float64 but JAX runs in float32; enable 64-bit JAX first "
            "(jax.config.update('jax_enable_x64', True)) or export model.float()"
        )
    return jnp.asarray(value)


def _activation(module: nn.Module):
    if isinstance(module, nn.ReLU):
        return jax.nn.relu
    if isinstance(module, nn.SiLU):
        return jax.nn.silu
    if isinstance(module, nn.Tanh):
        return jnp.tanh
    if isinstance(module, nn.ELU):
        alpha = float(module.alpha)
        return lambda h: jax.nn.elu(h, alpha)
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return lambda h: jax.nn.gelu(h, approximate=False)
    raise NotImplementedError(f"no JAX twin for the activation {module}")


def _linear(module: nn.Linear) -> tuple[jax.Array, jax.Array]:
    weight = module.weight * module.mask if hasattr(module, "mask") else module.weight
    return array(weight.T), array(module.bias)


def _layers(modules) -> tuple:
    return tuple(
        ("linear", *_linear(m))
        if isinstance(m, nn.Linear)
        else ("residual", _layers(m.body))
        if isinstance(m, tnn.Residual)
        else ("act", _activation(m))
        for m in modules
        if not isinstance(m, nn.Dropout)  # the identity outside training
    )


def _run(layers: tuple, h: jax.Array) -> jax.Array:
    for layer in layers:
        if layer[0] == "linear":
            h = h @ layer[1] + layer[2]
        elif layer[0] == "residual":
            h = h + _run(layer[1], h)
        else:
            h = layer[1](h)
    return h


@dataclass(frozen=True)
class Dense:
    """:math:`f(x, c) = L_K \\circ \\sigma \\circ \\dots \\circ \\sigma(W_x x + b + W_c c)`:
    the twin of :class:`pyro_xform.nn.MLP` (plain or residual) and
    :class:`pyro_xform.nn.MADE` (whose masks are multiplied into the weights).
    ``outputs`` reshapes the last axis, as MADE does.
    """

    first: tuple[jax.Array, jax.Array] | None
    first_bias: jax.Array | None
    context_weight: jax.Array | None
    layers: tuple
    outputs: tuple[int, ...] | None = None

    @classmethod
    def of(cls, net: nn.Module) -> Dense:
        if not isinstance(net, (tnn.MLP, tnn.MADE)):
            raise NotImplementedError(f"no JAX twin for the network {type(net).__name__}")
        first = _linear(net.first) if net.first is not None else None
        first_bias = array(net.first_bias) if getattr(net, "first_bias", None) is not None else None
        ctx = array(net.context_layer.weight.T) if net.context_layer is not None else None
        layers = _layers(net.rest)
        outputs = (net.features, net.params_per_dim) if isinstance(net, tnn.MADE) else None
        return cls(first, first_bias, ctx, layers, outputs)

    def pre(self, x: jax.Array) -> jax.Array:
        if self.first is None:
            return jnp.broadcast_to(self.first_bias, (*x.shape[:-1], self.first_bias.shape[-1]))
        weight, bias = self.first
        return x @ weight + bias

    def rest(self, h: jax.Array) -> jax.Array:
        return _run(self.layers, h)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        h = self.pre(x)
        if self.context_weight is not None:
            h = h + context @ self.context_weight
        out = self.rest(h)
        return out if self.outputs is None else out.reshape(*out.shape[:-1], *self.outputs)


@dataclass(frozen=True)
class TimeDense:
    """The twin of :class:`pyro_xform.nn.TimeMLP`: :math:`h_1 = W_x x + W_t \\phi(t) + W_c c`
    with Fourier time features :math:`\\phi(t) = (t, \\sin 2\\pi k t, \\cos 2\\pi k t)`, and
    with FiLM every hidden pre-activation scaled by :math:`1 + \\gamma_k` and shifted by
    :math:`\\beta_k`, linear in :math:`(\\phi(t), c)`."""

    net: Dense
    frequencies: jax.Array
    time_weight: jax.Array
    context_weight: jax.Array | None
    film: tuple[jax.Array, jax.Array] | None = None
    widths: tuple[int, ...] = ()

    @classmethod
    def of(cls, net: tnn.TimeMLP) -> TimeDense:
        if not isinstance(net, tnn.TimeMLP):
            raise NotImplementedError(f"no JAX twin for the field network {type(net).__name__}")
        k = net.time.out_features
        weight = net.net.context_layer.weight
        dense = Dense.of(net.net)
        return cls(
            dense,
            array(net.time.frequencies(weight)),
            array(weight[:, :k].T),
            array(weight[:, k:].T) if weight.shape[1] > k else None,
            None if net.film is None else _linear(net.film),
            net.widths,
        )

    def __call__(self, x: jax.Array, t: jax.Array, context: jax.Array | None = None) -> jax.Array:
        angle = t[..., None] * self.frequencies
        embedded = jnp.concatenate([t[..., None], jnp.sin(angle), jnp.cos(angle)], -1)
        h = self.net.pre(x) + embedded @ self.time_weight
        if context is not None:
            h = h + context @ self.context_weight
        if self.film is None:
            return self.net.rest(h)
        return self._modulated(h, embedded, context)

    def _modulated(self, h: jax.Array, embedded: jax.Array, context: jax.Array | None) -> jax.Array:
        if context is not None:
            embedded = jnp.concatenate(
                [jnp.broadcast_to(embedded, (*context.shape[:-1], embedded.shape[-1])), context], -1
            )
        weight, bias = self.film
        parts = jnp.split(
            embedded @ weight + bias, np.cumsum([w for w in self.widths for _ in (0, 1)])[:-1], -1
        )
        modulations = iter(zip(parts[0::2], parts[1::2], strict=True))
        scale, shift = next(modulations)
        h = h * (1 + scale) + shift
        for layer in self.net.layers[:-1]:
            if layer[0] == "linear":
                scale, shift = next(modulations)
                h = (h @ layer[1] + layer[2]) * (1 + scale) + shift
            else:
                h = layer[1](h)
        last = self.net.layers[-1]
        return h @ last[1] + last[2]
