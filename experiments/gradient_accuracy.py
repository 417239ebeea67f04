"""Gradient accuracy of discretise-then-optimise vs optimise-then-discretise (DTO vs OTD).

For three small float64 systems with the same loss ``L = <w, x(1)>``

* ``node_ew``: the NODE-EW coupled system ``x' = f(x, t, theta)``, ``theta' = g(theta, t,
  theta1)`` (:class:`nets.node_ew.CoupledField`), gradient w.r.t. ``(x0, theta0, theta1)``;
* ``node``: the plain neural ODE ``x' = f(x, t, theta0)`` (``g = 0``), w.r.t. ``(x0, theta0)``;
* ``anodev2``: its discrete block with
  ``LayerEvolution(g)``, whose ``n_z = n_w = N`` scheme is forward Euler on the NODE-EW system,

each gradient method is compared with a converged reference of the ODE gradient (the
interpolated continuous adjoint at rtol 1e-12; its agreement with the discrete adjoint of a very
fine RK4 map is recorded too). DTO rows: the discrete adjoint on Euler/RK4 fixed grids and on the
frozen accepted grid of Dopri5 (exact gradients of the discrete maps, converging to the ODE
gradient at the method's order). OTD rows: backsolve, interpolated and seminorm continuous
adjoints at several tolerances. Each row: relative error (2-norm, all blocks and per block),
forward and backward NFE, wall time. Output: HDF5 (table + metrics) and a PNG of error vs NFE.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from adjointcore.fields import LayerField
from adjointcore.layers import ConcatLinear, Linear, Sequential, Tanh
from adjointcore.sensitivity import continuous_adjoint, discrete_adjoint, trajectory_gradient
from nets.anodev2 import ANODEV2Block, LayerEvolution
from nets.node_ew import CoupledField

from . import durable
from ._plotting import PLOT_MODULES, caption, draw, new_figure, save_figure
from ._progress import log

__all__ = ["run", "make_config", "build_systems", "CONFIGS"]

CONFIGS = {
    True: dict(euler=[4, 16], rk4=[2, 8], dopri5_rtol=[1e-4], cont_rtol=[1e-4, 1e-7],
               ref_rtol=1e-11, ref_rk4_steps=256, anodev2_steps=[4, 16], width=6),
    False: dict(euler=[4, 16, 64, 256, 1024], rk4=[2, 4, 8, 16, 32, 64],
                dopri5_rtol=[1e-3, 1e-6, 1e-9], cont_rtol=[1e-3, 1e-5, 1e-7, 1e-9],
                ref_rtol=1e-12, ref_rk4_steps=2048, anodev2_steps=[4, 16, 64, 256], width=8),
}
T1 = 1.0


def build_systems(width: int, seed: int):
    """The shared f, g, x0, theta0, theta1 and cotangent ``w`` of x(1)."""
    rng = np.random.default_rng(seed)
    d, n = 2, 4
    f = Sequential(ConcatLinear(d, width), Tanh(), Linear(width, d))
    m = f.n_params
    g = Sequential(ConcatLinear(m, m), Tanh())
    field = CoupledField(f, g, (n, d))
    theta0, theta1 = field.init(rng)
    return dict(field=field, f=f, g=g, x0=rng.standard_normal((n, d)), theta0=theta0,
                theta1=0.5 * theta1, w=rng.standard_normal((n, d)))


def _problem(sys_, name):
    """``(field, y0, params, y_bar, split)`` of the system as one ODE."""
    x0, th0, w = sys_["x0"], sys_["theta0"], sys_["w"]
    if name == "node":
        return LayerField(sys_["f"]), x0, th0, w, lambda y0b, pb: [y0b, pb]
    field = sys_["field"]
    y_bar = np.zeros(field.layout.size)
    y_bar[:field.layout.n_x] = w.ravel()
    return field, field.pack(x0, th0), sys_["theta1"], y_bar, \
        lambda y0b, pb: [*field.unpack(y0b), pb]


def _row(system, family, setting, blocks, ref, fwd, bwd, wall):
    flat, ref_flat = np.concatenate([b.ravel() for b in blocks]), np.concatenate(
        [b.ravel() for b in ref])
    err = float(np.linalg.norm(flat - ref_flat) / np.linalg.norm(ref_flat))
    per = [float(np.linalg.norm(b - r) / max(np.linalg.norm(r), 1e-300))
           for b, r in zip(blocks, ref, strict=False)]
    names = ["x0", "theta0", "theta1"][:len(per)]
    return {"system": system, "family": family, "setting": setting, "rel_error": err,
            **{f"rel_error_{k}": v for k, v in zip(names, per, strict=False)},
            "forward_nfe": int(fwd), "backward_nfe": int(bwd), "wall_s": float(wall)}


def _timed_gradient(field, y0, params, y_bar, **options):
    """``trajectory_gradient`` of ``<y_bar, y(T1)>`` from ``t = 0`` and its wall time."""
    start = time.perf_counter()
    g = trajectory_gradient(field, y0, params, [T1], y_bar[None], t0=0.0, **options)
    return g, time.perf_counter() - start


def _work_row(system, family, setting, g, split, ref, wall):
    """A row whose work is the gradient's: forward evaluations of the first forward phase (an
    adaptive solve and its rejected steps included); backward: VJPs plus evaluations spent in
    reverse (recomputed steps and stages, or the augmented backward system)."""
    work = g.stats
    backward = work.backward_nfe if family.startswith("OTD") else work.vjps + work.backward_nfe
    return _row(system, family, setting, split(g.y0_bar, g.params_bar), ref, work.forward_nfe,
                backward, wall)


def _discrete_rows(system, field, y0, params, y_bar, split, ref, cfg):
    rows = []
    for method, steps_list in (("euler", cfg["euler"]), ("rk4", cfg["rk4"])):
        for steps in steps_list:
            g, wall = _timed_gradient(field, y0, params, y_bar, method=method, steps=steps)
            rows.append(_work_row(system, f"DTO {method}", f"{steps} steps", g, split, ref,
                                  wall))
    for rtol in cfg["dopri5_rtol"]:
        g, wall = _timed_gradient(field, y0, params, y_bar, method="dopri5", rtol=rtol,
                                  atol=rtol * 1e-2)
        rows.append(_work_row(system, "DTO dopri5 (frozen grid)", f"rtol {rtol:.0e}", g, split,
                              ref, wall))
    return rows


def _continuous_rows(system, field, y0, params, y_bar, split, ref, cfg):
    rows = []
    for variant, seminorm in (("backsolve", False), ("interpolated", False),
                              ("backsolve", True), ("interpolated", True)):
        family = f"OTD {variant}" + (" + seminorm" if seminorm else "")
        for rtol in cfg["cont_rtol"]:
            g, wall = _timed_gradient(field, y0, params, y_bar, gradient=variant, rtol=rtol,
                                      atol=rtol * 1e-2, max_steps=100_000,
                                      adjoint_options={"seminorm": seminorm})
            rows.append(_work_row(system, family, f"rtol {rtol:.0e}", g, split, ref, wall))
    return rows


def _reference(field, y0, params, y_bar, split, cfg):
    g = continuous_adjoint(field, y0, params, np.array([T1]), y_bar[None], t0=0.0,
                           variant="interpolated", rtol=cfg["ref_rtol"],
                           atol=cfg["ref_rtol"] * 1e-2, max_steps=1_000_000)
    ref = split(g.y0_bar, g.params_bar)
    fine = discrete_adjoint(field, y0, params, np.linspace(0.0, T1, cfg["ref_rk4_steps"] + 1),
                            y_bar, method="rk4")
    chk = split(fine.y0_bar, fine.params_bar)
    flat = lambda bs: np.concatenate([b.ravel() for b in bs])  # noqa: E731
    agreement = float(np.linalg.norm(flat(ref) - flat(chk)) / np.linalg.norm(flat(ref)))
    return ref, agreement


class _CountedLayer:
    """Layer wrapper counting ``forward`` calls and VJPs into ``counts`` (a dict the caller owns
    and reads): the measured work of the ANODEV2 block, whose ``f`` and ``g`` are layers."""

    def __init__(self, layer, counts: dict):
        self.layer, self.counts = layer, counts
        self.n_params = layer.n_params
        self.time_dependent = getattr(layer, "time_dependent", False)

    def forward(self, params, x, **context):
        self.counts["forward"] += 1
        return self.layer.forward(params, x, **context)

    def vjp(self, params, cache, y_bar, need_params=True):
        self.counts["vjp"] += 1
        return self.layer.vjp(params, cache, y_bar, need_params=need_params)


def _anodev2_rows(sys_, ref, cfg):
    """ANODEV2 block with LayerEvolution(g), n_z = n_w = N; and its agreement with Euler.

    NFE are measured evaluations of ``f`` (forward: ``N``; backward: its ``N`` VJPs, on the
    caches the forward kept), as for the coupled-field rows; the evaluations of ``g``
    are in the row's ``g_forward_nfe`` (``N``: the block's forward evolves the weights to
    ``w(T)``) and ``g_backward_nfe`` (the ``N - 1`` steps that reach ``x(T)``, replayed,
    recomputed and differentiated).
    """
    field = sys_["field"]
    rows, mismatch = [], 0.0
    y_bar = np.zeros(field.layout.size)
    y_bar[:field.layout.n_x] = sys_["w"].ravel()
    for n in cfg["anodev2_steps"]:
        fc, gc = {"forward": 0, "vjp": 0}, {"forward": 0, "vjp": 0}
        block = ANODEV2Block(_CountedLayer(sys_["f"], fc),
                             LayerEvolution(_CountedLayer(sys_["g"], gc)), n_z=n, n_w=n, t1=T1)
        params = np.concatenate([sys_["theta0"], sys_["theta1"]])     # [w0, p]
        start = time.perf_counter()
        _, cache = block.forward(params, sys_["x0"])
        f_fwd, g_fwd = fc["forward"], gc["forward"]
        x0_bar, params_bar = block.vjp(params, cache, sys_["w"])
        w0_bar, p_bar = np.split(params_bar, [sys_["theta0"].size])
        wall = time.perf_counter() - start
        row = _row("anodev2", "DTO ANODEV2 (Euler)", f"n_z = n_w = {n}", [x0_bar, w0_bar, p_bar],
                   ref, f_fwd, fc["forward"] - f_fwd + fc["vjp"], wall)
        rows.append({**row, "g_forward_nfe": g_fwd,
                     "g_backward_nfe": gc["forward"] - g_fwd + gc["vjp"]})
        euler = discrete_adjoint(field, field.pack(sys_["x0"], sys_["theta0"]),
                                 sys_["theta1"], np.linspace(0.0, T1, n + 1), y_bar,
                                 method="euler")
        mine = np.concatenate([euler.y0_bar, euler.params_bar])
        theirs = np.concatenate([x0_bar.ravel(), params_bar])
        mismatch = max(mismatch, float(np.linalg.norm(mine - theirs) / np.linalg.norm(mine)))
    return rows, mismatch


#: One marker per family, so overlapping curves stay distinguishable.
MARKERS = "osD^v<>p*hX"


def _plot(path, rows, systems, cfg, stem):
    """Error against NFE per system: DTO solid, OTD dashed, one marker per family; one legend
    (9 pt) under the panels instead of one small legend inside each."""
    fig = new_figure((5.2 * len(systems), 5.6))
    axes = fig.subplots(1, len(systems), squeeze=False)
    families = list(dict.fromkeys(r["family"] for r in rows))
    handles = {}
    for ax, system in zip(axes[0], systems, strict=False):
        sub = [r for r in rows if r["system"] == system]
        for family in dict.fromkeys(r["family"] for r in sub):
            k = families.index(family)
            fam = [r for r in sub if r["family"] == family]
            nfe = [r["forward_nfe"] + r["backward_nfe"] for r in fam]
            err = [max(r["rel_error"], 1e-17) for r in fam]
            dto = family.startswith("DTO")
            (line,) = ax.loglog(nfe, err, "-" if dto else "--", color=f"C{k % 10}",
                                marker=MARKERS[k % len(MARKERS)], ms=5 if dto else 6,
                                mfc="none" if not dto else None, lw=1.6 if dto else 1.2,
                                alpha=0.9, label=family)
            handles.setdefault(family, line)
        ax.set_title(system)
        ax.set_xlabel("forward + backward NFE")
        ax.set_ylabel("relative gradient error")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="lower center", fontsize=9,
               ncol=min(4, len(handles)), frameon=False, bbox_to_anchor=(0.5, 0.06))
    fig.suptitle("Gradient error vs work: discretise-then-optimise (solid) vs "
                 "optimise-then-discretise (dashed)", fontsize=11)
    lines = caption(fig, stem, cfg, ("euler", "rk4", "dopri5_rtol", "cont_rtol", "ref_rtol",
                                     "ref_rk4_steps", "anodev2_steps", "width", "seed",
                                     "quick"))
    legend_rows = -(-len(handles) // 4)
    save_figure(fig, path, dpi=110, caption_lines=lines + 2 * legend_rows + 1)
    return path


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """Step counts and tolerances of the mode, with ``--set`` overrides (checked)."""
    base = dict(CONFIGS[bool(quick)], seed=int(seed), quick=bool(quick), t1=T1,
                loss="<w, x(1)>", reference="interpolated continuous adjoint")
    cfg = durable.apply_overrides("gradient_accuracy", base, overrides)
    bad = [k for k in ("euler", "rk4", "anodev2_steps") if any(
        not isinstance(v, int) or v < 1 for v in cfg[k])]
    bad += [k for k in ("dopri5_rtol", "cont_rtol") if any(v <= 0 for v in cfg[k])]
    if bad or cfg["width"] < 1 or cfg["ref_rtol"] <= 0:
        raise durable.ConfigError(f"gradient_accuracy settings {bad or ['width/ref_rtol']} are "
                                  f"out of range: step lists of integers >= 1, tolerances > 0.")
    return cfg


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """DTO vs OTD gradient errors against a converged reference (NODE-EW, NODE, ANODEV2)."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    with durable.claim("gradient_accuracy", cfg, out, options, PLOT_MODULES) as rn:
        t_start = time.perf_counter()
        sys_ = build_systems(cfg["width"], seed)
        rows, metrics, refs = [], {}, {}
        for system in ("node_ew", "node"):
            field, y0, params, y_bar, split = _problem(sys_, system)
            ref, agreement = _reference(field, y0, params, y_bar, split, cfg)
            refs[system] = ref
            metrics[f"reference_agreement.{system}"] = agreement
            rows += _discrete_rows(system, field, y0, params, y_bar, split, ref, cfg)
            rows += _continuous_rows(system, field, y0, params, y_bar, split, ref, cfg)
            log(f"  {system}: reference (interpolated rtol {cfg['ref_rtol']:.0e}) vs RK4 "
                f"{cfg['ref_rk4_steps']} steps: {agreement:.1e}", options.quiet)
        systems = ["node_ew", "node", "anodev2"]
        a_rows, mismatch = _anodev2_rows(sys_, refs["node_ew"], cfg)
        rows += a_rows
        metrics["anodev2_vs_coupled_euler_max_rel"] = mismatch
        log(f"  anodev2 (n_z = n_w = N) vs discrete adjoint of coupled Euler: {mismatch:.1e}",
            options.quiet)
        for key in ("rel_error", "forward_nfe", "backward_nfe", "wall_s"):
            metrics[key] = np.array([r[key] for r in rows])
        metrics["wall_time_s"] = time.perf_counter() - t_start
        units = {"rel_error": "1 (relative 2-norm)", "reference_agreement.node_ew": "1",
                 "reference_agreement.node": "1", "anodev2_vs_coupled_euler_max_rel": "1"}
        path = durable.finish(rn, metrics, {"gradients": rows}, units)
        log(f"{'system':8s} {'family':28s} {'setting':16s} {'rel err':>9s} {'fwd':>6s} "
            f"{'bwd':>6s} {'time s':>7s}", options.quiet)
        for r in rows:
            log(f"{r['system']:8s} {r['family']:28s} {r['setting']:16s} {r['rel_error']:9.2e} "
                f"{r['forward_nfe']:6d} {r['backward_nfe']:6d} {r['wall_s']:7.3f}",
                options.quiet)
        log(f"results in {path}", False)
        status = draw(options, lambda: _plot(path.with_suffix(".png"), rows, systems, cfg,
                                             rn.id.stem))
    return status or (0 if np.all(np.isfinite(metrics["rel_error"])) else 1)
