"""Bitwise regression check of every gradient path (not collected by pytest).

A refactor or speed-up must not change a gradient bit. This script computes, on small fixed
problems, the outputs and gradients of every built-in layer (``gradcheck.catalog``) and of every
trajectory-gradient driver (discrete adjoint for each stepper family and checkpoint schedule,
taped recordings, the ODE block, both continuous adjoints, NODE-EW, LM-ResNet), and either saves
them (``--save FILE.npz``) or compares them with a saved file (``--compare FILE.npz``) with
``np.array_equal``. Run ``--save`` on the code before a change and ``--compare`` after it, on the
same machine (BLAS kernels and SIMD paths differ between machines).

Run: ``python benchmarks/bitwise_reference.py --save /tmp/before.npz`` then
``python benchmarks/bitwise_reference.py --compare /tmp/before.npz``.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from adjointcore.checkpointing import Online, Revolve, StoreAll, Uniform
from adjointcore.fields import LayerField
from adjointcore.gradcheck.catalog import builtin_examples
from adjointcore.layers import (
    ELU,
    ConcatConv2d,
    ConcatLinear,
    Conv2d,
    GroupNorm,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
)
from adjointcore.sensitivity import continuous_adjoint
from adjointcore.sensitivity.discrete import discrete_adjoint, grid_forward, record_forward


def _layer_outputs(out: dict) -> None:
    for name, layer, x, kw in builtin_examples(np.random.default_rng(0)):
        kw = dict(kw)
        params = kw.pop("params", None)
        if params is None:
            params = layer.init(np.random.default_rng(1))
        y, cache = layer.forward(params, x, **kw)
        y_bar = np.random.default_rng(2).standard_normal(y.shape)
        x_bar, p_bar = layer.vjp(params, cache, y_bar)
        out[f"layer/{name}/y"] = y
        out[f"layer/{name}/x_bar"] = x_bar
        out[f"layer/{name}/params_bar"] = p_bar


def _fields():
    mlp = Sequential(Linear(3, 7), Tanh(), Linear(7, 3))
    timed = Sequential(ConcatLinear(3, 6), Softplus(), ConcatLinear(6, 6), Sigmoid(),
                       ConcatLinear(6, 3))
    kinked = Sequential(Linear(3, 6), ELU(0.7), Linear(6, 6), ReLU(), Linear(6, 3))
    conv = Sequential(ConcatConv2d(2, 4, 3, padding=1), GroupNorm(2, 4), Tanh(),
                      Conv2d(4, 2, 3, padding=1))
    return {"mlp": (mlp, (5, 3)), "timed": (timed, (4, 3)), "kinked": (kinked, (4, 3)),
            "conv": (conv, (2, 2, 5, 4)),
            "wide": (Sequential(Linear(16, 64), Tanh(), Linear(64, 16)), (64, 16))}


def _drivers(out: dict) -> None:
    rng = np.random.default_rng(3)
    for fname, (layer, shape) in _fields().items():
        field = LayerField(layer)
        params = layer.init(rng)
        y0 = rng.standard_normal(shape)
        g32 = discrete_adjoint(field, y0.astype(np.float32), params.astype(np.float32),
                               np.linspace(0.0, 0.7, 5), np.ones(shape, np.float32))
        out[f"float32/{fname}/y0_bar"], out[f"float32/{fname}/params_bar"] = \
            g32.y0_bar, g32.params_bar
        y_bar = rng.standard_normal(shape)
        grid = np.linspace(0.0, 0.7, 9)
        cases = [("rk4", None), ("rk4", StoreAll()), ("rk4", Revolve(3)), ("rk4", Uniform(3)),
                 ("rk4", Online(2)), ("euler", None), ("midpoint", None), ("dopri5", None),
                 ("tsit5", Revolve(2)), ("ab3", None), ("abm4", Revolve(2)), ("leapfrog", None)]
        for method, schedule in cases:
            g = discrete_adjoint(field, y0, params, grid, y_bar, method=method, schedule=schedule)
            key = f"discrete/{fname}/{method}/{schedule!r}"
            out[key + "/y0_bar"], out[key + "/params_bar"] = g.y0_bar, g.params_bar
        g = discrete_adjoint(field, y0, params, grid, y_bar, method="lm",
                             method_options={"k": -0.2})
        out[f"discrete/{fname}/lm/y0_bar"] = g.y0_bar
        out[f"discrete/{fname}/lm/params_bar"] = g.params_bar
        out[f"discrete/{fname}/lm/k_bar"] = np.asarray(g.method_bar["k"])
        obs = np.array([2, 5, 8, 5])
        y_bars = rng.standard_normal((4,) + shape)
        g = discrete_adjoint(field, y0, params, grid, y_bars, method="rk4", obs_steps=obs)
        out[f"discrete/{fname}/obs/y0_bar"], out[f"discrete/{fname}/obs/params_bar"] = \
            g.y0_bar, g.params_bar
        rec = record_forward(field, y0, params, grid, "bosh3")
        g = discrete_adjoint(field, y0, params, grid, y_bar, method="bosh3", recording=rec)
        out[f"recording/{fname}/y1"] = rec.states[-1][0]
        out[f"recording/{fname}/y0_bar"], out[f"recording/{fname}/params_bar"] = \
            g.y0_bar, g.params_bar
        ys, _ = grid_forward(field, y0, params, grid, "rk38", obs_steps=obs)
        out[f"grid_forward/{fname}"] = ys
        t_obs = np.array([0.4, 0.7])
        for variant in ("backsolve", "interpolated"):
            cg = continuous_adjoint(field, y0, params, t_obs, y_bars[:2], t0=0.0,
                                    variant=variant, rtol=1e-7, atol=1e-9)
            out[f"continuous/{fname}/{variant}/y0_bar"] = cg.y0_bar
            out[f"continuous/{fname}/{variant}/params_bar"] = cg.params_bar


def _blocks(out: dict) -> None:
    from adjointcore.layers import Linear as Lin
    from nets import ODEBlock
    from nets.lm_resnet import LMStack
    from nets.node_ew import CoupledField
    rng = np.random.default_rng(4)
    f = Sequential(ConcatLinear(4, 6), Tanh(), ConcatLinear(6, 4))
    for gradient, extra in (("discrete", {"steps": 6, "method": "rk4"}),
                            ("discrete", {"method": "dopri5"}),
                            ("backsolve", {"method": "dopri5"}),
                            ("interpolated", {"method": "dopri5"})):
        block = ODEBlock(f, gradient=gradient, augment=1, **extra)
        params = block.init(np.random.default_rng(5))
        x = rng.standard_normal((3, 3))
        y, cache = block.forward(params, x)
        x_bar, p_bar = block.vjp(params, cache, rng.standard_normal(y.shape))
        key = f"odeblock/{gradient}/{extra['method']}"
        out[key + "/y"], out[key + "/x_bar"], out[key + "/params_bar"] = y, x_bar, p_bar
    cf = CoupledField(Sequential(Lin(2, 4), Tanh(), Lin(4, 2)), Sequential(Lin(22, 22), Tanh()),
                      (3, 2))
    theta0, theta1 = cf.init(np.random.default_rng(6))
    y0 = cf.pack(rng.standard_normal((3, 2)), theta0)
    y_bar = rng.standard_normal(y0.shape)
    g = discrete_adjoint(cf, y0, theta1, np.linspace(0, 1, 7), y_bar, method="rk4")
    out["node_ew/y0_bar"], out["node_ew/params_bar"] = g.y0_bar, g.params_bar
    stack = LMStack([Sequential(Lin(3, 5), Tanh(), Lin(5, 3)) for _ in range(4)])
    params = stack.init(np.random.default_rng(7))
    x = rng.standard_normal((4, 3))
    y, cache = stack.forward(params, x)
    x_bar, p_bar = stack.vjp(params, cache, rng.standard_normal(y.shape))
    out["lm_stack/y"], out["lm_stack/x_bar"], out["lm_stack/params_bar"] = y, x_bar, p_bar


def _trajectories(out: dict) -> None:
    """Experiments' trajectory fits (every gradient configuration) and NODE-EW's Algorithm 1."""
    from adjointcore.layers import Linear as Lin
    from experiments._training import GradientConfig, TrajectoryProblem, loss_and_grad
    from nets.node_ew import CoupledField, node_ew_gradient
    rng = np.random.default_rng(8)
    layer = Sequential(Lin(2, 8), Tanh(), Lin(8, 2))
    params = layer.init(np.random.default_rng(9))
    t_obs = np.array([0.25, 0.5, 1.0])
    problem = TrajectoryProblem(LayerField(layer), rng.standard_normal((3, 2)), 0.0, t_obs,
                                rng.standard_normal((3, 4)), slice(0, 4))
    configs = {"euler": GradientConfig("discrete", "euler", 12),
               "rk4": GradientConfig("discrete", "rk4", 8),
               "ab3": GradientConfig("discrete", "ab3", 8),
               "backsolve": GradientConfig("backsolve", "dopri5", None, 1e-7, 1e-9),
               "interpolated": GradientConfig("interpolated", "dopri5", None, 1e-7, 1e-9)}
    for name, config in configs.items():
        loss, grad, _ = loss_and_grad(problem, params, params.size, config)
        out[f"training/{name}/loss"], out[f"training/{name}/grad"] = np.array(loss), grad
    cf = CoupledField(Sequential(Lin(2, 4), Tanh(), Lin(4, 2)), Sequential(Lin(22, 22), Tanh()),
                      (3, 2))
    theta0, theta1 = cf.init(np.random.default_rng(10))
    x0 = rng.standard_normal((3, 2))
    x_bars = rng.standard_normal((2, 3, 2))
    for name, opts in (("adaptive", {"rtol": 1e-7, "atol": 1e-9}), ("fixed", {"steps": 9})):
        for printed in (False, True):
            g = node_ew_gradient(cf, x0, theta0, theta1, [0.5, 1.0], x_bars, printed=printed,
                                 **opts)
            key = f"node_ew_gradient/{name}/{'printed' if printed else 'derived'}"
            out[key + "/x0_bar"], out[key + "/theta0_bar"] = g.x0_bar, g.theta0_bar
            out[key + "/theta1_bar"] = g.theta1_bar


def compute() -> dict:
    """Every checked array, by name."""
    out: dict = {}
    _layer_outputs(out)
    _drivers(out)
    _blocks(out)
    _trajectories(out)
    return {k: np.asarray(v) for k, v in out.items() if v is not None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", metavar="FILE")
    group.add_argument("--compare", metavar="FILE")
    args = parser.parse_args(argv)
    arrays = compute()
    if args.save:
        np.savez(args.save, **arrays)
        print(f"saved {len(arrays)} arrays to {args.save}")
        return 0
    ref = dict(np.load(args.compare))
    missing = sorted(set(ref) - set(arrays))
    changed = [k for k in sorted(set(ref) & set(arrays))
               if ref[k].shape != arrays[k].shape or not np.array_equal(ref[k], arrays[k])]
    for k in changed:
        diff = (np.max(np.abs(ref[k] - arrays[k])) if ref[k].shape == arrays[k].shape
                else "shape")
        print(f"CHANGED {k}: max |diff| = {diff}")
    for k in missing:
        print(f"MISSING {k}")
    print(f"{len(ref) - len(changed) - len(missing)} of {len(ref)} arrays bitwise equal")
    return 1 if changed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
