"""Continuous-time families against zuko and Meta's flow_matching, and against NSF, one run.

1. Likelihood: time to compute the exact log-likelihood of N 2-D points (default 20 000)
   with the same trained velocity network and the same dopri5 tolerances, in pyro_xform,
   zuko's ``FreeFormJacobianTransform`` (exact trace) and flow_matching's
   ``compute_likelihood`` (exact divergence). Accuracy is the mean |error| against a float64
   solve at 1e-9. Then the same with the gradient (backward pass) for a training batch.
2. Test NLL of FlowMatching and Diffusion against NSF on checkerboard and 8gaussians, each
   trained for the same wall-clock budget.
3. Sample quality (sliced W1 to held-out data) against NFE for Euler, midpoint and RK4, with
   independent and minibatch-OT coupling (same steps, batch 256).

    pip install -e ".[bench]"
    python bench/continuous.py [--threads 2] [--points 20000] [--budget 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyro_xform as px
from pyro_xform.metrics import sliced_wasserstein


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def likelihood(args) -> None:
    print(f"\n== 1. exact log-likelihood of {args.points} points, dopri5 rtol=atol={args.tol:g} ==")
    train, test = px.datasets.load("checkerboard", n_train=20_000, n_test=args.points)
    torch.manual_seed(0)
    model = px.FlowMatching(2)
    px.fit(
        model, train, steps=args.fm_steps, batch_size=512, lr=5e-3, schedule="cosine", progress=False, seed=0
    )
    model.eval()
    net = model.network
    y = model.standardizer.inverse_and_ladj(test)[0].detach()  # every solver sees standardized data
    normal = torch.distributions.Normal(0.0, 1.0)

    def log_p0(z):
        return normal.log_prob(z).sum(-1)

    with torch.no_grad():
        ref_model = px.FlowMatching(2)
        ref_model.load_state_dict(model.state_dict())
        ref_ode = ref_model.double().ode
        ode64 = ref_ode.configured(ref_ode.settings.replace(rtol=1e-9, atol=1e-9))
        z, ladj = ode64.inverse_and_ladj(y.double())
        reference = (log_p0(z) - ladj).float()

    rows, grad_rows = {}, {}
    y_grad = y[: args.grad_points]

    at_tolerance = {}  # library: log-likelihood of points at a tolerance, no gradient

    def ours(points, grad, tol=args.tol):
        ode = model.ode.configured(model.ode.settings.replace(rtol=tol, atol=tol))
        with torch.set_grad_enabled(grad):
            z, ladj = ode.inverse_and_ladj(points)
            lp = log_p0(z) - ladj
            if grad:
                lp.mean().backward()
        return lp.detach(), ode.nfe

    at_tolerance["pyro_xform"] = lambda tol: ours(y, False, tol)
    rows["pyro_xform"] = timed(lambda: ours(y, False), args.repeats)
    grad_rows["pyro_xform"] = timed(lambda: ours(y_grad, True), args.repeats)

    try:
        import zuko  # noqa: F401  (switches off torch's argument validation; restored below)
        from zuko.transforms import FreeFormJacobianTransform

        validate = torch.distributions.Distribution._validate_args

        def zuko_lp(points, grad, tol=args.tol):
            ffj = FreeFormJacobianTransform(
                lambda t, x: net(x, t), 0.0, 1.0, phi=tuple(net.parameters()), atol=tol, rtol=tol
            )
            with torch.set_grad_enabled(grad):
                z, ladj = ffj.inv.call_and_ladj(points)
                lp = log_p0(z) + ladj
                if grad:
                    lp.mean().backward()
            return lp.detach(), None

        at_tolerance["zuko FFJ (exact)"] = lambda tol: zuko_lp(y, False, tol)
        rows["zuko FFJ (exact)"] = timed(lambda: zuko_lp(y, False), args.repeats)
        grad_rows["zuko FFJ (exact)"] = timed(lambda: zuko_lp(y_grad, True), args.repeats)
        torch.distributions.Distribution.set_default_validate_args(validate)
    except ImportError:
        print("  (zuko not installed)")

    try:
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        class Wrapped(ModelWrapper):
            def forward(self, x, t, **extras):
                return self.model(x, t)

        solver = ODESolver(Wrapped(net))

        def fm_lp(points, grad, tol=args.tol):
            _, lp = solver.compute_likelihood(
                points,
                log_p0,
                step_size=None,
                method="dopri5",
                atol=tol,
                rtol=tol,
                exact_divergence=True,
                enable_grad=grad,
            )
            if grad:
                lp.mean().backward()
            return lp.detach(), None

        at_tolerance["flow_matching (exact)"] = lambda tol: fm_lp(y, False, tol)
        rows["flow_matching (exact)"] = timed(lambda: fm_lp(y, False), args.repeats)
        try:
            grad_rows["flow_matching (exact)"] = timed(lambda: fm_lp(y_grad, True), args.repeats)
        except RuntimeError:  # its log-likelihood carries no gradient to the parameters
            grad_rows["flow_matching (exact)"] = None
    except ImportError:
        print("  (flow_matching not installed)")

    base = rows["pyro_xform"][0]
    print(f"  {'library':<24}{'seconds':>9}{'x ours':>8}{'mean |err|':>12}{'NFE':>6}")
    for name, (secs, (lp, nfe)) in rows.items():
        err = float((lp - reference).abs().mean())
        print(f"  {name:<24}{secs:>9.2f}{secs / base:>8.2f}{err:>12.2e}{nfe if nfe else '':>6}")
    time_to_accuracy(at_tolerance, reference, args.repeats)
    print(f"\n  log-likelihood and its gradient (backward) for {y_grad.shape[0]} points (training by MLE):")
    base = grad_rows["pyro_xform"][0]
    for name, row in grad_rows.items():
        if row is None:
            print(f"  {name:<24}{'n/a: no gradient reaches the parameters':>48}")
        else:
            print(f"  {name:<24}{row[0]:>9.2f}{row[0] / base:>8.2f}")


#: The accuracy every library must reach, in mean |error| of the log-likelihood (nats).
ACCURACY = 1e-3


def time_to_accuracy(at_tolerance: dict, reference: torch.Tensor, repeats: int) -> None:
    """The fastest dopri5 tolerance (rtol = atol, tried from loose to tight) at which each
    library's log-likelihood is within :data:`ACCURACY` of the float64 reference, and its time."""
    print(f"\n  time to a mean |error| <= {ACCURACY:g} nats (dopri5, the loosest tolerance that reaches it):")
    best = {}
    for name, at in at_tolerance.items():
        for tol in (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6):
            err = float((at(tol)[0] - reference).abs().mean())
            if err <= ACCURACY:
                best[name] = (tol, timed(lambda at=at, tol=tol: at(tol), repeats)[0], err)
                break
        else:
            best[name] = None
    base = best["pyro_xform"][1] if best.get("pyro_xform") else float("nan")
    for name, row in best.items():
        if row is None:
            print(f"  {name:<24}  does not reach it at 3e-6")
        else:
            tol, secs, err = row
            print(f"  {name:<24}{secs:>9.2f}{secs / base:>8.2f}{err:>12.2e}  at {tol:g}")


