"""Fixed-step samplers of a diffusion: Karras et al.'s second-order deterministic (Heun) and
stochastic samplers, DPM-Solver++(2M), Euler–Maruyama on the reverse SDE, and DDIM.

Every sampler takes the noise prediction :math:`\\varepsilon_\\theta(x_s, s, c)` and the
schedule, starts from :math:`x_1` drawn from the base, and returns the data end in the
model's standardized units.

The Karras samplers work in the rescaled variable :math:`y = x_s / \\alpha_s` with noise
level :math:`\\tilde\\sigma = \\sigma_s/\\alpha_s`, where the probability-flow ODE of every
schedule reads :math:`dy/d\\tilde\\sigma = \\varepsilon_\\theta(\\alpha_s y, s)`, on the grid

.. math:: \\tilde\\sigma_i = \\Big(\\tilde\\sigma_{max}^{1/\\rho} + \\tfrac{i}{N-1}
    \\big(\\tilde\\sigma_{min}^{1/\\rho} - \\tilde\\sigma_{max}^{1/\\rho}\\big)\\Big)^{\\rho},
    \\quad i < N, \\qquad \\tilde\\sigma_N = 0,

with :math:`\\rho = 7`: steps are short near the data, where the ODE bends most.
DPM-Solver++ steps instead by equal ratios of the noise level (:func:`log_levels`, equal
steps in the log signal-to-noise ratio), as an exponential integrator should.

References:
    Elucidating the Design Space of Diffusion-Based Generative Models (Karras, Aittala,
    Aila, Laine, 2022, arXiv:2206.00364). Denoising Diffusion Implicit Models (Song, Meng,
    Ermon, 2020, arXiv:2010.02502).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..schedules import Schedule

__all__ = ["ddim", "dpm", "heun", "log_levels", "noise_levels", "reverse_sde", "stochastic"]

Noise = Callable[[Tensor, Tensor], Tensor]  # (x_s, s) -> predicted noise, context bound

#: Karras et al.'s grid exponent.
RHO = 7.0
#: The stochastic sampler's largest churn, :math:`\\sqrt 2 - 1` (the noise level at most
#: doubles its variance).
SQRT2_LESS_1 = math.sqrt(2) - 1


def noise_levels(schedule: Schedule, steps: int, eps: float, like: Tensor, rho: float = RHO) -> Tensor:
    """The :math:`N + 1` noise levels of the grid above, from :math:`s = 1` to ``eps`` and 0."""
    ends = torch.tensor([1.0, eps], dtype=like.dtype, device=like.device)
    top, bottom = schedule.noise_level(ends).pow(1 / rho)
    share = torch.arange(steps, dtype=like.dtype, device=like.device) / max(steps - 1, 1)
    levels = (top + share * (bottom - top)).pow(rho)
    return torch.cat([levels, levels.new_zeros(1)])


def log_levels(schedule: Schedule, steps: int, eps: float, like: Tensor) -> Tensor:
    """:math:`N + 1` noise levels equally spaced in :math:`\\log\\tilde\\sigma` from :math:`s = 1`
    to ``eps``, then 0: equal steps :math:`h` of the exponential integrator, which is exact
    where the data prediction is constant and whose error grows with :math:`h` elsewhere.

    Karras et al.'s grid crowds the steps at the data end; for a variance-preserving
    schedule, whose top level :math:`\\tilde\\sigma(1)` is in the hundreds, that leaves few
    steps of order one around :math:`\\tilde\\sigma \\approx 1`, where the samples form
    (``bench/diffusion.py`` measures both grids).

    Examples:
        >>> from pyro_xform.schedules import VarianceExploding
        >>> levels = log_levels(VarianceExploding(0.01, 10.0), 3, 0.0, torch.zeros(1))
        >>> [round(v, 3) for v in levels.tolist()]
        [10.0, 0.316, 0.01, 0.0]

    References:
        DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around
        10 Steps (Lu, Zhou, Bao, Chen, Li, Zhu, 2022, arXiv:2206.00927), whose "logSNR"
        time steps these are.
    """
    ends = torch.tensor([1.0, eps], dtype=like.dtype, device=like.device)
    top, bottom = schedule.noise_level(ends).log()
    share = torch.arange(steps, dtype=like.dtype, device=like.device) / max(steps - 1, 1)
    return torch.cat([torch.exp(top + share * (bottom - top)), like.new_zeros(1)])


def _slope(noise: Noise, schedule: Schedule, y: Tensor, level: Tensor) -> Tensor:
    """:math:`dy/d\\tilde\\sigma = \\varepsilon_\\theta(\\alpha_s y, s)` at the level's time."""
    s = schedule.time_of(level)
    return noise(schedule.alpha(s) * y, s)


def heun(noise: Noise, schedule: Schedule, x: Tensor, steps: int, eps: float) -> Tensor:
    """Karras et al.'s deterministic sampler: Heun's method on the probability-flow ODE,
    an Euler step into :math:`\\tilde\\sigma = 0` at the end (``2 steps - 1`` evaluations)."""
    return stochastic(noise, schedule, x, steps, eps, churn=0.0)


