"""Noise schedules: the Gaussian paths :math:`x_s = \\alpha_s x + \\sigma_s \\varepsilon` shared
by flow matching and diffusion.

Time runs in the diffusion convention, :math:`s = 0` at the data and :math:`s = 1` at the
noise. Flow matching uses :math:`t = 1 - s` (noise at :math:`t = 0`). Each schedule gives
:math:`\\alpha_s, \\sigma_s` and their derivatives in closed form, and the drift and
diffusion coefficients of the SDE with these marginals,

.. math:: dx = f(s)\\,x\\,ds + g(s)\\,dW, \\qquad f = \\frac{d\\log\\alpha_s}{ds}, \\quad
    g^2 = \\frac{d\\sigma_s^2}{ds} - 2 f \\sigma_s^2 .

References:
    Score-Based Generative Modeling through Stochastic Differential Equations (Song et al.,
    2020, arXiv:2011.13456). Variational Diffusion Models (Kingma, Salimans, Poole, Ho, 2021,
    arXiv:2107.00630). Flow Matching for Generative Modeling (Lipman et al., 2022,
    arXiv:2210.02747).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SCHEDULES", "CondOT", "Cosine", "Schedule", "VarianceExploding", "VariancePreserving", "schedule"]


class Schedule:
    """A Gaussian path :math:`x_s = \\alpha_s x + \\sigma_s \\varepsilon`, :math:`s \\in [0, 1]`.

    ``eps`` is the smallest :math:`s` at which a noise prediction :math:`\\varepsilon_\\theta`
    is well defined (where :math:`\\sigma_s > 0`), and the data end of a diffusion's ODE.
    """

    name = ""
    eps = 0.0

    def alpha(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def drift(self, s: Tensor) -> Tensor:
        """:math:`f(s) = \\dot\\alpha_s / \\alpha_s`."""
        return self.d_alpha(s) / self.alpha(s)

    def g2(self, s: Tensor) -> Tensor:
        """:math:`g(s)^2 = 2\\sigma_s\\dot\\sigma_s - 2 f(s)\\sigma_s^2`."""
        sigma = self.sigma(s)
        return 2 * sigma * self.d_sigma(s) - 2 * self.drift(s) * sigma**2

    def prior_scale(self) -> float:
        """Standard deviation of the base :math:`\\mathcal N(0, \\sigma^2 I)` at :math:`s = 1`."""
        return 1.0

    def noise_level(self, s: Tensor) -> Tensor:
        """:math:`\\tilde\\sigma_s = \\sigma_s / \\alpha_s`, the noise level of the rescaled
        :math:`x_s / \\alpha_s = x + \\tilde\\sigma_s \\varepsilon` (Karras et al.'s :math:`\\sigma`)."""
        return self.sigma(s) / self.alpha(s)

    def time_of(self, level: Tensor) -> Tensor:
        """The time :math:`s` at which :meth:`noise_level` is ``level`` (it increases with
        :math:`s`); by bisection unless a schedule knows the closed form."""
        lo, hi = torch.zeros_like(level), torch.ones_like(level)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.noise_level(mid) < level
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def parameters(self) -> tuple[float, ...]:
        """The constructor's arguments, in order: ``schedule(s.name, *s.parameters())``
        rebuilds ``s`` (and the NumPyro twin is built from them)."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CondOT(Schedule):
    """Conditional optimal transport (rectified flow): :math:`\\alpha_s = 1 - s`,
    :math:`\\sigma_s = \\sigma_{min} + (1 - \\sigma_{min}) s`: straight paths at constant speed.

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2022, arXiv:2210.02747). Flow
        Straight and Fast (Liu, Gong, Liu, 2022, arXiv:2209.03003).
    """

    name = "condot"

    def __init__(self, sigma_min: float = 0.0) -> None:
        if not 0 <= sigma_min < 1:
            raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min}")
        self.sigma_min = sigma_min

    def parameters(self) -> tuple[float, ...]:
        return (self.sigma_min,)

    def alpha(self, s):
        return 1 - s

    def sigma(self, s):
        return self.sigma_min + (1 - self.sigma_min) * s

    def d_alpha(self, s):
        return torch.full_like(s, -1.0)

    def d_sigma(self, s):
        return torch.full_like(s, 1 - self.sigma_min)


class Cosine(Schedule):
    """:math:`\\alpha_s = \\cos(\\pi s / 2)`, :math:`\\sigma_s = \\sin(\\pi s / 2)`
    (variance preserving, :math:`\\alpha^2 + \\sigma^2 = 1`).

    References:
        Improved Denoising Diffusion Probabilistic Models (Nichol, Dhariwal, 2021,
        arXiv:2102.09672).
    """

    name = "cosine"

    def alpha(self, s):
        return torch.cos(0.5 * math.pi * s)

    def sigma(self, s):
        return torch.sin(0.5 * math.pi * s)

    def d_alpha(self, s):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * s)

    def d_sigma(self, s):
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * s)


class VariancePreserving(Schedule):
    """The VP SDE :math:`dx = -\\tfrac12\\beta(s)x\\,ds + \\sqrt{\\beta(s)}\\,dW` with a linear
    :math:`\\beta(s) = \\beta_{min} + s(\\beta_{max} - \\beta_{min})`:
    :math:`\\alpha_s = e^{-B(s)/2}`, :math:`B(s) = \\int_0^s \\beta`, :math:`\\sigma_s^2 = 1 - \\alpha_s^2`.

    References:
        Score-Based Generative Modeling through Stochastic Differential Equations (Song et
        al., 2020, arXiv:2011.13456).
    """

    name = "vp"
    eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def parameters(self) -> tuple[float, ...]:
        return (self.beta_min, self.beta_max)

    def beta(self, s):
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def integral(self, s):
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def alpha(self, s):
        return torch.exp(-0.5 * self.integral(s))

    def sigma(self, s):
        return torch.sqrt(-torch.expm1(-self.integral(s)))

    def d_alpha(self, s):
        return -0.5 * self.beta(s) * self.alpha(s)

    def d_sigma(self, s):
        return 0.5 * self.beta(s) * self.alpha(s) ** 2 / self.sigma(s)

    def drift(self, s):
        return -0.5 * self.beta(s)

    def time_of(self, level):
        # B(s) = log(1 + level^2), a quadratic in s
        spread = self.beta_max - self.beta_min
        integral = torch.log1p(level**2)
        return (torch.sqrt(self.beta_min**2 + 2 * spread * integral) - self.beta_min) / spread

    def g2(self, s):
        return self.beta(s)

    def __repr__(self) -> str:
        return f"VariancePreserving(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VarianceExploding(Schedule):
    """The VE SDE :math:`dx = \\sqrt{d\\sigma_s^2/ds}\\,dW` with a geometric
    :math:`\\sigma_s = \\sigma_{min}(\\sigma_{max}/\\sigma_{min})^s` and :math:`\\alpha_s = 1`;
    the base is :math:`\\mathcal N(0, \\sigma_{max}^2 I)`.

    References:
        Score-Based Generative Modeling through Stochastic Differential Equations (Song et
        al., 2020, arXiv:2011.13456).
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def parameters(self) -> tuple[float, ...]:
        return (self.sigma_min, self.sigma_max)

    def alpha(self, s):
        return torch.ones_like(s)

    def sigma(self, s):
        return self.sigma_min * torch.exp(s * self.log_ratio)

    def d_alpha(self, s):
        return torch.zeros_like(s)

    def d_sigma(self, s):
        return self.sigma(s) * self.log_ratio

    def drift(self, s):
        return torch.zeros_like(s)

    def prior_scale(self) -> float:
        return math.sqrt(self.sigma_max**2 + 1.0)  # noise plus the standardized data

    def time_of(self, level):
        return torch.log(level / self.sigma_min) / self.log_ratio

    def __repr__(self) -> str:
        return f"VarianceExploding(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


#: Schedules by name.
SCHEDULES = {"condot": CondOT, "cosine": Cosine, "vp": VariancePreserving, "ve": VarianceExploding}


def schedule(name: str, *args: float, **kwargs: float) -> Schedule:
    """The schedule called ``name`` (``condot``, ``cosine``, ``vp``, ``ve``) with these
    arguments.

    Examples:
        >>> schedule("vp", beta_max=10.0).parameters()
        (0.1, 10.0)
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}")
    return SCHEDULES[name](*args, **kwargs)
