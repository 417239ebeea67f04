"""ANODEV2 Figure 3: a unit Gaussian kernel evolved by diffusion, advection, reaction and all three.

Each row evolves the same initial kernel ``w0(x) = exp(-|x|^2 / 2)`` (unit variance, centred)
with the exact Fourier step :func:`nets._rda.rda_step` (``sigma`` = identity, and a second
figure with ``sigma = tanh`` as ANODEV2 uses in its networks), ``n_w`` steps of ``dt = t1/n_w``.
The linear rows are compared with the closed form on the periodic domain (sum over the nearest
periodic images)::

    w(x, t) = s^2 / S exp(rho t) exp(-|x + v t|^2 / (2 S)),     S = s^2 + 2 tau t,

(advection moves the pattern by ``-v t``, see :mod:`nets._rda`). The grid spacing is chosen so
that the Gaussian is resolved to roundoff (``exp(-k_nyq^2 / 2) < 1e-20``), so the measured
errors are at roundoff level.

Outputs under ``out`` (``STEM = rda_evolution[_quick]-HASH-seedN``): ``STEM.h5`` (metrics
``times``, ``kernels``, ``kernels_tanh``, ``closed_form_error``, ``peak``, ``rda_steps``,
``wall_time_s``; table ``cases``), written before the figures ``STEM.png`` and
``STEM_tanh.png``. Quick mode: 41x41 grid, 5 columns (about 1 s, mostly matplotlib); full mode:
65x65 grid, 11 columns (about 2 s). Deterministic; ``seed`` is recorded only.

The domain is periodic: a kernel advected across one edge re-enters at the opposite one. On the
quick grid (side 12.3) the advected rows wrap around by t = 1; the figure says so when it
happens (:func:`wraps_around`).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from nets import rda_step

from . import durable
from ._plotting import PLOT_MODULES, caption, draw, new_figure, save_figure
from ._progress import log

#: (name, tau, v, rho) of the four rows of Figure 3 (physical units, t1 = 1).
CASES = (("diffusion", 1.0, (0.0, 0.0), 0.0),
         ("advection", 0.0, (-3.0, 2.0), 0.0),
         ("reaction", 0.0, (0.0, 0.0), 0.7),
         ("all three", 1.0, (-3.0, 2.0), 0.7))

ERROR_TOL = 1e-12   # roundoff of a few FFT steps on O(1) values; exit status 1 above it


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """Grid, steps and recording interval of the mode, with ``--set`` overrides (checked)."""
    if quick:
        base = {"n": 41, "spacing": 0.3, "n_w": 4, "every": 1, "t1": 1.0, "sigma_s": 1.0}
    else:
        base = {"n": 65, "spacing": 0.25, "n_w": 20, "every": 2, "t1": 1.0, "sigma_s": 1.0}
    base.update(cases=[list(c) for c in CASES], error_tol=ERROR_TOL, sigma_figures=["identity",
                                                                                  "tanh"])
    cfg = durable.apply_overrides("rda_evolution", {**base, "quick": bool(quick),
                                                    "seed": int(seed)}, overrides)
    if cfg["cases"] != base["cases"]:
        raise durable.ConfigError("rda_evolution's 'cases' are the four rows of ANODEV2 Figure 3 "
                                  "and cannot be changed with --set.")
    bad = [k for k in ("n", "n_w", "every") if cfg[k] < 1]
    bad += [k for k in ("spacing", "t1", "sigma_s") if cfg[k] <= 0]
    if cfg["n_w"] % cfg["every"]:
        bad.append("every (must divide n_w)")
    if bad:
        raise durable.ConfigError(f"rda_evolution settings {bad} are out of range: n, n_w, every "
                                  f">= 1 with every dividing n_w; spacing, t1, sigma_s > 0.")
    return cfg


def wraps_around(cfg) -> list:
    """Cases whose kernel (3 standard deviations around its moving centre) crosses the edge of
    the periodic box by ``t1``."""
    half = cfg["n"] * cfg["spacing"] / 2
    out = []
    for name, tau, v, _ in CASES:
        spread = 3.0 * np.sqrt(cfg["sigma_s"] ** 2 + 2.0 * tau * cfg["t1"])
        if max(abs(v[0]), abs(v[1])) * cfg["t1"] + spread > half:
            out.append(name)
    return out


def _grid(cfg):
    x = (np.arange(cfg["n"]) - cfg["n"] // 2) * cfg["spacing"]
    return x[:, None], x[None, :]


def closed_form(cfg, t, tau, v, rho):
    """Periodic closed form (nearest images) of the linear RDA flow of the unit Gaussian."""
    x0, x1 = _grid(cfg)
    s2, length = cfg["sigma_s"] ** 2, cfg["n"] * cfg["spacing"]
    var = s2 + 2.0 * tau * t
    out = np.zeros((cfg["n"], cfg["n"]))
    for m0 in (-1, 0, 1):
        for m1 in (-1, 0, 1):
            r2 = (x0 + v[0] * t + m0 * length) ** 2 + (x1 + v[1] * t + m1 * length) ** 2
            out += np.exp(-r2 / (2.0 * var))
    return s2 / var * np.exp(rho * t) * out


def evolve(cfg, tau, v, rho, sigma="identity"):
    """Kernels at the recorded times: array (n_times, n, n) and the times."""
    w = closed_form(cfg, 0.0, 0.0, (0.0, 0.0), 0.0)
    dt = cfg["t1"] / cfg["n_w"]
    frames, times = [w], [0.0]
    for j in range(cfg["n_w"]):
        w, _ = rda_step(w, dt, tau, v, rho, sigma=sigma, spacing=cfg["spacing"])
        if (j + 1) % cfg["every"] == 0:
            frames.append(w)
            times.append((j + 1) * dt)
    return np.stack(frames), np.array(times)


def mosaic(kernels, gap: int = 2):
    """Tile ``kernels`` (rows, cols, n, n) into one image, each row scaled by its max |value|;
    gaps are NaN (drawn blank)."""
    rows, cols, n = kernels.shape[:3]
    step = n + gap
    tiles = np.full((rows * step - gap, cols * step - gap), np.nan)
    for r in range(rows):
        scale = float(np.abs(kernels[r]).max()) or 1.0
        for c in range(cols):
            tiles[r * step:r * step + n, c * step:c * step + n] = kernels[r, c] / scale
    return tiles


def _plot(path, kernels, times, title, cfg, stem):
    """One image of the row-normalised tiles (one ``imshow``: fast), labelled by case and time,
    with a colorbar, a wrap-around note when the box is too small, and the configuration."""
    rows, cols, n = kernels.shape[:3]
    fig = new_figure((1.3 * cols + 2.4, 1.3 * rows + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(mosaic(kernels), cmap="viridis", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("w / max over the row", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    centres = np.arange(max(rows, cols)) * (n + 2) + (n - 1) / 2
    ax.set_xticks(centres[:cols], [f"t = {t:.2f}" for t in times], fontsize=8)
    ax.set_yticks(centres[:rows], [name for name, *_ in CASES], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    wrapped = wraps_around(cfg)
    note = (f"\nperiodic box of side {cfg['n'] * cfg['spacing']:.3g}: row(s) "
            f"{', '.join(repr(w) for w in wrapped)} wrap around the edge" if wrapped else "")
    ax.set_title(title + " (each row scaled to its max)" + note, fontsize=9)
    lines = caption(fig, stem, cfg, ("n", "spacing", "n_w", "every", "t1", "sigma_s", "quick"))
    save_figure(fig, path, dpi=90, caption_lines=lines)
    return path


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """ANODEV2 Figure 3: RDA evolution of a unit Gaussian kernel (HDF5 + PNG grids)."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    with durable.claim("rda_evolution", cfg, out, options, PLOT_MODULES) as rn:
        t_start = time.perf_counter()
        kernels, kernels_tanh, errors, rows = [], [], [], []
        for name, tau, v, rho in CASES:
            frames, times = evolve(cfg, tau, v, rho)
            kernels.append(frames)
            kernels_tanh.append(evolve(cfg, tau, v, rho, sigma="tanh")[0])
            err = np.array([np.abs(f - closed_form(cfg, t, tau, v, rho)).max()
                            for f, t in zip(frames, times, strict=False)])
            errors.append(err)
            rows.append({"case": name, "tau": tau, "v0": v[0], "v1": v[1], "rho": rho,
                         "max_closed_form_error": float(err.max()),
                         "peak_t1": float(frames[-1].max()),
                         "wraps_around": name in wraps_around(cfg)})
        kernels, kernels_tanh = np.stack(kernels), np.stack(kernels_tanh)
        errors = np.stack(errors)
        metrics = {"times": times, "kernels": kernels, "kernels_tanh": kernels_tanh,
                   "closed_form_error": errors, "peak": kernels.max(axis=(-2, -1)),
                   # work per case: n_w exact Fourier steps for each sigma (no gradient taken)
                   "rda_steps": np.full(len(CASES), 2 * cfg["n_w"]),
                   "wall_time_s": time.perf_counter() - t_start}
        units = {"times": "1 (time)", "kernels": "1", "kernels_tanh": "1",
                 "closed_form_error": "1 (max abs)", "peak": "1", "rda_steps": "steps"}
        path = durable.finish(rn, metrics, {"cases": rows}, units)
        for row in rows:
            log(f"{row['case']:10s} max |w - closed form| = {row['max_closed_form_error']:.1e}  "
                f"peak(t1) = {row['peak_t1']:.4f}", options.quiet)
        log(f"wrote {path}", False)
        stem = path.with_suffix("")

        def plots():
            _plot(f"{stem}.png", kernels, times,
                  "RDA evolution of a unit Gaussian kernel (sigma = identity)", cfg, rn.id.stem)
            return _plot(f"{stem}_tanh.png", kernels_tanh, times,
                         "RDA evolution with sigma = tanh (ANODEV2 eq. (13))", cfg, rn.id.stem)

        status = draw(options, plots)
    return status or (0 if errors.max() <= ERROR_TOL else 1)
