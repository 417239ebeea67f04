"""GPU verification in one run: device gradients against the CPU's, and device timings.

Run by ``benchmarks/gpu_check.sh`` on a machine with a CUDA GPU (``--backend cupy``), and in the
test suite on the CPU device emulation (``--backend emulated --quick``, which checks that the
script itself works everywhere).

1. **Gradients.** Each test problem's float64 output and gradients are computed with NumPy and
   on the device, and compared: largest relative difference ``max|dev - cpu| / max|cpu|`` per
   array, required ``<= 1e-12`` (the same arithmetic in another order: reductions and BLAS
   kernels differ, so bitwise equality is not expected). Problems: the MLP ODE block with the
   taped discrete adjoint, ``Revolve(3)``, adaptive Dopri5 (discrete, frozen grid), backsolve and
   interpolated continuous adjoints; an augmented conv ODE block; an LM-ResNet stack;
   ANODEV2 configuration 2 with RDA weights.
2. **Timings** (median of ``--repeat``, device synchronised before the clock stops): the P1 MLP
   neural ODE (batch 1024, d 128, hidden 512, RK4 100 steps, forward + gradient) in float32 and
   float64, taped and ``Revolve(10)``; a conv ODE block (batch 64, 16 channels, 16 x 16, RK4 20
   steps).

The summary (JSON) goes to ``--out``; the exit status is 1 if a gradient is off.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

from adjointcore.checkpointing import Revolve
from adjointcore.layers import ConcatConv2d, Conv2d, GroupNorm, Linear, Sequential, Tanh

TOLERANCE = 1e-12


def backend(name):
    """``(xp, synchronize)`` for ``"cupy"`` or ``"emulated"``."""
    if name == "emulated":
        from adjointcore import device_emulation
        return device_emulation.xp, lambda: None
    import cupy
    return cupy, lambda: cupy.cuda.Device().synchronize()


def host(value):
    return value.get() if hasattr(value, "get") else np.asarray(value)


def _mlp_block(**options):
    from nets import ODEBlock
    return ODEBlock(Sequential(Linear(4, 16), Tanh(), Linear(16, 4)), t_span=(0.0, 1.0),
                    **options)


def problems():
    """``{name: (layer, x_shape, init_seed)}`` of the gradient comparison."""
    from nets import ANODEV2Block, LMStack, ODEBlock, RDAEvolution
    conv_field = Sequential(ConcatConv2d(3, 4, 3, padding=1), GroupNorm(2, 4), Tanh(),
                            ConcatConv2d(4, 3, 3, padding=1))
    rda_f = Sequential(Conv2d(2, 2, 3, padding=1), Tanh(), Conv2d(2, 2, 3, padding=1))
    return {
        "mlp taped rk4": (_mlp_block(method="rk4", steps=20), (8, 4)),
        "mlp Revolve(3) rk4": (_mlp_block(method="rk4", steps=20, schedule=Revolve(3)), (8, 4)),
        "mlp dopri5 discrete": (_mlp_block(method="dopri5", rtol=1e-7, atol=1e-9), (8, 4)),
        "mlp backsolve": (_mlp_block(gradient="backsolve", rtol=1e-7, atol=1e-9), (8, 4)),
        "mlp interpolated": (_mlp_block(gradient="interpolated", rtol=1e-7, atol=1e-9),
                             (8, 4)),
        "conv block augmented": (ODEBlock(conv_field, method="rk4", steps=6, augment=1),
                                 (2, 2, 6, 6)),
        "LM-ResNet stack": (LMStack([Sequential(Linear(4, 8), Tanh(), Linear(8, 4))
                                     for _ in range(4)]), (8, 4)),
        "ANODEV2 configuration 2": (ANODEV2Block.from_configuration(
            rda_f, RDAEvolution(rda_f, sigma="tanh"), 2), (2, 2, 6, 6)),
    }


def relative_difference(device_value, cpu_value) -> float:
    cpu_value = np.asarray(cpu_value)
    scale = max(float(np.max(np.abs(cpu_value))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(host(device_value) - cpu_value))) / scale


def compare_gradients(xp):
    """Rows ``{problem, y, x_bar, params_bar, passed}`` of relative differences."""
    rows = []
    for name, (layer, shape) in problems().items():
        rng = np.random.default_rng(0)
        params = layer.init(np.random.default_rng(1))
        x, y_bar = rng.standard_normal(shape), None
        y, cache = layer.forward(params, x)
        y_bar = np.random.default_rng(2).standard_normal(y.shape)
        cpu = (y,) + tuple(layer.vjp(params, cache, y_bar))
        d_params, d_x, d_bar = xp.asarray(params), xp.asarray(x), xp.asarray(y_bar)
        y_d, cache_d = layer.forward(d_params, d_x)
        dev = (y_d,) + tuple(layer.vjp(d_params, cache_d, d_bar))
        diffs = {key: relative_difference(d, c)
                 for key, d, c in zip(("y", "x_bar", "params_bar"), dev, cpu, strict=True)}
        rows.append({"problem": name, **diffs,
                     "passed": all(v <= TOLERANCE for v in diffs.values())})
    return rows


def _median_time(fn, sync, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_rows(xp, sync, repeat, quick):
    """Timing rows of the P1 MLP block and a conv ODE block on the device."""
    from nets import ODEBlock
    b, d, h, steps = (32, 8, 16, 10) if quick else (1024, 128, 512, 100)
    rows = []
    for dtype in (np.float32, np.float64):
        for label, schedule in (("taped", None), ("Revolve(10)", Revolve(10))):
            block = ODEBlock(Sequential(Linear(d, h), Tanh(), Linear(h, d)), t_span=(0.0, 1.0),
                             method="rk4", steps=steps, schedule=schedule)
            params = xp.asarray(block.init(np.random.default_rng(0)).astype(dtype))
            z0 = xp.asarray(np.random.default_rng(1).standard_normal((b, d)).astype(dtype))
            weights = xp.asarray(np.random.default_rng(2).standard_normal((b, d)).astype(dtype))

            def run(block=block, params=params, z0=z0, weights=weights):
                y, cache = block.forward(params, z0)
                block.vjp(params, cache, weights)
            run()                                         # warm-up (kernels compiled)
            rows.append({"problem": f"P1 MLP ({b}, {d}, {h}) RK4 {steps} steps {label}",
                         "dtype": np.dtype(dtype).name,
                         "seconds": _median_time(run, sync, repeat)})
    n, c, hw, steps = (2, 4, 8, 4) if quick else (64, 16, 16, 20)
    field = Sequential(ConcatConv2d(c, c, 3, padding=1), GroupNorm(4, c), Tanh(),
                       ConcatConv2d(c, c, 3, padding=1))
    block = ODEBlock(field, method="rk4", steps=steps)
    params = xp.asarray(block.init(np.random.default_rng(3)).astype(np.float32))
    x = xp.asarray(np.random.default_rng(4).standard_normal((n, c, hw, hw)).astype(np.float32))

    def run_conv():
        y, cache = block.forward(params, x)
        block.vjp(params, cache, xp.ones_like(y))
    run_conv()
    rows.append({"problem": f"conv ODE block ({n}, {c}, {hw}, {hw}) RK4 {steps} steps",
                 "dtype": "float32", "seconds": _median_time(run_conv, sync, repeat)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("cupy", "emulated"), default="cupy")
    parser.add_argument("--quick", action="store_true", help="small timing sizes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    xp, sync = backend(args.backend)
    gradients = compare_gradients(xp)
    for row in gradients:
        print(f"{'ok  ' if row['passed'] else 'FAIL'} {row['problem']:<28} y {row['y']:.1e}  "
              f"x_bar {row['x_bar']:.1e}  params_bar {row['params_bar']:.1e}", flush=True)
    timings = time_rows(xp, sync, args.repeat, args.quick)
    for row in timings:
        print(f"{row['seconds'] * 1e3:10.1f} ms  {row['dtype']:<8} {row['problem']}", flush=True)
    device = args.backend
    if args.backend == "cupy":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    summary = {"backend": args.backend, "device": device, "host": platform.node(),
               "tolerance": TOLERANCE, "gradients": gradients, "timings": timings,
               "passed": all(r["passed"] for r in gradients)}
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"wrote {args.out}: gradients {'all within' if summary['passed'] else 'NOT within'} "
          f"{TOLERANCE:g}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
