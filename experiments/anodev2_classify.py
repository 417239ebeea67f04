"""Seed 001 (Zhang et al., *ANODEV2: A Coupled Neural ODE Framework*), Tables 1-4 in spirit:
a small ResNet-4-like classifier whose residual block is an ANODEV2 block (configuration 1 or 2,
RDA weight evolution), against the same network with a plain neural ODE block and with a plain
residual block, on FashionMNIST.

The paper's numbers are for CIFAR-10; CIFAR-10 is not available offline here (DESIGN.md
sect. 7), so FashionMNIST stands in for it. The paper's numbers are stored beside ours (tables
``paper_cifar10`` and ``paper_table_3_params``, attributes of ``test_acc``, the figure's title),
marked as CIFAR-10 results of the paper's networks, so that nobody compares them directly with
ours.

Models (``--set model=...``; one skeleton, only the block differs)
------------------------------------------------------------------
Paper Table 6 (ResNet-4: a 3x3 stem convolution 3 -> 16 with BN and ReLU, one basic residual
block of two 3x3 convolutions, max pool 8 (32 -> 4), fc 256 -> 10), for 1 x 28 x 28 images and
GroupNorm for BatchNorm (no running statistics: an ODE block's field must be a function)::

    stem     Conv2d(1, C, 3x3, stride s, pad 1, no bias) -> GroupNorm(g, C) -> ReLU
    block    one of the four below, on (C, H, H), H = 28 / s
    head     ReLU -> MaxPool2d(P, stride P, pad to cover) -> Flatten -> Linear(C S^2, 10)

with the residual branch (the field of the ODE blocks, the basic block of ResNet-4)::

    f(z; theta) = GN(Conv3x3(ReLU(GN(Conv3x3(z)))))      (convolutions without bias)

    resnet       z1 = z0 + f(z0; theta)                       (one residual block)
    node         z' = f(z; theta), theta constant in time: forward Euler, ``node_steps`` (2)
                 steps on [0, 1] with the discrete adjoint (:class:`nets.odeblock.ODEBlock`;
                 the paper's ablation, Table 4: "Neural ODE [8, 9]", DTO with two z steps)
    anodev2_c1   z' = f(z; w(t)), w' = RDA(w; p): configuration 1, 5 z steps and 5 RDA steps
                 alternating (paper Table 1)
    anodev2_c2   configuration 2: 2 z steps, 10 RDA steps (paper Table 2); ``c2_apply``
                 ``"endpoints"`` (default: the second z step applies w(1), the paper's
                 appendix A.1, "theta_1 is generated with dt = 1/10") or ``"euler"`` (w(1/2))

(:class:`nets.anodev2.ANODEV2Block`, discrete adjoint). The RDA step (eq. (13), sigma = tanh)
evolves both 3x3 kernels of ``f`` over their spatial axes; the GroupNorm scales and shifts stay
constant. Its coefficients per kernel tensor are ``tau, v0, v1, rho``, with the diffusion
``tau = softplus(tau_raw) >= 0`` so that the optimiser cannot step it into the ill-posed
backward heat equation (:class:`PositiveRDA`); initially ``tau = rda_tau`` (0.05), ``v = rho =
0``.

Parameter counts (:func:`formula`; ``P`` pads the last window so that ``S = ceil(H / P)``)::

    resnet = node = 9 C + 2 C  +  2 (9 C^2 + 2 C)  +  10 C S^2 + 10
    anodev2_c1 = anodev2_c2 = resnet + 2 * 4        (tau, v0, v1, rho of both kernels)

so, as in the paper (Table 3: "the model size of the ANODEV2 and baseline is comparable"), the
ANODEV2 blocks add only the evolution parameters ``p``. At the paper's scale (C = 16, S = 4;
3 input channels: + 18 C) ours gives 7,706 parameters against its 7.71K baseline; the paper's
other rows (8.23K, 7.99K, 7.96K) also count batch-norm parameters per time step, which a
GroupNorm shared across time does not have (table ``param_counts``).

Training: Adam on softmax cross-entropy with cosine annealing, validation after every epoch,
test accuracy of the best-validation parameters (the loop of :mod:`experiments._image`; the
paper: SGD, 350 epochs, data augmentation, batch 256). Recorded per epoch: training and
validation loss and accuracy, training and evaluation time, block evaluations per batch (forward
``f`` evaluations; backward: ``f`` recomputations and VJPs); per run: test accuracy and loss,
parameter counts of all four models, the learned RDA coefficients and the norm of each evolved
kernel over ``t in [0, 1]`` (metric ``kernel_norms``), and the paper's CIFAR-10 rows.

Scale (2 shared CPU cores instead of the paper's GPU; 4 models x 3 seeds should fit in about an
hour with 2 workers): the paper's width 16 and its one residual block, but a 3x3 stride-2 stem
(the block runs on 14 x 14 maps; pool 4 with padding 1 gives the paper's 4 x 4 x 16 = 256
features), float32, 8 epochs of the full training set (55,000 images; 5,000 held out for
validation; all 10,000 test images), batches of 128, Adam with the learning rate cosine-annealed
from 3e-3 to 0 (the paper: SGD from 0.1, 350 epochs). Measured training step (batch 128, one
BLAS thread, real data, median of 22-37 steps, machine shared with other jobs at load 3.5 on 2
cores, CPU time = wall time): resnet 39 ms, node 74 ms, anodev2_c1 216 ms, anodev2_c2 107 ms
(0.31 / 0.58 / 1.69 / 0.83 ms per image; at load 6 on 2 cores the same steps took 2-2.7 times
as long). Projected full runs (3,440 steps + 8 validations + the test set): resnet about 2.5
min, node 5 min, anodev2_c1 13 min, anodev2_c2 6.5 min; 27 min of one core per seed, so the
3-seed sweep is about 80 core-minutes, 40-45 min on 2 workers on an otherwise idle machine.
Measured (seed 0): resnet 89.63% test accuracy after the 8 epochs (89.98% with lr 1e-2);
after one epoch of 12,800 images anodev2_c1, anodev2_c2 and node reached 79.2%, 79.1% and
79.5%. ANODEV2's block costs ``n_z`` field evaluations forward and ``2 n_z`` backward (its VJP
recomputes each ``f`` cache instead of storing it) plus the RDA steps (FFTs of 3x3 kernels),
so configuration 1 costs about 5.5 resnet steps and configuration 2 about 2.7.

Quick mode (the test suite): width 4, 2 epochs of 128 training images (batches of 32), 64
validation and 64 test images: seconds.

Writes ``anodev2_classify[_quick]-HASH-seedN.h5`` and ``.png``; durable: a checkpoint every 50
optimiser steps (``--checkpoint-every N``) and after every epoch, ``--resume`` continues
bitwise. The comparison (4 models x 3 seeds, 2 workers)::

    python -m experiments sweep anodev2_classify \\
        --grid model=resnet,node,anodev2_c1,anodev2_c2 --seeds 0-2 --workers 2 --out DIR
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from adjointcore.layers import (
    Conv2d,
    Flatten,
    GroupNorm,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
    Sequential,
)
from nets.anodev2 import ANODEV2Block, RDAEvolution
from nets.odeblock import ODEBlock

from . import _image, durable
from ._plotting import PLOT_MODULES, caption, draw, integer_ticks, new_figure, save_figure
from ._progress import log

__all__ = ["run", "make_config", "build_model", "formula", "count_table", "PositiveRDA",
           "MODELS", "ANODEV2_MODELS", "QUICK", "FULL", "COMMON", "PAPER_CIFAR10",
           "PAPER_PARAMS"]

NAME = "anodev2_classify"
MODELS = ("resnet", "node", "anodev2_c1", "anodev2_c2")
ANODEV2_MODELS = {"anodev2_c1": 1, "anodev2_c2": 2}
#: The paper's row of each model (Tables 1, 2 and 4; "Baseline" is ResNet-4 itself).
PAPER_ROW = {"resnet": "Baseline", "node": "Neural ODE [8, 9]",
             "anodev2_c1": "ANODEV2 config. 1", "anodev2_c2": "ANODEV2 config. 2"}
#: Paper Tables 1, 2 and 4, ResNet-4 columns: test accuracy (%) on CIFAR-10 over five runs,
#: (min, max, avg). CIFAR-10, not FashionMNIST: not comparable with our numbers.
PAPER_CIFAR10 = {"resnet": (76.47, 77.35, 76.95), "node": (76.92, 77.45, 77.30),
                 "anodev2_c1": (77.27, 78.58, 78.11), "anodev2_c2": (77.23, 78.28, 77.73)}
#: Paper Tables 1, 2 and 4, all three networks (table, network, row, min, max, avg).
PAPER_TABLES = [
    ("1", "AlexNet", "Baseline", 86.84, 87.15, 87.03),
    ("1", "AlexNet", "ANODEV2 config. 1", 88.59, 88.96, 88.78),
    ("1", "ResNet-4", "Baseline", 76.47, 77.35, 76.95),
    ("1", "ResNet-4", "ANODEV2 config. 1", 77.27, 78.58, 78.11),
    ("1", "ResNet-10", "Baseline", 87.79, 88.52, 88.10),
    ("1", "ResNet-10", "ANODEV2 config. 1", 88.67, 89.39, 89.04),
    ("2", "AlexNet", "ANODEV2 config. 2", 88.1, 88.33, 88.26),
    ("2", "ResNet-4", "ANODEV2 config. 2", 77.23, 78.28, 77.73),
    ("2", "ResNet-10", "ANODEV2 config. 2", 88.65, 89.19, 88.93),
    ("4", "AlexNet", "Neural ODE [8, 9]", 87.86, 88.14, 88.02),
    ("4", "ResNet-4", "Neural ODE [8, 9]", 76.92, 77.45, 77.30),
    ("4", "ResNet-10", "Neural ODE [8, 9]", 88.48, 88.75, 88.60),
]
#: Paper Table 3: parameters (thousands) of AlexNet, ResNet-4, ResNet-10 per row.
PAPER_PARAMS = {"Baseline": (1756.68, 7.71, 44.19), "ANODEV2 config. 1": (1757.51, 8.23, 45.77),
                "ANODEV2 config. 2": (1757.13, 7.99, 45.05),
                "Neural ODE [8, 9]": (1757.13, 7.96, 44.95)}
PAPER_SOURCE = ("Zhang et al., ANODEV2 (NeurIPS 2019), Tables 1-4, ResNet-4 on CIFAR-10 "
                "(min/max/avg of 5 runs; SGD, 350 epochs, augmentation): a different data set, "
                "not comparable with these FashionMNIST numbers")
#: The paper's ResNet-4 (Table 6) in this module's terms: width 16, 32 -> 4 by the pool.
PAPER_SCALE = {"width": 16, "pool": 8, "stride": 1, "in_channels": 3, "size": 32}

#: Full mode (module notes: the scale and the measured step times). These values define the
#: identity (HASH) that ``--resume`` of a started run recomputes: do not change them casually.
FULL = {"model": "anodev2_c1", "width": 16, "groups": 4, "stride": 2, "pool": 4,
        "epochs": 8, "batch": 128, "lr": 3e-3, "n_train": None, "n_val": 5000,
        "n_test": None, "eval_batch": 500}
#: Quick mode: seconds (the test suite).
QUICK = {"model": "anodev2_c1", "width": 4, "groups": 2, "stride": 2, "pool": 4,
         "epochs": 2, "batch": 32, "lr": 3e-3, "n_train": 128, "n_val": 64, "n_test": 64,
         "eval_batch": 64}
#: Settings shared by both modes (recorded in every file; all may be overridden).
COMMON = {"node_steps": 2, "c2_apply": "endpoints", "sigma": "tanh", "rda_tau": 0.05,
          "t1": 1.0, "lr_schedule": "cosine", "patience": 5, "weight_decay": 0.0,
          "dtype": "float32", "dataset": "fashion-mnist", "data_dir": None,
          "optimizer": "adam", "loss": "softmax_cross_entropy"}
_SIGMAS = ("tanh", "identity", "sigmoid", "relu", "softplus", "elu")


# ------------------------------------------------------------------------------- the evolution
def _softplus(x):
    return np.logaddexp(np.zeros((), dtype=x.dtype), x).astype(x.dtype, copy=False)


def _softplus_inverse(y: float) -> float:
    return float(y + math.log(-math.expm1(-y)))


class PositiveRDA:
    """:class:`nets.anodev2.RDAEvolution` with the diffusion parameterised as ``tau =
    softplus(tau_raw)``, so that every parameter vector an optimiser produces is valid
    (``tau >= 0``; :func:`nets._rda.rda_step` refuses a negative one).

    ``p`` has the layout of the inner evolution (per kernel tensor ``[tau_raw, v0, v1, rho]``);
    :meth:`step_vjp` applies the chain rule ``tau_raw_bar = sigmoid(tau_raw) tau_bar``.
    Protocol of an evolution (``n_params``, ``n_weights``, ``init``, ``check_params``, ``step``,
    ``step_vjp``).
    """

    def __init__(self, f, sigma: str = "tanh", tau: float = 0.05):
        self.inner = RDAEvolution(f, sigma=sigma)
        if not (isinstance(tau, float) and tau > 0 and math.isfinite(tau)):
            raise ValueError(f"`tau` must be a positive finite float, got {tau!r}.")
        self.tau = tau
        self.n_weights = self.inner.n_weights
        mask, o = np.zeros(self.inner.n_params, bool), 0
        for n in self.inner._tau_sizes:
            mask[o:o + n] = True
            o += n + 3
        self._tau = mask

    @property
    def n_params(self) -> int:
        return self.inner.n_params

    def init(self, rng=None, dtype=np.float64):
        """Initial ``tau = self.tau`` (stored as its softplus inverse), ``v = rho = 0``; draws
        nothing from ``rng``."""
        p = self.inner.init(rng, dtype, tau=self.tau)
        p[self._tau] = _softplus_inverse(self.tau)
        return p

    def coefficients(self, p):
        """``p`` with ``tau_raw`` mapped to ``tau``: the inner evolution's parameters."""
        q = p.copy()
        q[self._tau] = _softplus(p[self._tau])
        return q

    def check_params(self, p) -> None:
        self.inner.check_params(self.coefficients(p))

    def step(self, p, w, t=0.0, dt=1.0, checked=False):
        return self.inner.step(self.coefficients(p), w, t, dt, checked=checked)

    def step_vjp(self, p, cache, w_next_bar, need_params: bool = True):
        w_bar, p_bar = self.inner.step_vjp(self.coefficients(p), cache, w_next_bar,
                                           need_params)
        if p_bar is not None:
            x = p[self._tau]
            p_bar[self._tau] *= (1 / (1 + np.exp(-x))).astype(p_bar.dtype, copy=False)
        return w_bar, p_bar

    def __repr__(self) -> str:
        return f"PositiveRDA(sigma={self.inner.sigma!r}, tau0={self.tau})"