def per_step_seconds(model, data, lr):
    result = px.fit(model, data, steps=30, batch_size=512, lr=lr, progress=False, seed=0)
    return result.seconds / 30


def nll_at_budget(args) -> None:
    print(f"\n== 2. test NLL after {args.budget:g} s of training each (batch 512, cosine lr) ==")
    print(f"  {'data':<14}{'family':<14}{'steps':>7}{'train s':>9}{'test NLL':>10}{'sliced W1':>10}")
    for name in ("checkerboard", "8gaussians"):
        train, test = px.datasets.load(name, n_train=20_000, n_test=5_000)
        for family, lr in (("NSF", 5e-3), ("FlowMatching", 5e-3), ("Diffusion", 5e-3)):
            torch.manual_seed(0)
            step = per_step_seconds(px.FAMILIES[family](2), train, lr)
            steps = max(50, int(args.budget / step))
            torch.manual_seed(0)
            model = px.FAMILIES[family](2)
            result = px.fit(
                model, train, steps=steps, batch_size=512, lr=lr, schedule="cosine", progress=False, seed=0
            )
            model.eval()
            with torch.no_grad():
                dist = model()
                nll = float(-dist.log_prob(test).mean())
                swd = sliced_wasserstein(dist.sample((test.shape[0],)), test)
            print(
                f"  {name:<14}{family:<14}{steps:>7}{result.seconds:>9.1f}{nll:>10.3f}{swd:>10.3f}",
                flush=True,
            )


def quality_vs_nfe(args) -> None:
    print(
        f"\n== 3. sliced W1 to held-out data against NFE (8gaussians, {args.cfm_steps} steps, batch 256) =="
    )
    train, test = px.datasets.load("8gaussians", n_train=20_000, n_test=5_000)
    floor = sliced_wasserstein(px.datasets.toy("8gaussians", test.shape[0], seed=7), test)
    print(f"  (a second draw of the data scores {floor:.3f})")
    nfes = (4, 8, 16, 32, 64)
    print(f"  {'coupling':<13}{'solver':<10}" + "".join(f"{n:>8}" for n in nfes) + f"{'train s':>9}")
    for coupling in ("independent", "ot"):
        torch.manual_seed(0)
        model = px.FlowMatching(2, coupling=coupling)
        result = px.fit(
            model,
            train,
            steps=args.cfm_steps,
            batch_size=256,
            lr=5e-3,
            schedule="cosine",
            progress=False,
            seed=0,
        )
        model.eval()
        for solver, per_step in px.transforms.FIXED_STEP_SOLVERS.items():
            cells = []
            for nfe in nfes:
                if nfe % per_step:
                    cells.append(f"{'':>8}")
                    continue
                torch.manual_seed(1)
                x = model.sample((test.shape[0],), solver=solver, nfe=nfe)
                cells.append(f"{sliced_wasserstein(x, test):>8.3f}")
            print(f"  {coupling:<13}{solver:<10}" + "".join(cells) + f"{result.seconds:>9.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grad-points", type=int, default=2048)
    parser.add_argument("--fm-steps", type=int, default=1500, help="training steps of the timed network")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per model in part 2")
    parser.add_argument("--cfm-steps", type=int, default=3000)
    parser.add_argument("--parts", default="123")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    started = time.perf_counter()
    if "1" in args.parts:
        likelihood(args)
    if "2" in args.parts:
        nll_at_budget(args)
    if "3" in args.parts:
        quality_vs_nfe(args)
    print(f"\ndone in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