def stochastic(
    noise: Noise,
    schedule: Schedule,
    x: Tensor,
    steps: int,
    eps: float,
    *,
    churn: float = SQRT2_LESS_1,
    window: tuple[float, float] = (0.05, 50.0),
    inflation: float = 1.003,
) -> Tensor:
    """Karras et al.'s stochastic sampler: before each Heun step inside ``window`` of noise
    levels, noise is added to raise the level by the factor :math:`1 + \\gamma`
    (``churn`` :math:`= \\gamma \\le \\sqrt 2 - 1`), which corrects errors of earlier steps;
    ``inflation`` (:math:`S_{noise}`) offsets the detail the denoiser tends to remove."""
    if not 0 <= churn <= SQRT2_LESS_1 + 1e-12:
        raise ValueError(f"churn must lie in [0, sqrt(2) - 1], got {churn}")
    levels = noise_levels(schedule, steps, eps, x)
    y = x / schedule.alpha(levels.new_ones(()))
    low, high = window
    churned = [bool(churn) and low <= v <= high for v in levels.tolist()]  # one read, not one a step
    for i in range(steps):
        level, after = levels[i], levels[i + 1]
        if churned[i]:
            raised = level * (1 + churn)
            y = y + inflation * torch.sqrt(raised**2 - level**2) * torch.randn_like(y)
            level = raised
        slope = _slope(noise, schedule, y, level)
        moved = y + (after - level) * slope
        if i < steps - 1:  # the last step lands on level 0, where no noise is predicted
            moved = y + (after - level) * 0.5 * (slope + _slope(noise, schedule, moved, after))
        y = moved
    return y


def dpm(noise: Noise, schedule: Schedule, x: Tensor, steps: int, eps: float, grid: str = "log") -> Tensor:
    """DPM-Solver++(2M): a second-order multistep exponential integrator of the
    probability-flow ODE in the data prediction :math:`D = y - \\tilde\\sigma\\varepsilon_\\theta`,

    .. math:: y_{i+1} = \\frac{\\tilde\\sigma_{i+1}}{\\tilde\\sigma_i} y_i + \\Big(1 -
        \\frac{\\tilde\\sigma_{i+1}}{\\tilde\\sigma_i}\\Big) \\hat D_i, \\qquad
        \\hat D_i = \\Big(1 + \\frac{1}{2 r_i}\\Big) D_i - \\frac{1}{2 r_i} D_{i-1},

    with :math:`r_i = h_{i-1}/h_i` the ratio of successive steps in :math:`\\log\\tilde\\sigma`
    (first order at the first and the last step), on the levels of :func:`log_levels`
    (``grid="log"``) or Karras et al.'s (``"karras"``). One network evaluation a step, and
    exact where :math:`D` is constant along the path, so it is accurate at about 20 steps.

    References:
        DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models (Lu,
        Zhou, Bao, Chen, Li, Zhu, 2022, arXiv:2211.01095).
    """
    if grid not in ("log", "karras"):
        raise ValueError(f"grid must be 'log' or 'karras', got {grid!r}")
    levels = (log_levels if grid == "log" else noise_levels)(schedule, steps, eps, x)
    y = x / schedule.alpha(levels.new_ones(()))
    previous, last_step = None, None
    for i in range(steps):
        level, after = levels[i], levels[i + 1]
        denoised = y - level * _slope(noise, schedule, y, level)
        if i == steps - 1:  # level 0: the data prediction itself
            return denoised
        step = torch.log(level / after)
        estimate = denoised
        if previous is not None:
            half_ratio = 0.5 * step / last_step
            estimate = (1 + half_ratio) * denoised - half_ratio * previous
        ratio = after / level
        y = ratio * y + (1 - ratio) * estimate
        previous, last_step = denoised, step
    return y


def reverse_sde(noise: Noise, schedule: Schedule, x: Tensor, steps: int, eps: float) -> Tensor:
    """Euler–Maruyama on the reverse SDE :math:`dx = [f x - g^2 \\nabla \\log p_s]ds +
    g\\,d\\bar W` on a uniform grid of times; the last step returns the mean."""
    grid = torch.linspace(1.0, eps, steps + 1, dtype=x.dtype, device=x.device)
    for i in range(steps):
        s, h = grid[i], grid[i] - grid[i + 1]
        score = -noise(x, s) / schedule.sigma(s)
        x = x - h * (schedule.drift(s) * x - schedule.g2(s) * score)
        if i < steps - 1:
            x = x + torch.sqrt(schedule.g2(s) * h) * torch.randn_like(x)
    return x


def ddim(noise: Noise, schedule: Schedule, x: Tensor, steps: int, eps: float, eta: float = 0.0) -> Tensor:
    """DDIM on a uniform grid of times; ``eta`` scales DDPM's posterior noise (0 is
    deterministic, 1 is ancestral sampling)."""
    grid = torch.linspace(1.0, eps, steps + 1, dtype=x.dtype, device=x.device)
    for i in range(steps):
        s, r = grid[i], grid[i + 1]
        predicted = noise(x, s)
        a_s, a_r, sig_s, sig_r = schedule.alpha(s), schedule.alpha(r), schedule.sigma(s), schedule.sigma(r)
        clean = (x - sig_s * predicted) / a_s
        var_sr = (sig_s**2 - (a_s / a_r) ** 2 * sig_r**2).clamp_min(0)  # DDPM's posterior variance
        c = eta * torch.sqrt(var_sr) * sig_r / sig_s
        x = a_r * clean + torch.sqrt((sig_r**2 - c**2).clamp_min(0)) * predicted
        if eta > 0:
            x = x + c * torch.randn_like(x)
    return x