# ------------------------------------------------------------------------------- block counters
class _Work(NamedTuple):
    """What :mod:`experiments._image`'s loop reads from a monitor record."""
    forward_nfe: int = 0
    backward_nfe: int = 0
    vjps: int = 0


class _CountedResidual(Residual):
    """:class:`Residual` reporting one branch evaluation (forward) and one VJP (backward) to
    ``monitor(phase, work)``, as the ODE blocks report theirs."""

    def __init__(self, inner, monitor=None):
        super().__init__(inner)
        self.monitor = monitor

    def forward(self, params, x, **context):
        out = super().forward(params, x, **context)
        if self.monitor is not None:
            self.monitor("forward", _Work(forward_nfe=1))
        return out

    def vjp(self, params, cache, y_bar, need_params=True):
        out = super().vjp(params, cache, y_bar, need_params)
        if self.monitor is not None:
            self.monitor("backward", _Work(vjps=1))
        return out


class _CountedANODEV2(ANODEV2Block):
    """:class:`ANODEV2Block` reporting ``n_z`` field evaluations (forward) and ``n_z``
    recomputations plus ``n_z`` VJPs (backward) to ``monitor(phase, work)``."""

    monitor = None

    def forward(self, params, x, **context):
        out = super().forward(params, x, **context)
        if self.monitor is not None:
            self.monitor("forward", _Work(forward_nfe=self.n_z))
        return out

    def vjp(self, params, cache, y_bar, need_params=True):
        out = super().vjp(params, cache, y_bar, need_params)
        if self.monitor is not None:
            self.monitor("backward", _Work(backward_nfe=self.n_z, vjps=self.n_z))
        return out


