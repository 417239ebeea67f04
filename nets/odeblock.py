"""The ODE block: a layer whose forward is a solve and whose VJP is a chosen gradient method.

``y = ODEBlock(field_layer, ...)(params, x)`` integrates ``dy/dt = field_layer(params, y[, t])``
from ``y(t0) = [x, 0]`` (``augment`` zero channels appended, Dupont et al. 2019) to ``t1``.

Gradient methods
----------------
``"discrete"``      exact gradient of the discrete map (fixed grid, or the frozen accepted grid of an
                    adaptive solve) under a checkpoint ``schedule`` (default store-all);
``"backsolve"``     continuous adjoint, state reconstructed backwards (Chen et al. 2018);
``"interpolated"``  continuous adjoint on the forward dense output (CVODES style).

Work statistics (forward/backward NFE, steps, live snapshots, recomputed steps) are returned in
the cache after ``forward`` and by :meth:`ODEBlock.vjp_with_stats`, and passed to the optional
``monitor`` callable after every call: the block itself keeps no state.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

import solvers
from adjointcore.errors import check_array, check_positive_int
from adjointcore.fields import LayerField
from adjointcore.layers.base import Layer
from adjointcore.layers.shape import ChannelPad
from adjointcore.sensitivity.continuous import continuous_adjoint
from adjointcore.sensitivity.discrete import Recording, begin_discrete_adjoint, discrete_adjoint

__all__ = ["ODEBlock", "ODEBlockCache", "ODEBlockStats", "GRADIENTS"]

GRADIENTS = ("discrete", "backsolve", "interpolated")
#: Keywords of :func:`~adjointcore.sensitivity.continuous_adjoint` that ``adjoint_options`` may set.
ADJOINT_OPTIONS = ("adjoint_method", "adjoint_rtol", "adjoint_atol", "adjoint_steps", "seminorm",
                   "reset_state")


def _check_t_span(t_span):
    """Raise unless ``t_span`` is a pair of distinct finite times."""
    try:
        t0, t1 = (float(v) for v in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"`t_span` must be a pair (t0, t1) of times, got {t_span!r}.") from None
    if not (np.isfinite(t0) and np.isfinite(t1)) or t0 == t1:
        raise ValueError(f"`t_span` must be two distinct finite times, got {t_span!r}.")


class ODEBlockStats(NamedTuple):
    """Work of one forward or backward call of an :class:`ODEBlock`.

    ``phase`` is ``"forward"`` or ``"backward"``; counters that do not apply are 0.
    """

    phase: str
    nfe: int
    n_steps: int
    n_rejected: int
    live_snapshots: int
    recomputed_steps: int
    vjps: int


class ODEBlockCache(NamedTuple):
    """What the VJP needs: initial state, step grid, and the forward solution (continuous
    adjoints and adaptive solves) or the suspended discrete-adjoint sweep
    (:class:`~adjointcore.sensitivity.discrete.DiscreteSweep`, fixed steps) in ``recording``."""

    x_shape: tuple
    y0: Any
    y1: Any
    grid: np.ndarray
    solution: Any
    recording: Any
    stats: ODEBlockStats


@dataclasses.dataclass(frozen=True, repr=False)
class ODEBlock(Layer):
    """Neural-ODE layer ``x -> y(t1)`` with a selectable gradient method.

    Parameters
    ----------
    field_layer : layer
        Maps states of any shape (``(N, d + augment, ...)`` when ``augment > 0``) to the same
        shape (``t=`` passed when ``field_layer.time_dependent``).
    t_span : (float, float)
        Integration interval; ``t1 < t0`` integrates backwards.
    method : str
        Any ``solvers`` method (RK tableau name or multistep name; multistep needs ``steps``).
    steps : int, optional
        Number of equal fixed steps; ``None`` for an adaptive solve with ``rtol``/``atol``.
    rtol, atol : float
        Tolerances of adaptive solves (forward, and backward for the continuous adjoints).
    gradient : {"discrete", "backsolve", "interpolated"}
    schedule : checkpoint schedule, optional
        For ``"discrete"``. ``None`` (default, ``Taped()``) keeps the forward call's stages and
        field caches up to 512 MiB (backpropagation through the solver; multistep methods fall
        back to ``StoreAll()``); ``StoreAll()``, ``Uniform``, ``Revolve`` or ``Online`` store
        states only. Whatever the schedule, the forward call runs the adjoint's forward sweep
        and keeps what the schedule keeps until the VJP, so the forward solve runs once.
    augment : int
        Zero channels appended to the input (axis 1) before the solve; the output keeps them.
    method_options : dict, optional
        E.g. ``{"k": -0.1}`` for the ``"lm"`` step.
    adjoint_options : dict, optional
        Extra keywords of :func:`adjointcore.sensitivity.continuous_adjoint` (``adjoint_rtol``,
        ``adjoint_method``, ``seminorm``, ...).
    monitor : callable, optional
        Called with an :class:`ODEBlockStats` after every forward and backward call.
    max_steps : int
    """

    field_layer: Any
    t_span: tuple = (0.0, 1.0)
    method: str = "dopri5"
    steps: Optional[int] = None
    rtol: float = 1e-6
    atol: float = 1e-9
    gradient: str = "discrete"
    schedule: Any = None
    augment: int = 0
    method_options: Optional[dict] = None
    adjoint_options: Optional[dict] = None
    monitor: Optional[Callable] = None
    max_steps: int = 10_000

    def __post_init__(self):
        if self.gradient not in GRADIENTS:
            raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {self.gradient!r}.")
        if self.steps is not None:
            check_positive_int("steps", self.steps)
        check_positive_int("augment", self.augment, minimum=0)
        _check_t_span(self.t_span)
        discrete = self.gradient == "discrete"
        for name in ("method_options", "schedule") if not discrete else ("adjoint_options",):
            if getattr(self, name):
                owner = "continuous" if discrete else "discrete"
                raise ValueError(f"`{name}`={getattr(self, name)!r} applies to the {owner} "
                                 f"gradient only, but gradient={self.gradient!r}; drop it or "
                                 f"change `gradient`.")
        # Unknown names and bad options fail here, not at the first forward call.
        solvers.get_stepper(self.method, **(self.method_options or {}))
        if self.steps is None:
            tab = solvers.TABLEAUX.get(self.method) if isinstance(self.method, str) else None
            if tab is None or tab.b_err is None:
                raise ValueError(f"an adaptive solve (steps=None) needs a Runge-Kutta method "
                                 f"with an error estimate {solvers.adaptive_methods()}, got "
                                 f"method={self.method!r}; pass steps=N for fixed steps "
                                 f"(multistep methods always need them).")
        if self.steps is None or self.gradient != "discrete":
            solvers.PIController(self.rtol, self.atol)   # bad tolerances fail here, by name
        if self.schedule is not None and not callable(getattr(self.schedule, "plan", None)):
            raise TypeError(f"`schedule` must be a checkpoint schedule (StoreAll(), Uniform(k), "
                            f"Revolve(s), Online(s)), got {self.schedule!r}.")
        unknown = set(self.adjoint_options or {}) - set(ADJOINT_OPTIONS)
        if unknown:
            raise ValueError(f"`adjoint_options` keys {sorted(unknown)} are not options of the "
                             f"backward solve; allowed: {ADJOINT_OPTIONS} (forward settings are "
                             f"the block's own fields).")

    # -- configuration ----------------------------------------------------------------------
    def with_config(self, **changes) -> "ODEBlock":
        """A copy with some settings changed and the same parameter layout (e.g. switch from
        fixed-step Euler + discrete adjoint to adaptive Dopri5 + continuous adjoint).

        The copy is validated like a new block (e.g. ``steps=None`` with a multistep method
        raises ``ValueError``)."""
        return dataclasses.replace(self, **changes)

    @property
    def analytic(self) -> bool:
        return False  # solver control flow; verified with a frozen grid instead

    @property
    def exact_vjp(self):
        """True when the VJP is the exact derivative of :meth:`forward` (discrete gradient on
        a fixed grid); otherwise a message naming the check that applies (read by
        :func:`adjointcore.gradcheck.check_layer`)."""
        if self.gradient == "discrete" and self.steps is not None:
            return True
        if self.gradient == "discrete":
            return ("adaptive solve: the VJP is the exact gradient of the frozen accepted grid, "
                    "while forward() re-chooses the grid when its input moves (an O(rtol) "
                    "difference); check it with adjointcore.sensitivity.check_solve_gradient "
                    "(finite differences on the frozen grid), or use steps=N")
        return (f"gradient={self.gradient!r} is a continuous adjoint: it approximates the "
                f"derivative to O(tolerance), not to roundoff; check it with "
                f"adjointcore.sensitivity.check_solve_gradient or against "
                f"gradient='discrete' at tight tolerances")

    @property
    def param_shapes(self):
        return dict(getattr(self.field_layer, "param_shapes", {"params": (self.n_params,)}))

    @property
    def n_params(self) -> int:
        return self.field_layer.n_params

    def init(self, rng, dtype=np.float64):
        return self.field_layer.init(rng, dtype)

    def output_shape(self, input_shape):
        shape = list(input_shape)
        shape[1] += self.augment
        return tuple(shape)

    # -- forward / VJP -----------------------------------------------------------------------
    def _field(self):
        return LayerField(self.field_layer)

    def forward(self, params, x, **context):
        """Solve from ``[x, 0]``; returns ``(y(t1), ODEBlockCache)``."""
        lowest = 2 if self.augment else 1       # augmented channels live on axis 1
        check_array("x", x, ndim=tuple(range(lowest, 33)), finite=True,
                    fix="The state is (N, channels, ...) when augment > 0, any shape otherwise.")
        y0 = ChannelPad(self.augment).forward(None, x)[0] if self.augment else x
        field = self._field()
        t0, t1 = (float(v) for v in self.t_span)
        solution = recording = None
        if self.steps is not None and self.gradient == "discrete":
            # The forward sweep of the discrete adjoint itself: its snapshots (or, for the
            # default schedule, its tapes) wait in the cache for the VJP, so the forward runs
            # once per forward + VJP pair under every schedule.
            grid = np.linspace(t0, t1, self.steps + 1)
            recording = begin_discrete_adjoint(field, y0, params, grid, method=self.method,
                                               method_options=self.method_options,
                                               schedule=self.schedule)
            y1, nfe, n_rej = recording.final_state[0], recording.forward_nfe, 0
        else:
            solution = solvers.solve(field, y0, (t0, t1), params=params, method=self.method,
                                     max_steps=self.max_steps, **self._grid_options(),
                                     **self._solve_options(t1))
            grid, y1 = solution.grid, solution.ys[-1]
            nfe, n_rej = int(solution.stats.nfe), int(solution.stats.n_rejected)
            if self.gradient == "discrete":
                # The adjoint of the frozen accepted grid; with the default schedule it reuses
                # the solve's own stages (no replay), else its sweep replays the grid now.
                taped = None if solution.stages is None else Recording(
                    grid, [(y,) for y in solution.ys], list(solution.stages), 0, self.method)
                recording = begin_discrete_adjoint(field, y0, params, grid, method=self.method,
                                                   schedule=self.schedule, recording=taped)
                nfe += recording.forward_nfe
        stats = ODEBlockStats("forward", nfe, grid.size - 1, n_rej, 0, 0, 0)
        if self.monitor is not None:
            self.monitor(stats)
        return y1, ODEBlockCache(tuple(x.shape), y0, y1, grid, solution, recording, stats)

    def _solve_options(self, t1) -> dict:
        """What the forward solve keeps: the end state only for backsolve; the accepted steps'
        stages for a taped discrete adjoint (FSAL pairs, default schedule); nothing else."""
        if self.gradient == "backsolve":
            return {"t_eval": np.array([t1]), "dense_output": False}
        if self.gradient == "discrete":
            fsal = solvers.TABLEAUX[self.method].fsal
            return {"dense_output": False, "keep_stages": self.schedule is None and fsal}
        return {}

    def _grid_options(self) -> dict:
        """``steps`` for fixed steps, else the tolerances (the solvers reject both at once)."""
        if self.steps is not None:
            return {"steps": self.steps}
        return {"rtol": self.rtol, "atol": self.atol}

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, params_bar, _ = self.vjp_with_stats(params, cache, y_bar, need_params)
        return x_bar, params_bar

    def vjp_with_stats(self, params, cache, y_bar, need_params=True):
        """Like :meth:`vjp`, also returning the backward :class:`ODEBlockStats`."""
        check_array("y_bar", y_bar, shape=tuple(cache.y1.shape),
                    fix="Pass the cotangent of the block's output (augmented shape).")
        field = self._field()
        if self.gradient == "discrete":
            if cache.recording is not None:
                g = cache.recording.gradient(y_bar, need_params=need_params)
            else:
                g = discrete_adjoint(field, cache.y0, params, cache.grid, y_bar,
                                     method=self.method, method_options=self.method_options,
                                     schedule=self.schedule, need_params=need_params)
            ck = g.stats.checkpoint
            stats = ODEBlockStats("backward", g.stats.recompute_nfe, ck.n_steps, 0,
                                  ck.max_live_snapshots, ck.recomputed_steps, g.stats.backward_vjps)
            y0_bar, params_bar = g.y0_bar, g.params_bar
        else:
            t0, t1 = (float(v) for v in self.t_span)
            opts = {"max_steps": self.max_steps, **self._grid_options(),
                    **(self.adjoint_options or {})}
            g = continuous_adjoint(field, cache.y0, params, np.array([t1]), y_bar[None], t0=t0,
                                   variant=self.gradient, method=self.method,
                                   forward_solution=cache.solution, **opts)
            s = g.stats
            stats = ODEBlockStats("backward", s.backward_nfe,
                                  s.backward_accepted, s.backward_rejected, 0, 0, s.backward_nfe)
            y0_bar, params_bar = g.y0_bar, (g.params_bar if need_params else None)
        if self.monitor is not None:
            self.monitor(stats)
        x_bar = y0_bar[:, :cache.x_shape[1]] if self.augment else y0_bar
        return x_bar, params_bar, stats

    def __repr__(self) -> str:
        grid = f"steps={self.steps}" if self.steps else f"rtol={self.rtol}, atol={self.atol}"
        return (f"ODEBlock({self.field_layer!r}, t_span={self.t_span}, method={self.method!r}, "
                f"{grid}, gradient={self.gradient!r}, augment={self.augment})")
