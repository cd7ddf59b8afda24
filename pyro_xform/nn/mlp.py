"""Small networks shared by the families: an MLP, MADE and a time-conditioned MLP for
velocity and noise fields, all conditional.

The context enters the first layer through a separate linear map that is *added*
(:math:`W_x x + W_c c`), which equals a linear layer on ``cat(x, c)`` but broadcasts
``c`` instead of copying it to every sample.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MADE", "MLP", "Residual", "TimeEmbedding", "TimeMLP", "activation_layer"]

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU}


def activation_layer(name: str) -> nn.Module:
    """An activation module by name: ``relu``, ``silu``, ``elu``, ``tanh`` or ``gelu``."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}") from None


class Residual(nn.Module):
    """Residual block :math:`h + W_2\\,\\sigma(W_1\\,\\sigma(h))` whose second layer starts
    near zero, so the block starts as the identity.

    Examples:
        >>> block = Residual(4)
        >>> h = torch.randn(3, 4)
        >>> bool((block(h) - h).abs().max() < 0.1)
        True

    References:
        Deep Residual Learning for Image Recognition (He, Zhang, Ren, Sun, 2015,
        arXiv:1512.03385).
    """

    def __init__(self, width: int, activation: str = "relu") -> None:
        super().__init__()
        out = nn.Linear(width, width)
        nn.init.uniform_(out.weight, -1e-3, 1e-3)
        nn.init.zeros_(out.bias)
        self.body = nn.Sequential(
            activation_layer(activation),
            nn.Linear(width, width),
            activation_layer(activation),
            out,
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


def check_dropout(p: float) -> None:
    """Refuse a dropout probability outside [0, 1) (1 would zero every unit)."""
    if not (isinstance(p, (int, float)) and 0 <= p < 1):
        raise ValueError(f"dropout must lie in [0, 1), got {p!r}")


def _with_dropout(layers: list[nn.Module], p: float) -> OrderedDict[str, nn.Module]:
    """The layers by their positions' names, with dropout after each but the last; the
    dropouts are named apart, so the parameters' names do not depend on ``p``."""
    named: OrderedDict[str, nn.Module] = OrderedDict()
    for i, layer in enumerate(layers):
        named[str(i)] = layer
        if p and i < len(layers) - 1 and not isinstance(layer, nn.Linear):
            named[f"dropout{i}"] = nn.Dropout(p)
    return named


class MLP(nn.Module):
    """Multilayer perceptron :math:`\\mathbb{R}^{n} \\times \\mathbb{R}^{c} \\to \\mathbb{R}^{m}`.

    With ``residual=True`` the hidden layers are :class:`Residual` blocks of one width
    between a linear first and last layer. Those blocks start as the identity, so the
    network starts as a *linear* function of its inputs and grows non-linear only as the
    data asks for it: an inductive bias that generalizes better from few examples (e.g.
    the conditioner of a flow trained on :math:`10^4` simulations).

    Args:
        in_features: input size (may be 0: the output then depends on the context only).
        out_features: output size.
        hidden: hidden layer sizes (with ``residual``: one width, one block each).
        context: context size (0: none).
        activation: activation name.
        zero_last: initialize the last layer to zero, so a transform built on it starts at
            the identity.
        residual: use residual blocks.
        dropout: the probability of zeroing each hidden unit in training, after every
            activation (after every block with ``residual``); 0 for none.

    Examples:
        >>> net = MLP(2, 3, hidden=(8,), context=1)
        >>> net(torch.randn(5, 2), torch.randn(5, 1)).shape
        torch.Size([5, 3])
        >>> MLP(2, 3, hidden=(8, 8), residual=True)(torch.randn(5, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        activation: str = "relu",
        zero_last: bool = True,
        residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError("hidden must name at least one layer size")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual blocks share one width; got hidden={hidden}")
        check_dropout(dropout)
        # With no inputs (a 1-D coupling) the first layer is a learned bias alone.
        self.first = nn.Linear(in_features, hidden[0]) if in_features else None
        self.first_bias = None if in_features else nn.Parameter(torch.zeros(hidden[0]))
        self.context_layer = nn.Linear(context, hidden[0], bias=False) if context else None
        layers: list[nn.Module]
        if residual:
            layers = [Residual(width, activation) for width in hidden]
        else:
            layers = [activation_layer(activation)]
            for a, b in itertools.pairwise(hidden):
                layers += [nn.Linear(a, b), activation_layer(activation)]
        last = nn.Linear(hidden[-1], out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.rest = nn.Sequential(_with_dropout(layers, dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.first is None:
            h = self.first_bias.expand(*x.shape[:-1], -1)
        else:
            h = self.first(x)
        if self.context_layer is not None:
            h = h + self.context_layer(context)
        return self.rest(h)


def _derivative(act: nn.Module, h: Tensor, a: Tensor) -> Tensor:
    """The derivative of activation ``act`` at ``h`` (``a = act(h)``)."""
    if isinstance(act, nn.SiLU):
        sig = torch.sigmoid(h)
        return sig * (1 + h * (1 - sig))
    if isinstance(act, nn.Tanh):
        return 1 - a * a
    if isinstance(act, nn.ReLU):
        return (h > 0).to(h.dtype)
    if isinstance(act, nn.ELU):
        return torch.where(h > 0, torch.ones_like(h), a + act.alpha)
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return torch.special.ndtr(h) + h * torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    raise NotImplementedError(f"no closed-form derivative for {act}")


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: output ``i`` depends on inputs
    ``< i`` (and on the whole context) only.

    Returns ``params_per_dim`` numbers per input dimension, shape ``(..., features, P)``.

    Args:
        features: input size :math:`D`.
        params_per_dim: outputs per dimension :math:`P`.
        hidden: hidden layer sizes.
        context: context size.
        activation: activation name.

    Examples:
        >>> made = MADE(3, 2, hidden=(16,))
        >>> made(torch.randn(4, 3)).shape
        torch.Size([4, 3, 2])

    References:
        MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray,
        Larochelle, 2015, arXiv:1502.03509).
    """

    def __init__(
        self,
        features: int,
        params_per_dim: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError("hidden must name at least one layer size")
        self.features, self.params_per_dim = features, params_per_dim
        degree_in = torch.arange(1, features + 1)
        # Hidden units of degree 0 see only the context; without one they would be wasted.
        low = 0 if (context or features == 1) else 1
        span = features - low
        degrees = [degree_in] + [torch.arange(h) % span + low for h in hidden]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(itertools.pairwise(degrees)):
            layers.append(_MaskedLinear((d_out[:, None] >= d_in[None, :]).to(torch.get_default_dtype())))
            if i == 0:
                self.context_layer = nn.Linear(context, hidden[0], bias=False) if context else None
            layers.append(activation_layer(activation))
        degree_out = degree_in.repeat_interleave(params_per_dim)
        last = _MaskedLinear((degree_out[:, None] > degrees[-1][None, :]).to(torch.get_default_dtype()))
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.first = layers[0]
        self.rest = nn.Sequential(*layers[1:], last)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.first(x)
        if self.context_layer is not None:
            h = h + self.context_layer(context)
        out = self.rest(h)
        return out.unflatten(-1, (self.features, self.params_per_dim))


class TimeEmbedding(nn.Module):
    """Fourier features of a time :math:`t \\in [0, 1]`:
    :math:`(t, \\sin 2\\pi k t, \\cos 2\\pi k t)_{k=1..K}` with :math:`K` = ``features // 2``.

    Examples:
        >>> TimeEmbedding(8)(torch.tensor(0.5)).shape
        torch.Size([9])

    References:
        Fourier Features Let Networks Learn High Frequency Functions in Low Dimensional
        Domains (Tancik et al., 2020, arXiv:2006.10739).
    """

    def __init__(self, features: int = 16) -> None:
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"time features must be an even int >= 2, got {features!r}")
        self.out_features = features + 1
        # Files written when the frequencies were a (float32) buffer still load.
        self._register_load_state_dict_pre_hook(_drop_frequencies)

    def frequencies(self, like: Tensor) -> Tensor:
        """:math:`2\\pi k`, :math:`k = 1 \\ldots K/2`, in ``like``'s dtype and on its device:
        computed, not stored, so a float64 model does not carry 2πk rounded to float32."""
        k = torch.arange(1, (self.out_features - 1) // 2 + 1, dtype=like.dtype, device=like.device)
        return (2 * math.pi) * k

    def forward(self, t: Tensor) -> Tensor:
        angle = t[..., None] * self.frequencies(t)
        return torch.cat([t[..., None], angle.sin(), angle.cos()], -1)


def _drop_frequencies(state_dict, prefix, *args) -> None:
    state_dict.pop(prefix + "frequencies", None)


class TimeMLP(nn.Module):
    """A field :math:`f(x, t, c)`: an MLP whose first layer adds the embedded time and the
    context, :math:`h_1 = W_x x + W_t\\,\\phi(t) + W_c c`. With ``film`` every hidden
    layer is modulated by the time and context as well (FiLM),
    :math:`h_k \\leftarrow h_k \\odot (1 + \\gamma_k(e)) + \\beta_k(e)` with
    :math:`e = (\\phi(t), c)` and :math:`\\gamma, \\beta` linear in :math:`e`, starting
    at zero, so the field can change its shape with time at every depth.

    A scalar time (one ODE step for the whole batch) is embedded once and broadcast; a
    time per example (training) is embedded per row.

    Args:
        features: size of ``x`` and of the output.
        context: context size (0: none).
        hidden: hidden layer sizes.
        activation: activation name (smooth ones suit ODEs: ``silu``, ``elu``, ``tanh``).
        time_features: size of the Fourier time embedding.
        zero_last: start the output layer at zero (the field starts as the zero function).
        film: modulate every hidden layer by the time and context.
        dropout: dropout after every hidden activation in training (see :class:`MLP`).

    Examples:
        >>> net = TimeMLP(2, context=3, hidden=(16,))
        >>> net(torch.randn(5, 2), torch.tensor(0.3), torch.randn(5, 3)).shape
        torch.Size([5, 2])

    References:
        FiLM: Visual Reasoning with a General Conditioning Layer (Perez, Strub, de Vries,
        Dumoulin, Courville, 2017, arXiv:1709.07871).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_features: int = 16,
        zero_last: bool = False,
        film: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.time = TimeEmbedding(time_features)
        self.net = MLP(
            features,
            features,
            hidden,
            context=self.time.out_features + context,
            activation=activation,
            zero_last=zero_last,
            dropout=dropout,
        )
        self.features, self.context_features = features, context
        self.widths = tuple(hidden)
        self.film = None
        if film:
            self.film = nn.Linear(self.time.out_features + context, 2 * sum(self.widths))
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def _first(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        net, k = self.net, self.time.out_features
        h = net.first(x) + F.linear(self.time(t), net.context_layer.weight[:, :k])
        if context is not None:
            h = h + F.linear(context, net.context_layer.weight[:, k:])
        return h

    def _modulations(self, t: Tensor, context: Tensor | None) -> list[tuple[Tensor, Tensor]]:
        """:math:`(1 + \\gamma_k, \\beta_k)` for every hidden layer, or none without FiLM."""
        if self.film is None:
            return [(None, None)] * len(self.widths)
        e = self.time(t)
        if context is not None:
            e = torch.cat([e.expand(*context.shape[:-1], -1), context], -1)
        parts = self.film(e).split([w for width in self.widths for w in (width, width)], -1)
        return [(1 + parts[2 * i], parts[2 * i + 1]) for i in range(len(self.widths))]

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        if self.film is None:
            return self.net.rest(self._first(x, t, context))
        return self.forward_and_divergence(x, t, context, divergence=False)[0]

    def forward_and_divergence(
        self, x: Tensor, t: Tensor, context: Tensor | None = None, *, divergence: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """The field and its exact divergence :math:`\\nabla_x \\cdot f = \\operatorname{tr}
        \\partial f / \\partial x`, by forward-mode differentiation written out for this
        network: the Jacobian :math:`W_L D_{L-1} W_{L-1} \\cdots D_1 W_1` (:math:`D_k` the
        activation's derivative and FiLM's scale) is carried along the layers as a
        ``(features, hidden)`` tangent per example, and only its diagonal is formed at the end.

        It costs about ``features`` forward passes, where reverse mode costs ``features``
        backward passes, and it needs no second-order graph when the divergence is
        differentiated (maximum likelihood), so both directions are cheaper.

        Examples:
            >>> net = TimeMLP(3, hidden=(8,))
            >>> x, t = torch.randn(4, 3), torch.tensor(0.5)
            >>> v, div = net.forward_and_divergence(x, t)
            >>> jac = torch.func.vmap(torch.func.jacrev(lambda y: net(y, t)))(x)
            >>> bool(torch.allclose(div, jac.diagonal(dim1=-2, dim2=-1).sum(-1), atol=1e-5))
            True
        """
        modulations = iter(self._modulations(t, context))
        h = self._first(x, t, context)
        tangent = self.net.first.weight.T if divergence else None  # d h / d x_j, shared by rows
        h, tangent = _modulated(h, tangent, next(modulations))
        layers = list(self.net.rest)
        a = h
        for layer in layers[:-1]:
            if isinstance(layer, nn.Linear):
                h = layer(a)
                tangent = None if tangent is None else tangent @ layer.weight.T
                h, tangent = _modulated(h, tangent, next(modulations))
            elif isinstance(layer, nn.Dropout):
                if layer.training:  # one mask for the units and their tangents
                    keep = layer(torch.ones_like(a))
                    a = a * keep
                    tangent = None if tangent is None else tangent * keep[..., None, :]
            else:
                a = layer(h)
                if tangent is not None:
                    tangent = _derivative(layer, h, a)[..., None, :] * tangent
        last = layers[-1]
        if tangent is None:
            return last(a), None
        return last(a), torch.einsum("...jh,jh->...", tangent, last.weight)


def _modulated(h: Tensor, tangent: Tensor | None, modulation) -> tuple[Tensor, Tensor | None]:
    scale, shift = modulation
    if scale is None:
        return h, tangent
    return h * scale + shift, None if tangent is None else tangent * scale[..., None, :]
