"""Benchmark simulators of simulation-based inference, written as Pyro models
(``theta`` the parameters, ``x`` the observation), with their reference posteriors where
these are known in closed form.

Each model takes ``x=None`` (simulate) or an observed ``x``, and vectorizes under a
``pyro.plate`` (``Predictive(..., parallel=True)``).

References:
    Benchmarking simulation-based inference (Lueckmann et al., 2021, arXiv:2101.04653).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torchdiffeq import odeint

__all__ = [
    "SIMULATORS",
    "gaussian_linear",
    "gaussian_linear_posterior",
    "gaussian_mixture",
    "sir",
    "slcp",
    "two_moons",
    "two_moons_posterior",
]


def two_moons(x: Tensor | None = None) -> Tensor:
    """Two moons: :math:`\\theta \\sim U(-1, 1)^2`, :math:`a \\sim U(-\\pi/2, \\pi/2)`,
    :math:`r \\sim \\mathcal N(0.1, 0.01^2)`,

    .. math:: x = \\begin{pmatrix} r\\cos a + 0.25 \\\\ r \\sin a \\end{pmatrix}
        + \\tfrac{1}{\\sqrt 2} \\begin{pmatrix} -|\\theta_1 + \\theta_2| \\\\
        -\\theta_1 + \\theta_2 \\end{pmatrix}.

    Examples:
        >>> import pyro
        >>> pyro.poutine.trace(two_moons).get_trace().nodes["x"]["value"].shape
        torch.Size([2])
    """
    theta = pyro.sample("theta", dist.Uniform(-torch.ones(2), torch.ones(2)).to_event(1))
    a = pyro.sample("a", dist.Uniform(-math.pi / 2, math.pi / 2))
    r = pyro.sample("r", dist.Normal(0.1, 0.01))
    p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], -1)
    shift = torch.stack(
        [-(theta[..., 0] + theta[..., 1]).abs(), theta[..., 1] - theta[..., 0]], -1
    ) / math.sqrt(2)
    # The observation is exact given the nuisances: a narrow Normal keeps it a density.
    return pyro.sample("x", dist.Normal(p + shift, 1e-4).to_event(1), obs=x)


def _two_moons_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    """:math:`\\log p(x \\mid \\theta)` of two moons without the narrow observation noise,
    on the device and in the dtype of the inputs (the constants are Python numbers)."""
    shift = torch.stack(
        [-(theta[..., 0] + theta[..., 1]).abs(), theta[..., 1] - theta[..., 0]], -1
    ) / math.sqrt(2)
    p = x - shift
    p0, p1 = p[..., 0] - 0.25, p[..., 1]
    r = torch.hypot(p0, p1)
    # Polar density of (r cos a, r sin a): N(r; 0.1, 0.01) / (pi r), for cos a > 0; the
    # normal written out, as dist.Normal(0.1, 0.01) would hold float32 CPU constants.
    log_normal = -0.5 * ((r - 0.1) / 0.01) ** 2 - math.log(0.01 * math.sqrt(2 * math.pi))
    logp = log_normal - math.log(math.pi) - r.log()
    return logp.masked_fill(p0 <= 0, -math.inf)


def two_moons_posterior(x: Tensor, n: int, *, grid: int = 1000, seed: int = 0) -> Tensor:
    """``n`` draws of the exact two-moons posterior :math:`p(\\theta \\mid x)`, by
    quadrature of the closed-form likelihood on a ``grid x grid`` grid over the prior's
    box and uniform jitter within the drawn cells.

    The quadrature runs in float64 on ``x``'s device (with a generator there, seeded by
    ``seed``: draws on another device differ); the draws have ``x``'s device and dtype.

    Examples:
        >>> two_moons_posterior(torch.zeros(2), 5).shape
        torch.Size([5, 2])
    """
    if not (isinstance(x, Tensor) and x.is_floating_point() and x.shape == (2,)):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be one floating-point observation of shape (2,), got {shape}")
    device = x.device
    g = torch.Generator(device=device).manual_seed(seed)
    edges = torch.linspace(-1, 1, grid + 1, dtype=torch.float64, device=device)
    centers = 0.5 * (edges[1:] + edges[:-1])
    points = torch.cartesian_prod(centers, centers)
    logw = _two_moons_log_likelihood(points, x.to(torch.float64))
    if not torch.isfinite(logw).any():
        raise ValueError("this x has zero likelihood under every parameter in the prior box")
    idx = torch.multinomial(torch.softmax(logw, 0), n, replacement=True, generator=g)
    cell = 2.0 / grid
    jitter = (torch.rand(n, 2, generator=g, dtype=torch.float64, device=device) - 0.5) * cell
    return (points[idx] + jitter).to(x.dtype)


def gaussian_linear(x: Tensor | None = None, *, dim: int = 10) -> Tensor:
    """Gaussian linear: :math:`\\theta \\sim \\mathcal N(0, 0.1 I)`,
    :math:`x \\sim \\mathcal N(\\theta, 0.1 I)`, in ``dim`` dimensions."""
    scale = math.sqrt(0.1)
    theta = pyro.sample("theta", dist.Normal(torch.zeros(dim), scale).to_event(1))
    return pyro.sample("x", dist.Normal(theta, scale).to_event(1), obs=x)


def gaussian_linear_posterior(x: Tensor) -> dist.Distribution:
    """The exact posterior of :func:`gaussian_linear`, :math:`\\mathcal N(x / 2, 0.05 I)`."""
    return dist.Normal(x / 2, math.sqrt(0.05)).to_event(1)


def gaussian_mixture(x: Tensor | None = None) -> Tensor:
    """Gaussian mixture: :math:`\\theta \\sim U(-10, 10)^2`,

    .. math:: x \\sim \\tfrac12 \\mathcal N(\\theta, I) + \\tfrac12 \\mathcal N(\\theta, 0.01 I),

    a broad and a narrow component about one mean (the observation's density, a mixture,
    so the model has no discrete site and NUTS can run on it).

    Examples:
        >>> import pyro
        >>> pyro.poutine.trace(gaussian_mixture).get_trace().nodes["x"]["value"].shape
        torch.Size([2])

    References:
        Benchmarking simulation-based inference (Lueckmann et al., 2021, arXiv:2101.04653).
    """
    theta = pyro.sample("theta", dist.Uniform(-10 * torch.ones(2), 10 * torch.ones(2)).to_event(1))
    scales = torch.tensor([1.0, 0.1]).unsqueeze(-1)
    components = dist.Normal(theta.unsqueeze(-2), scales).to_event(1)
    mixture = dist.MixtureSameFamily(dist.Categorical(torch.full((2,), 0.5)), components)
    return pyro.sample("x", mixture, obs=x)


def slcp(x: Tensor | None = None) -> Tensor:
    """Simple likelihood, complex posterior: :math:`\\theta \\sim U(-3, 3)^5`, four i.i.d.
    2-D Gaussian draws with mean :math:`(\\theta_1, \\theta_2)`, scales :math:`\\theta_3^2,
    \\theta_4^2` and correlation :math:`\\tanh \\theta_5`; ``x`` is the 8 numbers."""
    theta = pyro.sample("theta", dist.Uniform(-3 * torch.ones(5), 3 * torch.ones(5)).to_event(1))
    s1, s2, rho = theta[..., 2] ** 2, theta[..., 3] ** 2, torch.tanh(theta[..., 4])
    cov = torch.stack(
        [torch.stack([s1**2, rho * s1 * s2], -1), torch.stack([rho * s1 * s2, s2**2], -1)], -2
    ) + 1e-6 * torch.eye(2)
    normal = dist.MultivariateNormal(theta[..., :2].unsqueeze(-2), cov.unsqueeze(-3)).expand(
        (*theta.shape[:-1], 4)
    )
    obs = None if x is None else x.unflatten(-1, (4, 2))
    draws = pyro.sample("x_points", normal.to_event(1), obs=obs)
    return pyro.deterministic("x", draws.flatten(-2), event_dim=1)


#: SIR's constants (sbibm's): population, first infected, days, binomial draws.
_SIR = dict(population=1e6, infected=1.0, days=160, count=1000)


def _sir_infected(theta: Tensor) -> Tensor:
    """The infected fraction at days 0, 17, ..., 153 of the SIR equations with contact rate
    :math:`\\beta` and recovery rate :math:`\\gamma` (float64, dopri5 at 1e-8)."""
    beta, gamma = theta[..., 0:1].double(), theta[..., 1:2].double()
    n = _SIR["population"]

    def field(t, u):
        s, i = u[..., 0:1], u[..., 1:2]
        infection = beta * s * i / n
        return torch.cat([-infection, infection - gamma * i, gamma * i], -1)

    u0 = beta.new_tensor([n - _SIR["infected"], _SIR["infected"], 0.0])
    times = torch.arange(0, _SIR["days"], 17, dtype=torch.float64, device=beta.device)
    u = odeint(field, u0.expand(*theta.shape[:-1], 3), times, rtol=1e-8, atol=1e-8, method="dopri5")
    return (u[..., 1] / n).clamp(0.0, 1.0).movedim(0, -1)


def sir(x: Tensor | None = None) -> Tensor:
    """SIR epidemic: :math:`\\beta \\sim \\mathrm{LogNormal}(\\log 0.4, 0.5^2)`,
    :math:`\\gamma \\sim \\mathrm{LogNormal}(\\log 0.125, 0.2^2)` (``theta`` =
    :math:`(\\beta, \\gamma)`), the SIR equations

    .. math:: \\dot S = -\\beta S I / N, \\quad \\dot I = \\beta S I / N - \\gamma I, \\quad
        \\dot R = \\gamma I

    over 160 days from one infected in :math:`N = 10^6`, and ``x`` the 10 counts
    :math:`\\mathrm{Binomial}(1000, I(t) / N)` at days :math:`0, 17, \\dots, 153`.

    Examples:
        >>> import pyro
        >>> pyro.poutine.trace(sir).get_trace().nodes["x"]["value"].shape
        torch.Size([10])

    References:
        A contribution to the mathematical theory of epidemics (Kermack, McKendrick, 1927).
        Benchmarking simulation-based inference (Lueckmann et al., 2021, arXiv:2101.04653).
    """
    prior = dist.LogNormal(torch.tensor([math.log(0.4), math.log(0.125)]), torch.tensor([0.5, 0.2]))
    theta = pyro.sample("theta", prior.to_event(1))
    probs = _sir_infected(theta).to(theta.dtype)
    return pyro.sample("x", dist.Binomial(_SIR["count"], probs).to_event(1), obs=x)


#: Simulators by name: (model, parameter site, observation site).
SIMULATORS = {
    "two_moons": (two_moons, "theta", "x"),
    "gaussian_linear": (gaussian_linear, "theta", "x"),
    "slcp": (slcp, "theta", "x"),
    "gaussian_mixture": (gaussian_mixture, "theta", "x"),
    "sir": (sir, "theta", "x"),
}