# ------------------------------------------------------------------------------- models
def _size(cfg) -> int:
    return 28 // cfg["stride"]


def _pool(size: int, pool: int):
    """``(MaxPool2d, output side)``: windows of ``pool`` with stride ``pool``, ``-inf``
    padding so that ``ceil(size / pool)`` windows cover the image."""
    out = -(-size // pool)
    total = out * pool - size
    return MaxPool2d(pool, stride=pool, padding=total // 2 + total % 2), out


def field(cfg) -> Sequential:
    """The residual branch of ResNet-4's basic block, the field of the ODE blocks."""
    c, g = cfg["width"], cfg["groups"]
    return Sequential(Conv2d(c, c, 3, padding=1, bias=False), GroupNorm(g, c), ReLU(),
                      Conv2d(c, c, 3, padding=1, bias=False), GroupNorm(g, c))


def block(cfg, monitor=None):
    """The model's block (module notes)."""
    f, kind = field(cfg), cfg["model"]
    if kind == "resnet":
        return _CountedResidual(f, monitor)
    if kind == "node":
        return ODEBlock(f, t_span=(0.0, float(cfg["t1"])), method="euler",
                        steps=cfg["node_steps"], gradient="discrete", monitor=monitor)
    number = ANODEV2_MODELS[kind]
    evolution = PositiveRDA(f, sigma=cfg["sigma"], tau=float(cfg["rda_tau"]))
    apply = cfg["c2_apply"] if number == 2 else "euler"
    out = _CountedANODEV2.from_configuration(f, evolution, number, t1=float(cfg["t1"]),
                                             apply=apply)
    out.monitor = monitor
    return out


def build_model(cfg, monitor=None) -> Sequential:
    """The network ``cfg["model"]`` (module notes); ``monitor(phase, work)`` receives the
    block's evaluation counts."""
    c, g = cfg["width"], cfg["groups"]
    pool, side = _pool(_size(cfg), cfg["pool"])
    return Sequential(Conv2d(1, c, 3, stride=cfg["stride"], padding=1, bias=False),
                      GroupNorm(g, c), ReLU(), block(cfg, monitor), ReLU(), pool, Flatten(),
                      Linear(c * side * side, 10))


def formula(kind: str, width: int, side: int, in_channels: int = 1) -> int:
    """Closed-form parameter count (module notes); ``side`` is ``S``, the pooled side."""
    c = width
    total = 9 * in_channels * c + 2 * c + 2 * (9 * c * c + 2 * c) + 10 * c * side * side + 10
    return total + (8 if kind in ANODEV2_MODELS else 0)


def count_table(cfg) -> list:
    """Parameters of all four models at this run's scale (built and by :func:`formula`) and at
    the paper's ResNet-4 scale (3 x 32 x 32 inputs, width 16, 4 x 4 pooled), with the paper's
    Table 3."""
    side = -(-_size(cfg) // cfg["pool"])
    rows = []
    for kind in MODELS:
        built = build_model({**cfg, "model": kind})
        blk = built.layers[3]
        rows.append({"model": kind, "params": int(built.n_params),
                     "params_formula": formula(kind, cfg["width"], side),
                     "params_block": int(blk.n_params),
                     "params_evolution": int(blk.n_params - field(cfg).n_params),
                     "params_fc": int(built.layers[-1].n_params),
                     "paper_scale_params": formula(kind, 16, 4, in_channels=3),
                     "paper_row": PAPER_ROW[kind],
                     "paper_resnet4_params_k": PAPER_PARAMS[PAPER_ROW[kind]][1]})
    return rows


# ------------------------------------------------------------------------------- config
def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration: mode defaults, shared settings, ``--set`` overrides (checked).

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type, or a value out of range (named, with the
        allowed range).
    """
    base = {**(QUICK if quick else FULL), **COMMON, "seed": int(seed), "quick": bool(quick)}
    cfg = durable.apply_overrides(NAME, base, overrides)
    bad = {}
    for key in ("width", "groups", "stride", "pool", "epochs", "batch", "n_val", "eval_batch",
                "patience", "node_steps"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            bad[key] = "an integer >= 1"
    for key in ("n_train", "n_test"):
        v = cfg[key]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            bad[key] = "null (all) or an integer >= 1"
    for key in ("lr", "t1", "rda_tau"):
        if not (cfg[key] > 0 and math.isfinite(cfg[key])):
            bad[key] = "a finite number > 0"
    if not cfg["weight_decay"] >= 0:
        bad["weight_decay"] = "a number >= 0"
    choices = {"model": MODELS, "c2_apply": ("endpoints", "euler"), "sigma": _SIGMAS,
               "lr_schedule": ("cosine", "constant"), "dtype": ("float32", "float64"),
               "dataset": ("fashion-mnist", "mnist"), "optimizer": ("adam",),
               "loss": ("softmax_cross_entropy",)}
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            bad[key] = f"one of {list(allowed)}"
    if "width" not in bad and "groups" not in bad and cfg["width"] % cfg["groups"]:
        bad["groups"] = f"a divisor of width ({cfg['width']})"
    if "stride" not in bad and 28 % cfg["stride"]:
        bad["stride"] = "a divisor of 28 (1, 2, 4, 7, 14, 28)"
    if not bad and cfg["pool"] > _size(cfg):
        bad["pool"] = f"at most the block's image side 28 / stride = {_size(cfg)}"
    if bad:
        detail = "; ".join(f"{k}={cfg.get(k)!r} must be {why}" for k, why in bad.items())
        raise durable.ConfigError(f"{NAME} settings out of range: {detail}; fix them with "
                                  f"--set KEY=VALUE (the module notes of "
                                  f"experiments/{NAME}.py describe each setting).")
    return cfg


# ------------------------------------------------------------------------------- analysis
def _kernel_offsets(f) -> list:
    """``(name, offset, shape)`` of each 4-D tensor (convolution kernel) in ``f``'s flat
    parameter vector."""
    out, o = [], 0
    for name, shape in f.param_shapes.items():
        if len(shape) == 4:
            out.append((name, o, tuple(shape)))
        o += math.prod(shape)
    return out


def kernel_trajectory(model, params) -> tuple:
    """``(times, norms, applied)``: the Frobenius norm of each kernel tensor of the block's field
    at the evolution times (``(n_w + 1, n_kernels)``; for ``resnet``/``node`` the weights are
    constant: two equal rows at ``t = 0`` and ``t1``) and the times at which the z steps apply
    weights."""
    blk = model.layers[3]
    p_blk = model.slices(params)[3]
    if isinstance(blk, ANODEV2Block):
        w0, p = blk.split(p_blk)
        traj = blk.weights(w0, p)
        times = np.arange(blk.n_w + 1) * blk.dt_w
        applied = np.asarray(blk.apply_at, dtype=np.float64) * blk.dt_w
        f = blk.f
    else:
        f = blk.inner if isinstance(blk, Residual) else blk.field_layer
        traj = [p_blk[:f.n_params]] * 2
        t1 = 1.0 if isinstance(blk, Residual) else float(blk.t_span[1])
        times = np.array([0.0, t1])
        applied = np.array([0.0]) if isinstance(blk, Residual) else \
            np.arange(blk.steps) * t1 / blk.steps
    norms = np.array([[float(np.linalg.norm(w[o:o + math.prod(s)].astype(np.float64)))
                       for _, o, s in _kernel_offsets(f)] for w in traj])
    return times, norms, applied


def rda_table(model, params) -> list:
    """The learned RDA coefficients of an ANODEV2 model's kernels (``tau`` after softplus)."""
    blk = model.layers[3]
    if not isinstance(blk, ANODEV2Block):
        return []
    _, p = blk.split(model.slices(params)[3])
    coeffs = blk.evolution.inner.coefficients(blk.evolution.coefficients(p))
    return [{"kernel": name, "tau": float(tau), "v0": float(v[0]), "v1": float(v[1]),
             "rho": float(rho)}
            for (name, _, _), (tau, v, rho) in zip(_kernel_offsets(blk.f), coeffs, strict=True)]


# ------------------------------------------------------------------------------- run
UNITS = {**_image.UNITS,
         "nfe_forward": "evaluations of the block's field f (forward passes, sum over the epoch;"
                        " resnet: 1 per batch)",
         "nfe_backward": "evaluations of f recomputed in the backward passes (sum over the "
                         "epoch)",
         "vjps_backward": "VJPs of f (sum over the epoch)",
         "nfe_forward_per_batch": "evaluations of f per training batch (mean)",
         "nfe_backward_per_batch": "recomputed evaluations of f per training batch (mean)",
         "val_nfe_forward_per_batch": "evaluations of f per validation batch (mean)",
         "test_nfe_forward_per_batch": "evaluations of f per test batch (mean)",
         "params_block": "parameters", "params_evolution": "parameters",
         "kernel_times": "t (block time, [0, t1])",
         "kernel_norms": "Frobenius norm of each 3x3 kernel tensor of f (columns: the two "
                         "convolutions) at kernel_times, best-validation parameters",
         "kernel_applied_times": "t at which the z steps apply the weights"}


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """ANODEV2 (config. 1, 2) vs neural ODE vs ResNet, ResNet-4-like, FashionMNIST."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    kind = cfg["model"]

    def schedule(cfg, monitor):
        model = build_model(cfg, monitor=monitor)
        return lambda epoch: (model, model)

    with _image.trained_run(NAME, cfg, out, options, PLOT_MODULES, schedule) as done:
        rn, loop, test = done.run, done.loop, done.test
        model = done.schedule(0)[0]
        counts = count_table(cfg)
        mine = next(r for r in counts if r["model"] == kind)
        times, norms, applied = kernel_trajectory(model, loop.best_params)
        paper = PAPER_CIFAR10[kind]
        extra = {**done.summary,
                 "params_total": mine["params"], "params_fc": mine["params_fc"],
                 "params_not_fc": mine["params"] - mine["params_fc"],
                 "params_block": mine["params_block"],
                 "params_evolution": mine["params_evolution"],
                 "kernel_times": times, "kernel_norms": norms,
                 "kernel_applied_times": applied}
        attrs = {"test_acc": {"paper_dataset": "CIFAR-10 (NOT comparable: ours is "
                                               f"{cfg['dataset']})",
                              "paper_row": PAPER_ROW[kind],
                              "paper_cifar10_resnet4_min_percent": paper[0],
                              "paper_cifar10_resnet4_max_percent": paper[1],
                              "paper_cifar10_resnet4_avg_percent": paper[2],
                              "paper_source": PAPER_SOURCE}}
        tables = {"param_counts": counts,
                  "paper_cifar10": [
                      {"dataset": "CIFAR-10", "table": t, "network": net, "row": row,
                       "min_percent": lo, "max_percent": hi, "avg_percent": avg}
                      for t, net, row, lo, hi, avg in PAPER_TABLES],
                  "paper_table_3_params": [
                      {"row": row, "alexnet_k": v[0], "resnet4_k": v[1], "resnet10_k": v[2]}
                      for row, v in PAPER_PARAMS.items()],
                  "summary": [{"model": kind, "dataset": cfg["dataset"],
                               "test_acc_percent": 100 * test["acc"],
                               "test_loss": test["loss"], "params": mine["params"],
                               "f_evals_per_batch": float(loop.hist["nfe_forward_per_batch"][-1]),
                               "best_epoch": loop.stop["best_epoch"],
                               "epochs_run": loop.epoch,
                               "mean_epoch_time_s": extra["mean_epoch_time_s"],
                               "paper_row": PAPER_ROW[kind],
                               "paper_cifar10_avg_percent_not_comparable": paper[2]}]}
        coeffs = rda_table(model, loop.best_params)
        if coeffs:
            tables["rda_coefficients"] = coeffs
        path = durable.finish(rn, _image.metrics(loop.hist, extra), tables=tables,
                              units=UNITS, metric_attrs=attrs,
                              checkpoint=_image.final_checkpoint(loop))
        log(f"{kind}: test accuracy {100 * test['acc']:.2f}%, loss {test['loss']:.4f} on "
            f"{cfg['dataset']} ({mine['params']:,} parameters; the paper's ResNet-4 row "
            f"'{PAPER_ROW[kind]}' averages {paper[2]:.2f}% on CIFAR-10, not comparable); "
            f"wrote {path}", False)
        return draw(options, lambda: _plot(loop.hist, extra, path.with_suffix(".png"), cfg,
                                            rn.id.stem, coeffs))


def _plot(hist, extra, path, cfg, stem, coeffs):
    fig = new_figure((11, 7.2))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    epochs = np.arange(1, len(hist["train_loss"]) + 1)
    _image.plot_curves(ax1, ax2, hist, extra["test_acc"], None, "", extra["best_epoch"])
    times, norms = extra["kernel_times"], extra["kernel_norms"]
    rel = norms / norms[0]
    for i in range(norms.shape[1]):
        ax3.plot(times, rel[:, i], marker="o" if len(times) > 2 else None,
                 label=f"conv {i + 1} (|w(0)| = {norms[0, i]:.2f})")
    for t in extra["kernel_applied_times"]:
        ax3.axvline(t, color="0.8", lw=0.8)
    note = "RDA-evolved (grey: z steps)" if coeffs else "constant in time (grey: z steps)"
    ax3.set(xlabel="t", ylabel="|w(t)| / |w(0)|", title=f"(c) kernel norms: {note}")
    if coeffs:
        text = "\n".join(f"{r['kernel']}: tau {r['tau']:.3f}, v ({r['v0']:.2f}, {r['v1']:.2f}),"
                         f" rho {r['rho']:.3f}" for r in coeffs)
        ax3.text(0.02, 0.02, text, transform=ax3.transAxes, fontsize=7, va="bottom")
    ax4.bar(epochs - 0.2, hist["epoch_time_s"], width=0.4, label="training")
    ax4.bar(epochs + 0.2, hist["eval_time_s"], width=0.4, label="validation")
    ax4.set(xlabel="epoch", ylabel="s",
            title=f"(d) epoch time ({hist['nfe_forward_per_batch'][-1]:.0f} f evaluations "
                  f"per batch)")
    for ax in (ax1, ax2, ax4):
        integer_ticks(ax.xaxis)
        ax.set_xlim(0.4, len(epochs) + 0.6)
    for ax in (ax1, ax2, ax3, ax4):
        ax.legend(fontsize=8)
    paper = PAPER_CIFAR10[cfg["model"]]
    fig.suptitle(f"{cfg['model']} ({PAPER_ROW[cfg['model']]}) on {cfg['dataset']}: test "
                 f"accuracy {100 * extra['test_acc']:.2f}%, loss {extra['test_loss']:.4f}; "
                 f"{extra['params_total']:,} parameters ({extra['params_evolution']} of the "
                 f"evolution)\npaper, ResNet-4 on CIFAR-10 (a different data set, not "
                 f"comparable): {paper[2]:.2f}% (min {paper[0]:.2f}, max {paper[1]:.2f})",
                 fontsize=10)
    keys = ("model", "width", "groups", "stride", "pool", "node_steps", "c2_apply", "sigma",
            "rda_tau", "t1", "epochs", "batch", "lr", "lr_schedule", "patience", "n_train",
            "n_val", "n_test", "dtype", "dataset", "seed", "quick")
    lines = caption(fig, stem, cfg, keys)
    save_figure(fig, path, caption_lines=lines)
    return path
