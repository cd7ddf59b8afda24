"""Coupling layers: half of the vector passes unchanged and conditions an element-wise
map of the other half, so both directions cost one network pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..nn import MLP
from .base import Bijector
from .elementwise import Affine, RQSpline

__all__ = ["AffineCoupling", "Coupling", "SplineCoupling"]


class Coupling(Bijector):
    """Coupling layer :math:`x_A = z_A,\\; x_B = \\tau(z_B; \\theta(z_A, c))`.

    The first ``features // 2`` coordinates form :math:`A` (put a :class:`Permutation`
    between layers so every coordinate is transformed). The log-determinant is
    :math:`\\sum_{i \\in B} \\log \\tau'(z_i)`.

    Args:
        features: event size.
        transformer: element-wise map (:class:`Affine` or :class:`RQSpline`).
        context: context size.
        hidden: hidden sizes of the conditioner MLP.
        activation: activation of the conditioner.
        residual: a conditioner of residual blocks (see :class:`pyro_xform.nn.MLP`).

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016,
        arXiv:1605.08803).
    """

    def __init__(
        self,
        features: int,
        transformer,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        residual: bool = False,
    ) -> None:
        super().__init__(features, context)
        self.transformer = transformer
        self.n_identity = features // 2
        n_out = features - self.n_identity
        self.net = MLP(
            self.n_identity,
            n_out * transformer.params_per_dim,
            hidden,
            context,
            activation,
            residual=residual,
        )

    def _map(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        a, b = v[..., : self.n_identity], v[..., self.n_identity :]
        p = self.net(a, context).unflatten(-1, (self.features - self.n_identity, -1))
        b, ladj = (self.transformer.inverse if inverse else self.transformer.forward)(b, p)
        a = a.expand(b.shape[:-1] + a.shape[-1:])
        return torch.cat((a, b), -1), ladj.sum(-1)

    def forward_and_ladj(self, z, context=None):
        return self._map(z, context, inverse=False)

    def inverse_and_ladj(self, x, context=None):
        return self._map(x, context, inverse=True)


class AffineCoupling(Coupling):
    """Affine coupling (RealNVP): :math:`x_B = z_B \\odot e^{s(z_A, c)} + t(z_A, c)`.

    Examples:
        >>> layer = AffineCoupling(4)
        >>> x, ladj = layer.forward_and_ladj(torch.randn(3, 4))
        >>> x.shape, ladj.shape
        (torch.Size([3, 4]), torch.Size([3]))

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein, Bengio, 2016,
        arXiv:1605.08803).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        log_scale_bound: float = 5.0,
        residual: bool = False,
    ) -> None:
        super().__init__(features, Affine(log_scale_bound), context, hidden, activation, residual)


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (NSF-C) with identity tails outside ``[-bound, bound]``.

    Examples:
        >>> layer = SplineCoupling(2, bins=4)
        >>> x, ladj = layer.forward_and_ladj(torch.randn(3, 2))
        >>> x.shape, ladj.shape
        (torch.Size([3, 2]), torch.Size([3]))

    References:
        Neural Spline Flows (Durkan, Bekasov, Murray, Papamakarios, 2019, arXiv:1906.04032).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        bins: int = 8,
        bound: float = 5.0,
        residual: bool = False,
    ) -> None:
        super().__init__(features, RQSpline(bins, bound), context, hidden, activation, residual)
