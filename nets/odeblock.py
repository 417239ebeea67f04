"""The ODE block: a layer whose forward is a solve and whose VJP is a chosen gradient method.

``y = ODEBlock(field, ...)(params, x)`` integrates ``dy/dt = f(t, y, params)`` from
``y(t0) = [x, 0]`` (``augment`` zero channels appended, Dupont et al. 2019) to ``t1``. ``field``
is a layer (wrapped as :class:`~adjointcore.fields.LayerField`) or any object following the
vector-field protocol: a user field, or a coupled system such as NODE-EW's
:class:`~nets.node_ew.CoupledField`, whose state also carries trained weights (see "Fields with
a state of their own" below).

Gradient methods (:func:`adjointcore.sensitivity.trajectory_gradient`, the one entry point)
------------------------------------------------------------------------------------------------
``"discrete"``      exact gradient of the discrete map (fixed grid, or the frozen accepted grid
                    of an adaptive solve) under a checkpoint ``schedule`` (default: taped
                    store-all);
``"backsolve"``     continuous adjoint, state reconstructed backwards (Chen et al. 2018);
``"interpolated"``  continuous adjoint on the forward dense output (CVODES style).

Fields with a state of their own
--------------------------------
A field may define how the block's input and the leading ``n_state_params`` entries of the
block's parameters form the initial state, and what of the final state the block outputs::

    n_state_params                                   # int
    initial_state(x, state_params) -> y0
    initial_state_vjp(y0_bar) -> (x_bar, state_params_bar)
    output(y1) -> out;   output_vjp(out_bar) -> y1_bar

The block's parameter vector is then ``[state_params, field params]``. :class:`CoupledField`
does this with ``theta0`` (NODE-EW: ``x`` in, ``x(T)`` out, parameters ``[theta0, theta1]``).

Work (:class:`solvers.Work`): the forward call's record is in the cache (``cache.stats``); the
backward call's record (the pair's forward and backward work) comes from
:meth:`ODEBlock.vjp_with_stats`; both are passed to the optional ``monitor(phase, work)``
after every call. The block itself keeps no state.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
from numpy.typing import DTypeLike, NDArray

import solvers
from adjointcore.backend import Array, get_array_module
from adjointcore.checkpointing import Schedule
from adjointcore.errors import check_array, check_positive_int
from adjointcore.fields import LayerField
from adjointcore.layers.base import Layer
from adjointcore.layers.shape import ChannelPad
from adjointcore.sensitivity import (
    GRADIENTS,
    TrajectorySweep,
    begin_trajectory_gradient,
    check_gradient_options,
)

__all__ = ["ODEBlock", "ODEBlockCache", "GRADIENTS", "as_block_field"]


def _check_t_span(t_span: Any) -> None:
    """Raise unless ``t_span`` is a pair of distinct finite times."""
    try:
        t0, t1 = (float(v) for v in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"`t_span` must be a pair (t0, t1) of times, got {t_span!r}.") from None
    if not (np.isfinite(t0) and np.isfinite(t1)) or t0 == t1:
        raise ValueError(f"`t_span` must be two distinct finite times, got {t_span!r}.")


def _is_layer(obj: Any) -> bool:
    """A layer's ``forward`` takes ``(params, x, ...)``; a field's ``(t, y, params)``."""
    if isinstance(obj, Layer):
        return True
    try:
        names = list(inspect.signature(obj.forward).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    return bool(names) and names[0] == "params"


def as_block_field(field: Any) -> Any:
    """The vector field an :class:`ODEBlock` integrates: a layer wrapped as
    :class:`~adjointcore.fields.LayerField`, a field object as it is.

    Raises
    ------
    TypeError
        ``field`` is neither (e.g. a plain function, which has no VJP).
    """
    if _is_layer(field):
        return LayerField(field)
    if solvers.is_field(field):
        return field
    raise TypeError(f"`field` must be a layer (forward(params, x), vjp(params, cache, y_bar)) or "
                    f"a vector field (forward(t, y, params), vjp(cache, dy_bar, need_params)), "
                    f"got {type(field).__name__} {field!r:.80}; a plain function has no VJP: "
                    f"wrap it in a field class with a hand-written vjp.")


class ODEBlockCache(NamedTuple):
    """What the VJP needs: the input's shape, the suspended trajectory gradient
    (:class:`~adjointcore.sensitivity.TrajectorySweep`), its step grid and the forward work."""

    x_shape: tuple[int, ...]
    sweep: TrajectorySweep
    grid: NDArray[np.float64]
    stats: solvers.Work


@dataclasses.dataclass(frozen=True, repr=False)
class ODEBlock(Layer):
    """Neural-ODE layer ``x -> y(t1)`` with a selectable gradient method.

    Parameters
    ----------
    field_layer : layer or vector field
        A layer mapping states of any shape (``(N, d + augment, ...)`` when ``augment > 0``)
        to the same shape (``t=`` passed when ``time_dependent``), or a vector field
        (``forward(t, y, params)``, ``vjp(cache, dy_bar, need_params)``), optionally with a
        state of its own (module notes; e.g. :class:`~nets.node_ew.CoupledField`).
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
        ``monitor(phase, work)`` after every call: ``("forward", Work)`` of the forward call,
        ``("backward", Work)`` of the VJP (forward and backward work of the pair).
    max_steps : int
    """

    field_layer: Any
    t_span: tuple[float, float] = (0.0, 1.0)
    method: str = "dopri5"
    steps: Optional[int] = None
    rtol: float = 1e-6
    atol: float = 1e-9
    gradient: str = "discrete"
    schedule: Optional[Schedule] = None
    augment: int = 0
    method_options: Optional[dict[str, Any]] = None
    adjoint_options: Optional[dict[str, Any]] = None
    monitor: Optional[Callable[[str, solvers.Work], Any]] = None
    max_steps: int = 10_000

    def __post_init__(self) -> None:
        # Bad options fail here, by name, not at the first forward call.
        as_block_field(self.field_layer)          # a plain function is refused
        if self.steps is not None:
            check_positive_int("steps", self.steps)
        check_positive_int("augment", self.augment, minimum=0)
        _check_t_span(self.t_span)
        check_gradient_options(self.gradient, self.method, self.steps, schedule=self.schedule,
                               method_options=self.method_options,
                               adjoint_options=self.adjoint_options)
        if self.steps is None or self.gradient != "discrete":
            solvers.PIController(self.rtol, self.atol)   # bad tolerances

    # -- configuration ----------------------------------------------------------------------
    def with_config(self, **changes: Any) -> "ODEBlock":
        """A copy with some settings changed and the same parameter layout (e.g. switch from
        fixed-step Euler + discrete adjoint to adaptive Dopri5 + continuous adjoint).

        The copy is validated like a new block (e.g. ``steps=None`` with a multistep method
        raises ``ValueError``)."""
        return dataclasses.replace(self, **changes)

    @property
    def analytic(self) -> bool:  # type: ignore[override]  # read-only, as configured
        return False  # solver control flow; verified with a frozen grid instead

    @property
    def exact_vjp(self) -> bool | str:  # type: ignore[override]  # read-only, as configured
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
    def n_state_params(self) -> int:
        """Leading parameters that enter the initial state (0 unless the field says so)."""
        return int(getattr(self.field_layer, "n_state_params", 0))

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        n_state = self.n_state_params
        if n_state:
            return {"state_params": (n_state,), "params": (self.field_layer.n_params,)}
        return dict(getattr(self.field_layer, "param_shapes", {"params": (self.n_params,)}))

    @property
    def n_params(self) -> int:
        return self.n_state_params + int(getattr(self.field_layer, "n_params", 0))

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> Array:
        """The field's initial parameters, flat (a coupled field's parts concatenated)."""
        if not callable(getattr(self.field_layer, "init", None)):
            raise TypeError(f"the field {self.field_layer!r} has no init(rng, dtype); build the "
                            f"block's {self.n_params} parameters yourself.")
        params = self.field_layer.init(rng, dtype)
        return np.concatenate(params) if isinstance(params, tuple) else params

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        if callable(getattr(self.field_layer, "output", None)):
            return tuple(input_shape)
        shape = list(input_shape)
        if self.augment:
            shape[1] += self.augment
        return tuple(shape)

    # -- forward / VJP -----------------------------------------------------------------------
    def _initial_state(self, params: Array | None, x: Array) -> tuple[Array, Array | None]:
        """``(y0, field params)`` from the input and the block's parameters."""
        field = self.field_layer
        if self.n_state_params:
            n = self.n_state_params
            # a field with state parameters gets params
            return field.initial_state(x, params[:n]), params[n:]  # type: ignore[index]
        y0 = ChannelPad(self.augment).forward(None, x)[0] if self.augment else x
        return y0, params

    def _options(self) -> dict:
        grid = {"steps": self.steps} if self.steps is not None else \
            {"rtol": self.rtol, "atol": self.atol}
        return dict(t0=float(self.t_span[0]), gradient=self.gradient, method=self.method,
                    schedule=self.schedule, method_options=self.method_options,
                    adjoint_options=self.adjoint_options, max_steps=self.max_steps, **grid)

    def forward(self, params: Array | None, x: Array,
                **context: Any) -> tuple[Array, ODEBlockCache]:
        """Solve from the initial state; returns ``(y(t1), ODEBlockCache)``."""
        lowest = 2 if self.augment else 1       # augmented channels live on axis 1
        check_array("x", x, ndim=tuple(range(lowest, 33)), finite=True,
                    fix="The state is (N, channels, ...) when augment > 0, any shape otherwise.")
        if params is not None and self.n_params:
            check_array("params", params, shape=(self.n_params,),
                        fix="Pass the block's flat parameter vector (block.init(rng)).")
        y0, field_params = self._initial_state(params, x)
        sweep = begin_trajectory_gradient(as_block_field(self.field_layer), y0, field_params,
                                          [float(self.t_span[1])], **self._options())
        y1 = sweep.ys[0]
        out = self.field_layer.output(y1) if self.n_state_params else y1
        if self.monitor is not None:
            self.monitor("forward", sweep.stats)
        return out, ODEBlockCache(tuple(x.shape), sweep, sweep.grid, sweep.stats)

    def vjp(self, params: Array | None, cache: ODEBlockCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        x_bar, params_bar, _ = self.vjp_with_stats(params, cache, y_bar, need_params)
        return x_bar, params_bar

    def vjp_with_stats(self, params: Array | None, cache: ODEBlockCache, y_bar: Array,
                       need_params: bool = True) -> tuple[Array, Array | None, solvers.Work]:
        """Like :meth:`vjp`, also returning the pair's :class:`solvers.Work` (forward and
        backward counters)."""
        field = self.field_layer
        n_state = self.n_state_params
        out_shape = tuple(cache.sweep.ys.shape[1:]) if not n_state else \
            tuple(np.shape(field.output(cache.sweep.ys[0])))
        check_array("y_bar", y_bar, shape=out_shape,
                    fix="Pass the cotangent of the block's output (augmented shape).")
        y1_bar = field.output_vjp(y_bar) if n_state else y_bar
        g = cache.sweep.gradient(y1_bar[None], need_params=need_params or n_state > 0)
        if self.monitor is not None:
            self.monitor("backward", g.stats)
        if n_state:
            x_bar, state_bar = field.initial_state_vjp(g.y0_bar)
            params_bar = None
            if need_params:
                params_bar = get_array_module(state_bar).concatenate([state_bar, g.params_bar])
            return x_bar, params_bar, g.stats
        x_bar = g.y0_bar[:, :cache.x_shape[1]] if self.augment else g.y0_bar
        params_bar = g.params_bar if need_params else None
        return x_bar, params_bar, g.stats

    def __repr__(self) -> str:
        grid = f"steps={self.steps}" if self.steps else f"rtol={self.rtol}, atol={self.atol}"
        return (f"ODEBlock({self.field_layer!r}, t_span={self.t_span}, method={self.method!r}, "
                f"{grid}, gradient={self.gradient!r}, augment={self.augment})")
