"""Volume-preserving and linear layers placed between coupling/autoregressive blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Bijector

__all__ = ["LULinear", "Permutation", "TriangularAffine"]


class Permutation(Bijector):
    """Fixed permutation of coordinates, :math:`x = z_{\\pi}`; log-determinant 0.

    Args:
        features: event size.
        order: ``"reverse"``, ``"random"`` (seeded by ``seed``) or an explicit permutation.
        seed: seed for ``order="random"``.

    Examples:
        >>> Permutation(3).forward_and_ladj(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, features: int, order="reverse", seed: int = 0) -> None:
        super().__init__(features, 0)
        if isinstance(order, str):
            if order == "reverse":
                perm = torch.arange(features - 1, -1, -1)
            elif order == "random":
                perm = torch.randperm(features, generator=torch.Generator().manual_seed(seed))
            else:
                raise ValueError(f"order must be 'reverse', 'random' or a permutation, got {order!r}")
        else:
            perm = torch.as_tensor(order, dtype=torch.long)
            if sorted(perm.tolist()) != list(range(features)):
                raise ValueError(f"order is not a permutation of range({features}): {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward_and_ladj(self, z, context=None):
        return z[..., self.perm], z.new_zeros(z.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        return x[..., self.inverse_perm], x.new_zeros(x.shape[:-1])


class LULinear(Bijector):
    """Invertible linear map :math:`x = L U z + b` with :math:`L` unit lower-triangular and
    :math:`U` upper-triangular with positive diagonal; :math:`\\log|\\det| = \\sum_i \\log U_{ii}`
    costs :math:`O(D)` and the inverse is two triangular solves. Starts at the identity.

    Examples:
        >>> layer = LULinear(3)
        >>> z = torch.randn(4, 3)
        >>> x, _ = layer.forward_and_ladj(z)
        >>> torch.allclose(layer.inverse_and_ladj(x)[0], z)
        True

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma, Dhariwal, 2018,
        arXiv:1807.03039).
    """

    def __init__(self, features: int) -> None:
        super().__init__(features, 0)
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.upper = nn.Parameter(torch.zeros(features, features))
        self.raw_diag = nn.Parameter(torch.full((features,), math.log(math.expm1(1.0))))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("_strict_lower", torch.tril(torch.ones(features, features), -1))

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """The factors :math:`L` (unit lower), :math:`U` (upper, positive diagonal) of the
        weight :math:`W = L U`, and :math:`\\log|\\det W|`."""
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        diag = F.softplus(self.raw_diag) + 1e-5
        L = self.lower * self._strict_lower + eye
        U = self.upper * self._strict_lower.T + torch.diag(diag)
        return L, U, diag.log().sum()

    def forward_and_ladj(self, z, context=None):
        L, U, ladj = self.factors()
        x = z @ (L @ U).T + self.bias
        return x, ladj.expand(x.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        L, U, ladj = self.factors()
        flat = (x - self.bias).reshape(-1, self.features).T
        y = torch.linalg.solve_triangular(L, flat, upper=False, unitriangular=True)
        z = torch.linalg.solve_triangular(U, y, upper=True).T.reshape(x.shape)
        return z, ladj.expand(x.shape[:-1])


class TriangularAffine(Bijector):
    """Full-rank affine map :math:`x = \\mu + L z` with :math:`L` lower-triangular with a
    positive diagonal :math:`e^{s}`: :math:`\\log|\\det| = \\sum_i s_i`; the inverse is one
    triangular solve. It is the Cholesky parameterization of a Gaussian's covariance
    (:math:`\\Sigma = L L^\\top`), so a flow placed before it only has to learn what is
    not Gaussian. Starts at :math:`x = \\mu + \\sigma_0 z` (``loc``, ``scale``).

    Args:
        features: event size.
        loc: initial shift :math:`\\mu` (default 0).
        scale: initial diagonal of :math:`L` (default 1).

    Examples:
        >>> layer = TriangularAffine(3, scale=0.5)
        >>> z = torch.randn(4, 3)
        >>> x, ladj = layer.forward_and_ladj(z)
        >>> torch.allclose(layer.inverse_and_ladj(x)[0], z), round(ladj[0].item(), 4)
        (True, -2.0794)

    References:
        Automatic differentiation variational inference (Kucukelbir et al., 2016,
        arXiv:1603.00788).
    """

    def __init__(self, features: int, loc: Tensor | float = 0.0, scale: float = 1.0) -> None:
        super().__init__(features, 0)
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.loc = nn.Parameter(torch.zeros(features) + torch.as_tensor(loc).detach())
        self.log_scale = nn.Parameter(torch.full((features,), math.log(scale)))
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.register_buffer("_strict_lower", torch.tril(torch.ones(features, features), -1))

    def scale_tril(self) -> Tensor:
        """:math:`L`, the lower-triangular factor."""
        return self.lower * self._strict_lower + torch.diag(self.log_scale.exp())

    def forward_and_ladj(self, z, context=None):
        x = z @ self.scale_tril().T + self.loc
        return x, self.log_scale.sum().expand(x.shape[:-1])

    def inverse_and_ladj(self, x, context=None):
        flat = (x - self.loc).reshape(-1, self.features).T
        z = torch.linalg.solve_triangular(self.scale_tril(), flat, upper=False).T.reshape(x.shape)
        return z, self.log_scale.sum().expand(x.shape[:-1])
