"""Training loops for trajectory-fitting neural ODEs (and NODE-EW) with switchable gradients.

A :class:`TrajectoryProblem` is a vector field, an initial state, observation times and targets;
the trained vector ``z`` is the field parameters followed (optionally) by a slice of the initial
state (NODE-EW trains ``theta0``, which lives in the state). The loss is the paper's sum of
squared errors over all observation times,

    L = sum_k || y(t_k)[observe] - target_k ||^2,

and its gradient comes from the configuration (:class:`GradientConfig`): the discrete adjoint of a
fixed-step solve (backpropagation through the discretisation, "BP") or a continuous adjoint of an
adaptive solve. :func:`train_bp_then_adjoint` is NODE-EW's training strategy (Sect. 3.2.2): BP on
the fixed-step Euler discretisation, then one switch of the configuration to Dopri5 with the
continuous adjoint for fine-tuning, on the same parameters and optimiser state.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

import solvers
from adjointcore.sensitivity import GRADIENTS, begin_trajectory_gradient

__all__ = ["GradientConfig", "TrajectoryProblem", "StepInfo", "History", "TrainPosition",
           "loss_and_grad", "evaluate", "train", "train_bp_then_adjoint", "split_vars",
           "join_vars", "check_loss"]


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """How a loss gradient is computed.

    Parameters
    ----------
    gradient : {"discrete", "backsolve", "interpolated"}
        Discrete adjoint of the fixed-step map (BP), or a continuous adjoint.
    method : str
        Solver (``"euler"``, ``"rk4"``, ``"dopri5"``, ...).
    steps : int or None
        Equal steps over ``[t0, t_obs[-1]]`` for the discrete gradient (every observation time
        must be a grid point); must be None for continuous adjoints (adaptive solves).
    rtol, atol : float
        Tolerances of the adaptive forward and backward solves.
    seminorm : bool
        Seminorm error control of the backward solve (continuous adjoints).
    """

    gradient: str = "discrete"
    method: str = "euler"
    steps: Optional[int] = 100
    rtol: float = 1e-6
    atol: float = 1e-8
    seminorm: bool = False

    def __post_init__(self):
        if self.gradient not in GRADIENTS:
            raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {self.gradient!r}.")
        if self.gradient == "discrete" and self.steps is None:
            raise ValueError("the discrete gradient needs a fixed grid: pass steps=N (with every "
                             "observation time on the grid).")
        if self.gradient != "discrete" and self.steps is not None:
            raise ValueError(f"continuous adjoints here use adaptive solves; pass steps=None "
                             f"(got steps={self.steps!r}) and set rtol/atol.")

    def with_config(self, **changes) -> "GradientConfig":
        """A copy with some settings changed (the mid-training switch)."""
        return dataclasses.replace(self, **changes)


class TrajectoryProblem(NamedTuple):
    """A trajectory fit.

    Attributes
    ----------
    field : vector field
    y0 : ndarray
        Initial state (any shape; flattened for ``observe``/``trainable_y0``).
    t0 : float
    t_obs : ndarray, shape (K,)
        Increasing observation times after ``t0``.
    target : ndarray, shape (K, m)
        Targets for ``y(t_k).ravel()[observe]``.
    observe : slice
        Observed entries of the flat state.
    trainable_y0 : slice or None
        Entries of the flat initial state that are trained (NODE-EW: ``theta0``).
    """

    field: Any
    y0: Any
    t0: float
    t_obs: np.ndarray
    target: np.ndarray
    observe: slice
    trainable_y0: Optional[slice] = None


class StepInfo(NamedTuple):
    """Loss and work of one gradient evaluation."""

    loss: float
    forward_nfe: int
    backward_nfe: int


def split_vars(problem: TrajectoryProblem, z, n_params: int):
    """``(y0, params)`` from the trained vector ``z = [params, y0[trainable_y0]]``."""
    params = z[:n_params]
    if problem.trainable_y0 is None:
        return problem.y0, params
    flat = problem.y0.reshape(-1).copy()
    flat[problem.trainable_y0] = z[n_params:]
    return flat.reshape(problem.y0.shape), params


def join_vars(problem: TrajectoryProblem, y0, params):
    """The trained vector ``z`` from ``params`` and the trainable part of ``y0``."""
    if problem.trainable_y0 is None:
        return np.array(params, copy=True)
    return np.concatenate([params, y0.reshape(-1)[problem.trainable_y0]])


def check_loss(loss: float, where: str, fix: str = "lower the learning rate or use more "
               "steps") -> float:
    """``loss`` unchanged if finite, else ``FloatingPointError`` saying where and what to do."""
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at {where}; {fix}.")
    return loss


def _residual(problem, ys):
    pred = ys.reshape(ys.shape[0], -1)[:, problem.observe]
    return pred - problem.target


def _bars(problem, ys, r):
    bars = np.zeros((ys.shape[0], ys[0].size), dtype=ys.dtype)
    bars[:, problem.observe] = 2.0 * r
    return bars.reshape(ys.shape)


def loss_and_grad(problem: TrajectoryProblem, z, n_params: int, config: GradientConfig):
    """Loss, gradient with respect to ``z`` and work (:class:`StepInfo`) under ``config``.

    One call of :func:`adjointcore.sensitivity.begin_trajectory_gradient` (forward phase, the
    states at ``t_obs``) and of its ``gradient`` (backward phase). ``StepInfo.forward_nfe``
    counts the forward phase's field evaluations; ``backward_nfe`` the field VJPs plus the
    forward evaluations recomputed in reverse.
    """
    y0, params = split_vars(problem, z, n_params)
    grid = ({"steps": config.steps} if config.steps is not None
            else {"rtol": config.rtol, "atol": config.atol})
    adjoint = {} if config.gradient == "discrete" else {"adjoint_options":
                                                          {"seminorm": config.seminorm}}
    sweep = begin_trajectory_gradient(problem.field, y0, params, problem.t_obs, t0=problem.t0,
                                      gradient=config.gradient, method=config.method,
                                      **grid, **adjoint)
    r = _residual(problem, sweep.ys)
    g = sweep.gradient(_bars(problem, sweep.ys, r))
    loss = float(np.sum(r * r))
    work = g.stats
    return loss, join_vars(problem, g.y0_bar, g.params_bar), StepInfo(
        loss, int(work.forward_nfe), int(work.vjps + work.backward_nfe))


def evaluate(problem: TrajectoryProblem, z, n_params: int, rtol=1e-9, atol=1e-11):
    """Loss of the ODE solution (Dopri5 at tight tolerance) and the trajectory at ``t_obs``."""
    y0, params = split_vars(problem, z, n_params)
    sol = solvers.solve(problem.field, y0, (problem.t0, float(problem.t_obs[-1])), params,
                        method="dopri5", t_eval=problem.t_obs, rtol=rtol, atol=atol,
                        max_steps=100_000)
    r = _residual(problem, sol.ys)
    return float(np.sum(r * r)), sol.ys.reshape(sol.ys.shape[0], -1)[:, problem.observe]


@dataclasses.dataclass
class History:
    """Per-iteration record of a training run (lists; converted to arrays for saving)."""

    loss: list = dataclasses.field(default_factory=list)
    forward_nfe: list = dataclasses.field(default_factory=list)
    backward_nfe: list = dataclasses.field(default_factory=list)
    wall_s: list = dataclasses.field(default_factory=list)
    phase: list = dataclasses.field(default_factory=list)

    def append(self, info: StepInfo, wall: float, phase: int):
        self.loss.append(info.loss)
        self.forward_nfe.append(info.forward_nfe)
        self.backward_nfe.append(info.backward_nfe)
        self.wall_s.append(wall)
        self.phase.append(phase)

    def arrays(self, prefix: str) -> dict:
        """``{prefix + name: ndarray}`` for :func:`experiments.results.save`."""
        return {f"{prefix}{k}": np.asarray(v) for k, v in dataclasses.asdict(self).items()}


class TrainPosition(NamedTuple):
    """Where a training loop stands after an iteration: what a checkpoint must hold to continue.

    Attributes
    ----------
    phase : int
        0 (BP) or 1 (fine-tuning) in :func:`train_bp_then_adjoint`; the ``phase`` given to
        :func:`train` otherwise.
    iteration : int
        Iterations done in this phase.
    z : ndarray
        The trained vector after them.
    opt_state : optimiser state or None
        None only before the first iteration (the optimiser's initial state is used).
    history : History
        Every row so far (all phases).
    """

    phase: int
    iteration: int
    z: Any
    opt_state: Any
    history: "History"


def train(problem: TrajectoryProblem, z, n_params: int, config: GradientConfig, iterations: int,
          optimizer, opt_state=None, history: Optional[History] = None, phase: int = 0,
          lr: Optional[float] = None, progress: Optional[Callable] = None, start: int = 0,
          on_step: Optional[Callable] = None):
    """Run optimiser steps ``start, ..., iterations - 1`` with gradients from ``config``.

    Parameters
    ----------
    start : int
        Iterations already done (a resumed loop: ``z``, ``opt_state`` and ``history`` are the
        state after them).
    on_step : callable, optional
        ``on_step(TrainPosition)`` after every iteration (e.g. to write a checkpoint).

    Returns
    -------
    z, opt_state, history
        ``history`` (a new :class:`History` unless given) gets one row per iteration (the loss
        before the step, the NFE of its gradient and the wall time of the whole iteration).
    """
    history = History() if history is None else history
    opt_state = optimizer.init_state(z) if opt_state is None else opt_state
    for it in range(int(start), int(iterations)):
        start_time = time.perf_counter()
        _, grad, info = loss_and_grad(problem, z, n_params, config)
        check_loss(info.loss, f"iteration {it} with {config}")
        z, opt_state = optimizer.step(z, grad, opt_state, lr=lr)
        history.append(info, time.perf_counter() - start_time, phase)
        if progress is not None:
            progress(phase, it, info)
        if on_step is not None:
            on_step(TrainPosition(phase, it + 1, z, opt_state, history))
    return z, opt_state, history


def train_bp_then_adjoint(problem: TrajectoryProblem, z, n_params: int, optimizer,
                          bp_iterations: int, ft_iterations: int,
                          bp_config: GradientConfig = GradientConfig(),
                          ft_config: Optional[GradientConfig] = None, ft_lr=None,
                          progress=None, on_switch: Optional[Callable] = None,
                          position: Optional[TrainPosition] = None,
                          on_step: Optional[Callable] = None):
    """NODE-EW's strategy: BP on fixed-step Euler, then adjoint fine-tuning (one switch).

    Parameters
    ----------
    bp_config : GradientConfig
        Phase 0 (default: Euler, 100 steps, discrete adjoint).
    ft_config : GradientConfig, optional
        Phase 1; default ``bp_config.with_config(gradient="backsolve", method="dopri5",
        steps=None)`` (the continuous adjoint of Chen et al. on an adaptive solve).
    ft_lr : float, optional
        Learning rate of the fine-tuning phase (default: the optimiser's).
    progress : callable, optional
        ``progress(phase, iteration, StepInfo)`` after every iteration.
    on_switch : callable, optional
        Called with ``z`` (a copy) at the switch, e.g. to evaluate the BP-only model. Not called
        again when resuming from a ``position`` in phase 1.
    position : TrainPosition, optional
        Continue from here (a checkpoint); ``z`` is then ignored.
    on_step : callable, optional
        ``on_step(TrainPosition)`` after every iteration of either phase.

    Returns
    -------
    z, history
        ``history.phase`` is 0 for BP iterations and 1 for fine-tuning.
    """
    if ft_config is None:
        ft_config = bp_config.with_config(gradient="backsolve", method="dopri5", steps=None)
    pos = position if position is not None else TrainPosition(0, 0, z, None, History())
    if pos.phase == 0:
        z, state, hist = train(problem, pos.z, n_params, bp_config, bp_iterations, optimizer,
                               pos.opt_state, pos.history, phase=0, progress=progress,
                               start=pos.iteration, on_step=on_step)
        if on_switch is not None:
            on_switch(np.array(z, copy=True))
        pos = TrainPosition(1, 0, z, state, hist)
    z, _, hist = train(problem, pos.z, n_params, ft_config, ft_iterations, optimizer,
                       pos.opt_state, pos.history, phase=1, lr=ft_lr, progress=progress,
                       start=pos.iteration, on_step=on_step)
    return z, hist
