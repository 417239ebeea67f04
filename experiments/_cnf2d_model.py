"""The two models of :mod:`experiments.cnf2d` and what is solved with them.

:class:`Model` is the NODE (:class:`nets.CNF`) or the NODE-EW (:class:`nets.CoupledCNF`) flow
on batches of any size (:func:`build_model` from a configuration; :data:`MODEL_LABELS`: their
names in tables and figures). The solves, each driven by the configuration's solver settings:

- :func:`_nll` and :func:`heldout_nll`: the per-point and mean negative log-likelihood with the
  exact trace (data at ``t = 0`` to the base ``N(0, I)`` at ``t = t1``);
- :func:`_train_step`: one batch's NLL and its gradient with respect to the trained vector
  (the discrete adjoint of the accepted grid);
- :func:`grid_axis`, :func:`learned_density` and :func:`inverse_samples`: the learned density
  on a grid and base samples pushed back to data space, for the results file and the figures.

:class:`Model` and :func:`build_model` are importable from :mod:`experiments.cnf2d`.
"""
from __future__ import annotations

import math

import numpy as np

import solvers
from adjointcore.layers import ConcatLinear, Linear, Scale, Sequential, Tanh
from adjointcore.sensitivity import begin_trajectory_gradient
from nets import CNF, CoupledCNF, cnf_nll

MODEL_LABELS = {"node": "NODE", "node_ew": "NODE-EW"}


# ------------------------------------------------------------------------------ models
class Model:
    """A CNF (``"node"``) or a NODE-EW CNF (``"node_ew"``) on batches of any size: fields per
    batch size, the flat trained vector ``[theta0 (, theta1)]``, the initial state and the
    gradient of the NLL."""

    def __init__(self, kind: str, hidden: int):
        self.kind = kind
        self.f = Sequential(ConcatLinear(2, hidden), Tanh(), ConcatLinear(hidden, 2))
        self.n_theta = int(self.f.n_params)
        self.g = None
        if kind == "node_ew":
            n = self.n_theta
            self.g = Sequential(Linear(n, n), Tanh(), Scale(n, init_value=0.0))

    @property
    def n_params(self) -> int:
        return self.n_theta + (0 if self.g is None else int(self.g.n_params))

    def field(self, n: int):
        if self.g is None:
            return CNF(self.f, (n, 2))
        return CoupledCNF(self.f, self.g, (n, 2))

    def init(self, theta0_rng, theta1_rng) -> np.ndarray:
        theta0 = self.f.init(theta0_rng)
        if self.g is None:
            return theta0
        return np.concatenate([theta0, self.g.init(theta1_rng)])

    def initial(self, field, x, params):
        """``(y0, field parameters)``."""
        if self.g is None:
            return field.pack(x), params
        return field.pack(x, params[:self.n_theta]), params[self.n_theta:]

    def grad(self, field, y0_bar, params_bar):
        """The gradient with respect to the trained vector."""
        if self.g is None:
            return params_bar
        return np.concatenate([field.initial_state_vjp(y0_bar)[1], params_bar])


def build_model(cfg, kind: str) -> Model:
    """The model ``kind`` (``"node"`` or ``"node_ew"``) of this configuration."""
    return Model(kind, cfg["hidden"])


def _solve_options(cfg) -> dict:
    return {"t0": 0.0, "gradient": "discrete", "method": cfg["solver"], "rtol": cfg["rtol"],
            "atol": cfg["atol"], "max_steps": cfg["max_steps"]}


def _nll(model: Model, cfg, params, x):
    """Per-point NLL ``(n,)`` with the exact trace, the final state and the solve's NFE."""
    field = model.field(len(x))
    y0, p = model.initial(field, x, params)
    sol = solvers.solve(field, y0, (0.0, cfg["t1"]), p, method=cfg["solver"], rtol=cfg["rtol"],
                        atol=cfg["atol"], max_steps=cfg["max_steps"], dense_output=False)
    y1 = sol.ys[-1]
    z, logp = field.unpack_density(y1)
    nll = 0.5 * np.sum(z * z, axis=1) + math.log(2 * math.pi) + logp
    return nll, y1, int(sol.stats.nfe)


def heldout_nll(model: Model, cfg, params, x) -> tuple:
    """``(mean held-out NLL, NFE)`` with the exact trace."""
    nll, _, nfe = _nll(model, cfg, params, x)
    return float(np.mean(nll)), nfe


def _train_step(model: Model, cfg, field, params, x):
    """``(NLL, gradient, forward NFE, VJPs, accepted steps)`` of one batch."""
    y0, p = model.initial(field, x, params)
    sweep = begin_trajectory_gradient(field, y0, p, [cfg["t1"]], **_solve_options(cfg))
    value, y1_bar = cnf_nll(field, sweep.ys[0])
    g = sweep.gradient(y1_bar[None])
    grad = model.grad(field, g.y0_bar, g.params_bar)
    return (float(value), grad, int(sweep.stats.forward_nfe), int(g.stats.vjps),
            int(sweep.stats.n_accepted))


# ------------------------------------------------------------------------------ evaluation
def grid_axis(cfg) -> np.ndarray:
    """The density grid's coordinates along each axis (cell centres)."""
    r, n = cfg["plot_range"], cfg["grid"]
    edges = np.linspace(-r, r, n + 1)
    return 0.5 * (edges[1:] + edges[:-1])


def learned_density(model: Model, cfg, params):
    """``(log p on the grid (G, G) [row: y, column: x], theta(t1) or None)``: each grid point
    solved to the base with the exact trace."""
    axis = grid_axis(cfg)
    gx, gy = np.meshgrid(axis, axis)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    nll, y1, _ = _nll(model, cfg, params, pts)
    theta1 = None if model.g is None else model.field(len(pts)).unpack(y1)[1].copy()
    return (-nll).reshape(gx.shape), theta1


def inverse_samples(model: Model, cfg, params, theta_t1, rng) -> np.ndarray:
    """Base samples ``N(0, I)`` pushed back to data space by the inverse solve (``t1 -> 0``)."""
    n = cfg["n_plot_samples"]
    z1 = rng.standard_normal((n, 2))
    field = model.field(n)
    if model.g is None:
        y1, p = field.pack(z1), params
    else:
        y1, p = field.pack(z1, theta_t1), params[model.n_theta:]
    sol = solvers.solve(field, y1, (cfg["t1"], 0.0), p, method=cfg["solver"], rtol=cfg["rtol"],
                        atol=cfg["atol"], max_steps=cfg["max_steps"], dense_output=False)
    return field.unpack_density(sol.ys[-1])[0].copy()

