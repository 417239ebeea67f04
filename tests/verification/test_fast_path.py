"""The unchecked fast path (validate at the boundary, run unchecked inside) computes exactly what
the checked path computes.

* every built-in layer: ``apply``/``apply_vjp`` equal ``forward``/``vjp`` bit for bit, a
  forward-only ``apply(tape=False)`` gives the same output, and the bound layer
  ``bind(params)`` gives ``apply``/``apply_vjp``'s outputs, caches and cotangents bit for bit;
  so does the bound field a ``FieldKernel`` keeps per parameter object;
* a fixed-step forward solve on the host (the bound field, tableau rows sliced once) fills its
  record bit for bit as the general step loop does: states, grid, NFE, failure status;
* ``FieldKernel``: the first evaluation is checked (a wrong field fails naming itself), work is
  counted, parameter cotangents are accumulated in reusable buffers with the roundings of
  freshly allocated sums;
* a solve with ``t_eval`` and no dense output streams its outputs (bitwise the dense values)
  and keeps no trajectory, so backsolve memory does not grow with the number of steps;
* mutation: a layer whose fast VJP drops a term is caught through the solver's adjoint.
"""
from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest

import solvers
from adjointcore.errors import ShapeError
from adjointcore.fields import LayerField
from adjointcore.gradcheck.catalog import builtin_examples
from adjointcore.layers import ConcatLinear, Linear, Sequential, Tanh
from adjointcore.layers._parallel import MIN_PARALLEL_SIZE
from adjointcore.layers.activation import BoundTanh
from adjointcore.layers.base import layer_kernel
from adjointcore.layers.binding import bind_layer
from adjointcore.layers.linear import BoundLinear
from adjointcore.sensitivity import continuous_adjoint
from adjointcore.sensitivity.discrete import discrete_adjoint, grid_forward
from nets import ODEBlock

EXAMPLES = builtin_examples(np.random.default_rng(0))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_apply_equals_checked_path_bitwise(example):
    _, layer, x, kwargs = example
    kwargs = dict(kwargs)
    params = kwargs.pop("params", None)
    if params is None:
        params = layer.init(np.random.default_rng(1))
    rng = copy.deepcopy(kwargs.get("rng"))       # the same random stream for both paths
    y, cache = layer.forward(params, x, **kwargs)
    y_fast, cache_fast = layer.apply(params, x, kwargs.get("t"), rng)
    assert np.array_equal(y_fast, y)
    y_bar = np.random.default_rng(2).standard_normal(y.shape)
    x_bar, p_bar = layer.vjp(params, cache, y_bar)
    out = np.full(layer.n_params, np.nan)
    x_bar_fast = layer.apply_vjp(params, cache_fast, y_bar, out)
    assert np.array_equal(x_bar_fast, x_bar)
    assert np.array_equal(out, p_bar)
    if not getattr(layer, "needs_rng", False):
        y_untaped, _ = layer.apply(params, x, kwargs.get("t"), None, tape=False)
        assert np.array_equal(y_untaped, y)
        assert _bound_equals_apply(layer, params, x, kwargs.get("t"))


def _bound_equals_apply(layer, params, x, t=None):
    """Whether the bound ``layer`` gives, bit for bit, ``apply(tape=False)``'s output (calling
    it), ``apply``'s output (``forward``) and ``apply_vjp``'s input and parameter cotangents
    (``vjp_into``, on the bound forward's cache)."""
    kernel = layer_kernel(layer)
    bound = bind_layer(kernel, params)
    y, cache = kernel.apply(params, x, t, None, True)
    y_bar = np.random.default_rng(2).standard_normal(y.shape)
    p_bar, p_bar_bound = np.full(layer.n_params, np.nan), np.full(layer.n_params, np.nan)
    x_bar = kernel.apply_vjp(params, cache, y_bar, p_bar)
    y_bound, cache_bound = bound.forward(x, t)
    x_bar_bound = bound.vjp_into(cache_bound, y_bar, p_bar_bound)
    return (np.array_equal(bound(x, t), kernel.apply(params, x, t, None, False)[0])
            and np.array_equal(y_bound, y) and np.array_equal(x_bar_bound, x_bar)
            and np.array_equal(p_bar_bound, p_bar))


class BiaslessBind(Linear):
    """Mutant: the bound map (a bare callable) forgets the bias (``apply`` is intact)."""

    def bind(self, params):
        w_t = params[self._layout[0]].reshape(self._layout[1]).T
        return lambda x, t=None: x @ w_t


class DoubledApply(Linear):
    """A subclass with its own ``apply``: its bound map must go through it."""

    def apply(self, params, x, t=None, rng=None, tape=True):
        y, cache = super().apply(params, x, t, rng, tape)
        return 2 * y, cache


def test_bound_map_mutant_is_caught_and_overridden_apply_is_honoured():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3))
    mutant = BiaslessBind(3, 2)
    assert not _bound_equals_apply(mutant, mutant.init(rng), x)
    for layer in (DoubledApply(3, 2), Sequential(DoubledApply(3, 2), Tanh())):
        assert _bound_equals_apply(layer, layer.init(rng), x)


def test_bound_map_reads_parameters_through_views():
    """In-place changes of ``params`` after binding show, as in ``apply``."""
    layer, params = _mlp()
    x = np.random.default_rng(6).standard_normal((5, 3))
    bound = bind_layer(layer, params)
    params *= 1.5
    assert np.array_equal(bound(x, 0.25), layer.apply(params, x, 0.25, None, False)[0])
    assert np.array_equal(bound.forward(x, 0.25)[0], layer.apply(params, x, 0.25)[0])


def _tanh_cases():
    """Inputs of every path of the bound tanh: small float64 and float32 host arrays (its
    direct path), a 0-d array, complex input, a float32 input whose cotangent is float64, and
    an array of MIN_PARALLEL_SIZE entries (chunked on several cores)."""
    rng = np.random.default_rng(9)
    small = rng.standard_normal((7, 5)) * 4
    return {"f64": (small, None), "f32": (small.astype(np.float32), None),
            "0d": (np.asarray(0.3), None), "complex": (small + 1j * small[::-1], None),
            "f32-f64bar": (small.astype(np.float32), np.float64),
            "large": (rng.standard_normal(MIN_PARALLEL_SIZE), None)}


@pytest.mark.parametrize("case", list(_tanh_cases()))
def test_bound_tanh_equals_apply_on_every_path(case):
    x, bar_dtype = _tanh_cases()[case]
    layer = Tanh()
    params = np.zeros(0)
    bound = layer.bind(params)
    y, cache = layer.apply(params, x)
    y_bar = np.random.default_rng(3).standard_normal(x.shape).astype(bar_dtype or x.dtype)
    y_b, cache_b = bound.forward(x)
    assert y_b.dtype == y.dtype and np.array_equal(y_b, y)
    assert np.array_equal(bound(x), layer.apply(params, x, None, None, False)[0])
    x_bar = layer.apply_vjp(params, cache, y_bar)
    x_bar_b = bound.vjp_into(cache_b, y_bar)
    assert x_bar_b.dtype == x_bar.dtype and np.array_equal(x_bar_b, x_bar)


class _BoundTanhSquared(BoundTanh):
    """Mutant: the bound VJP takes the derivative as ``1 - tanh(x)**2`` (cancels for large
    ``|x|``: not the accurate derivative ``apply_vjp`` computes)."""

    def vjp_into(self, cache, y_bar, params_bar=None):
        return y_bar * (1 - np.tanh(cache.x) ** 2)


class TanhSquaredBind(Tanh):
    def bind(self, params):
        return _BoundTanhSquared(self, params)


def test_bound_tanh_mutant_is_caught():
    x = np.random.default_rng(4).standard_normal((6, 3)) * 5
    assert _bound_equals_apply(Tanh(), np.zeros(0), x)
    assert not _bound_equals_apply(TanhSquaredBind(), np.zeros(0), x)


class _BoundDroppedBias(BoundLinear):
    """Mutant: the bound VJP forgets the bias cotangent."""

    def vjp_into(self, cache, y_bar, params_bar=None):
        x_bar = super().vjp_into(cache, y_bar, params_bar)
        if params_bar is not None:
            params_bar[self._layout[2]] = 0.0
        return x_bar


class BoundDroppedBiasLinear(Linear):
    """A layer whose ``apply_vjp`` is right but whose bound VJP (what solvers and adjoints
    use after their first evaluation) is the mutant above."""

    def bind(self, params):
        return _BoundDroppedBias(self, params)


def test_bound_vjp_mutant_is_caught_directly_and_through_the_adjoint():
    layer, params = _mlp()
    mutant = Sequential(ConcatLinear(3, 6), Tanh(), BoundDroppedBiasLinear(6, 3))
    x = np.random.default_rng(6).standard_normal((5, 3))
    assert _bound_equals_apply(layer, params, x, 0.25)
    assert not _bound_equals_apply(mutant, params, x, 0.25)
    assert _discrete_gradient_error(mutant, params) > 1e-3


def test_adaptive_discrete_adjoint_reverses_the_solve_stages_through_the_bound_vjp():
    """The discrete adjoint of an adaptive solve reverses the stages the solve kept, which
    another kernel evaluated and checked; its own kernel binds the field for their VJPs
    (``FieldKernel.bind_vjp``). The gradient is bitwise that of a field without ``bind``, and
    the bound-VJP mutant now changes it (by 100% of its largest entry here; the bar is 0.1%)."""
    from adjointcore.sensitivity import trajectory_gradient

    class Unbound(LayerField):
        bind = None

    layer, params = _mlp()
    rng = np.random.default_rng(11)
    y0, y_bar = rng.standard_normal((2, 5, 3))

    def params_bar(field):
        return trajectory_gradient(field, y0, params, [1.0], y_bar[None], t0=0.0,
                                   gradient="discrete", method="dopri5", rtol=1e-6,
                                   atol=1e-8).params_bar

    bound, unbound = params_bar(LayerField(layer)), params_bar(Unbound(layer))
    assert bound.tobytes() == unbound.tobytes()
    mutant = params_bar(LayerField(Sequential(ConcatLinear(3, 6), Tanh(),
                                              BoundDroppedBiasLinear(6, 3))))
    assert np.abs(mutant - bound).max() > 1e-3 * np.abs(bound).max()


def test_adaptive_discrete_gradient_binds_the_field_once():
    """Forward and reverse of an adaptive discrete gradient share one binding: the reverse
    sweep takes the field as the solve bound it (``FieldKernel.bound_field``); a kernel
    without a binding for those parameters reports None."""
    from adjointcore.sensitivity import begin_trajectory_gradient

    layer, params = _mlp()
    binds = []

    class Counted(LayerField):
        def bind(self, p):
            binds.append(p)
            return super().bind(p)

    y0, y_bar = np.random.default_rng(12).standard_normal((2, 5, 3))
    sweep = begin_trajectory_gradient(Counted(layer), y0, params, [1.0], t0=0.0,
                                      gradient="discrete", method="dopri5", rtol=1e-6, atol=1e-8)
    sweep.gradient(y_bar[None])
    assert len(binds) == 1 and binds[0] is params
    kernel = solvers.FieldKernel(LayerField(layer))
    assert kernel.bound_field(params) is None
    kernel.evaluate(0.0, y0, params)
    kernel.evaluate(0.1, y0, params)
    assert kernel.bound_field(params) is not None and kernel.bound_field(params.copy()) is None


def test_field_kernel_binds_once_per_parameter_object_and_honours_other_caches():
    """The kernel binds the field for the parameter object it is called with (again for a new
    object); a cache made at other parameters is differentiated at its own parameters."""
    layer, params = _mlp()
    field = LayerField(layer)
    binds = []

    class Counted(LayerField):
        def bind(self, p):
            binds.append(p)
            return super().bind(p)

    kernel = solvers.FieldKernel(Counted(layer))
    y, y_bar = np.random.default_rng(7).standard_normal((2, 4, 3))
    kernel.evaluate(0.0, y, params)                   # the checked first evaluation binds nothing
    assert binds == []
    _, cache = kernel.forward(0.1, y, params)
    kernel.evaluate(0.2, y, params)
    assert len(binds) == 1 and binds[0] is params
    other = 1.25 * params
    _, other_cache = field.forward_unchecked(0.1, y, other)
    buf, ref = np.empty(layer.n_params), np.empty(layer.n_params)
    for c, p in ((cache, params), (other_cache, other)):
        x_bar = kernel.vjp_into(c, y_bar, buf)
        ref_x_bar = layer.apply_vjp(p, c.layer_cache, y_bar, ref)
        assert np.array_equal(x_bar, ref_x_bar) and np.array_equal(buf, ref)
    kernel.forward(0.1, y, other)
    assert len(binds) == 2 and binds[1] is other


def _general_loop(field, method, y0, params, steps, max_steps=10_000, t_span=(0.0, 1.0)):
    """The record of the general RK step loop (the path the fast fixed-step loop replaces)."""
    from solvers._field import field_kernel
    from solvers._record import _Record
    from solvers._solve import _rk_loop
    from solvers.tableaux import get_tableau
    t0, t1 = t_span
    rec = _Record(t0, y0)
    _rk_loop(field_kernel(field), get_tableau(method), t0, t1, y0, params,
             abs(t1 - t0) / steps, max_steps, False, n_fixed=steps, rec=rec)
    return rec


def _assert_same_record(sol, rec):
    assert sol.status == rec.status and sol.stats.nfe == rec.nfe
    assert sol.stats.n_rejected == rec.n_rejected
    assert np.array_equal(sol.grid, np.asarray(rec.grid))
    assert np.array_equal(sol.step_sizes, np.asarray(rec.hs))
    ys = np.stack(rec.ys)
    assert sol.ys.dtype == ys.dtype and sol.ys.shape == ys.shape
    assert sol.ys.tobytes() == ys.tobytes()         # bit for bit (signed zeros included)


@pytest.mark.parametrize("method", list(solvers.TABLEAUX))
@pytest.mark.parametrize("t_span", [(0.0, 1.0), (0.7, -0.3)])
def test_fixed_step_forward_fills_the_record_of_the_general_loop(method, t_span):
    layer, params = _mlp()
    y0 = np.random.default_rng(7).standard_normal((4, 3))
    sol = solvers.solve(LayerField(layer), y0, t_span, params, method=method, steps=7,
                        dense_output=False)
    _assert_same_record(sol, _general_loop(LayerField(layer), method, y0, params, 7,
                                           t_span=t_span))


def test_fixed_step_forward_of_a_plain_function_and_its_failures_match_the_general_loop():
    """A field without ``bind`` (a function), a solve cut by ``max_steps``, and fields that
    blow up mid-solve or at ``t0`` give the general loop's status, NFE and partial states."""
    y0 = np.array([[0.5, -1.0]])

    def decay(t, y):
        return -y * (1.0 + t)

    def blow_up(t, y):
        return y * np.where(t > 0.45, np.inf, 1.0)

    def nan_at_start(t, y):
        return y * np.nan

    def widening(t, y):                     # a float32 state, a float64 slope
        return (-y).astype(np.float64)

    cases = [(decay, 10, 10_000, y0), (decay, 10, 4, y0), (blow_up, 10, 10_000, y0),
             (nan_at_start, 5, 10_000, y0), (decay, 6, 10_000, y0.astype(np.float32)),
             (widening, 6, 10_000, y0.astype(np.float32))]
    for fn, steps, max_steps, start in cases:
        for method in ("rk4", "dopri5"):
            sol = solvers.solve(fn, start, (0.0, 1.0), method=method, steps=steps,
                                max_steps=max_steps, dense_output=False, raise_on_failure=False)
            _assert_same_record(sol, _general_loop(fn, method, start, None, steps, max_steps))



def _mlp(d=3, h=6):
    layer = Sequential(ConcatLinear(d, h), Tanh(), Linear(h, d))
    return layer, layer.init(np.random.default_rng(3))


@pytest.mark.parametrize("values, dtype, finite", [
    ([1.0, 2.0], np.float64, True), ([1e308, 1e308], np.float64, True),
    ([3e38, 3e38], np.float32, True), ([1.0, np.inf], np.float64, False),
    ([np.nan, 1.0], np.float32, False), ([-np.inf, np.inf], np.float64, False),
    ([1 + 1j, np.nan], np.complex128, False), ([[1.0, 2.0]], np.float64, True)])
def test_muted_finiteness_check_agrees_with_isfinite(values, dtype, finite):
    """The step loops' check (a finite sum settles it; an overflowing sum of finite entries
    is decided entry by entry) answers as ``isfinite(x).all()`` and warns of nothing."""
    from solvers._record import _finite_muted
    x = np.array(values, dtype=dtype)
    assert bool(np.isfinite(x).all()) is finite
    with np.errstate(over="ignore", invalid="ignore"):
        assert _finite_muted(x) is finite


def test_field_kernel_checks_first_output_and_counts():
    layer, params = _mlp()
    kernel = solvers.FieldKernel(LayerField(layer))
    y = np.random.default_rng(4).standard_normal((5, 3))
    with pytest.raises(ShapeError, match="in_features"):     # the layers' own check, once
        kernel.evaluate(0.0, np.ones((5, 4)), params)
    dy = kernel.evaluate(0.0, y, params)
    dy2, cache = kernel.forward(0.3, y, params)
    assert kernel.nfe == 3 and dy.shape == y.shape
    buf = np.empty(layer.n_params)
    y_bar = kernel.vjp_into(cache, np.ones_like(y), buf)
    ref_y_bar, ref_p_bar, _ = LayerField(layer).vjp(cache, np.ones_like(y))
    assert np.array_equal(y_bar, ref_y_bar) and np.array_equal(buf, ref_p_bar)
    assert kernel.n_vjp == 1


def test_wrong_field_output_is_named():
    class Bad:
        def forward(self, t, y, params):
            return y[:, :1], None

        def vjp(self, cache, dy_bar, need_params=True):
            raise AssertionError("not reached")

        def __repr__(self):
            return "Bad()"

    with pytest.raises(ValueError, match=r"Bad\(\).*shape"):
        solvers.solve(Bad(), np.ones((2, 3)), (0.0, 1.0), steps=3, method="rk4")
    with pytest.raises(TypeError, match=r"returned list"):
        class Bad2(Bad):
            def forward(self, t, y, params):
                return [1.0], None
        solvers.solve(Bad2(), np.ones(3), (0.0, 1.0), steps=3, method="rk4")


@pytest.mark.parametrize("method,opts", [("dopri5", {}), ("tsit5", {"rtol": 1e-5}),
                                         ("rk4", {"steps": 7}), ("bosh3", {"rtol": 1e-4})])
@pytest.mark.parametrize("span", [(0.0, 1.0), (1.0, -0.5)])
def test_streamed_t_eval_equals_dense_output(method, opts, span):
    layer, params = _mlp()
    field = LayerField(layer)
    y0 = np.random.default_rng(5).standard_normal((4, 3))
    t_eval = np.linspace(*span, 6)[[0, 1, 2, 2, 4, 5]]
    dense = solvers.solve(field, y0, span, params, method=method, t_eval=t_eval, **opts)
    streamed = solvers.solve(field, y0, span, params, method=method, t_eval=t_eval,
                             dense_output=False, **opts)
    assert streamed.sol is None
    assert np.array_equal(streamed.ts, dense.ts) and np.array_equal(streamed.grid, dense.grid)
    assert np.array_equal(streamed.ys, dense.ys)
    # Streaming skips the Hermite end slope when the last step has no interior output time.
    assert dense.stats.nfe - 1 <= streamed.stats.nfe <= dense.stats.nfe


def _backsolve_peak(steps):
    layer = Sequential(Linear(16, 32), Tanh(), Linear(32, 16))
    params = layer.init(np.random.default_rng(6))
    y0 = np.random.default_rng(7).standard_normal((64, 16))
    block = ODEBlock(layer, method="rk4", steps=steps, gradient="backsolve")
    tracemalloc.start()
    try:
        y, cache = block.forward(params, y0)
        block.vjp(params, cache, np.ones_like(y))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_backsolve_memory_does_not_grow_with_steps():
    """One state is 8 KiB here; a stored trajectory would add 8 KiB per step (2.4 MiB more at
    400 steps than at 100). The peak must stay within 25% (it holds a few states and one step's
    working set)."""
    small, large = _backsolve_peak(100), _backsolve_peak(400)
    assert large < 1.25 * small, (small, large)


class DroppedBiasLinear(Linear):
    """Mutant: the fast VJP forgets the bias cotangent (the checked ``vjp`` delegates to it)."""

    def apply_vjp(self, params, cache, y_bar, params_bar=None):
        x_bar = super().apply_vjp(params, cache, y_bar, params_bar)
        if params_bar is not None:
            params_bar[self._layout[2]] = 0.0
        return x_bar


def _discrete_gradient_error(layer, params):
    field = LayerField(layer)
    rng = np.random.default_rng(8)
    y0, y_bar = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    grid = np.linspace(0.0, 0.5, 6)
    g = discrete_adjoint(field, y0, params, grid, y_bar, method="rk4")
    v = rng.standard_normal(params.shape)
    eps = 1e-6
    loss = lambda p: float(np.sum(y_bar * grid_forward(field, y0, p, grid, "rk4")[0][-1]))  # noqa: E731
    fd = (loss(params + eps * v) - loss(params - eps * v)) / (2 * eps)
    return abs(fd - g.params_bar @ v) / abs(fd)


def test_fast_vjp_mutant_is_caught_through_the_adjoint():
    """Central differences of the discrete map agree with the adjoint to ~1e-10 (bar 1e-8,
    the verification standard); the mutant misses by O(1)."""
    layer, params = _mlp()
    assert _discrete_gradient_error(layer, params) < 1e-8
    mutant = Sequential(ConcatLinear(3, 6), Tanh(), DroppedBiasLinear(6, 3))
    assert _discrete_gradient_error(mutant, params) > 1e-3


def test_continuous_backsolve_unchanged_without_dense_output():
    """The backsolve forward no longer builds dense output; its gradient is the same bits as
    when the forward solution (with dense output) is handed in."""
    layer, params = _mlp()
    field = LayerField(layer)
    y0 = np.random.default_rng(9).standard_normal((4, 3))
    t_obs, y_bars = np.array([0.5, 1.0]), np.random.default_rng(10).standard_normal((2, 4, 3))
    own = continuous_adjoint(field, y0, params, t_obs, y_bars, t0=0.0, variant="backsolve")
    sol = solvers.solve(field, y0, (0.0, 1.0), params, t_eval=t_obs)
    given = continuous_adjoint(field, y0, params, t_obs, y_bars, t0=0.0, variant="backsolve",
                               forward_solution=sol)
    assert np.array_equal(own.params_bar, given.params_bar)
    assert np.array_equal(own.y0_bar, given.y0_bar)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_adaptive_solve_keeps_stages_for_a_taped_adjoint_bitwise(method):
    """The accepted steps' stages of an adaptive solve are what a replay of its grid computes:
    the adjoint from them equals the replayed adjoint bit for bit and evaluates nothing."""
    from adjointcore.sensitivity.discrete import Recording
    layer, params = _mlp()
    field = LayerField(layer)
    rng = np.random.default_rng(11)
    y0, y_bar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    sol = solvers.solve(field, y0, (0.0, 1.3), params, method=method, rtol=1e-5,
                        dense_output=False, keep_stages=True)
    assert len(sol.stages) == sol.stats.n_accepted and sol.stats.n_accepted > 3
    rec = Recording(sol.grid, [(y,) for y in sol.ys], list(sol.stages), sol.stats.nfe, method)
    taped = discrete_adjoint(field, y0, params, sol.grid, y_bar, method=method, recording=rec)
    replayed = discrete_adjoint(field, y0, params, sol.grid, y_bar, method=method)
    assert np.array_equal(taped.y0_bar, replayed.y0_bar)
    assert np.array_equal(taped.params_bar, replayed.params_bar)
    assert taped.stats.backward_nfe == 0 and taped.stats.forward_nfe == sol.stats.nfe


def test_keep_stages_needs_an_adaptive_fsal_solve():
    layer, params = _mlp()
    y0 = np.ones((2, 3))
    with pytest.raises(ValueError, match="keep_stages"):
        solvers.solve(LayerField(layer), y0, (0, 1), params, method="rk4", steps=3,
                      keep_stages=True)
    with pytest.raises(ValueError, match="FSAL"):
        solvers.solve(LayerField(layer), y0, (0, 1), params, method="cash_karp",
                      keep_stages=True)


def test_adaptive_discrete_block_does_not_replay_its_grid():
    """ODEBlock(dopri5, discrete): the backward call evaluates the field only through VJPs."""
    records = []
    layer, params = _mlp()
    block = ODEBlock(layer, method="dopri5", rtol=1e-5,
                     monitor=lambda phase, work: records.append(work))
    x = np.random.default_rng(12).standard_normal((4, 3))
    y, cache = block.forward(params, x)
    block.vjp(params, cache, np.ones_like(y))
    fwd, back = records
    assert back.backward_nfe == 0 and back.vjps == 6 * fwd.n_accepted


@pytest.mark.parametrize("n", [1, 2, 7])
def test_taped_default_reports_store_all_counters(n):
    """The taped default runs two plain loops; its counters are StoreAll's, and its gradient is
    bitwise StoreAll's."""
    from adjointcore.checkpointing import StoreAll, replay
    layer, params = _mlp()
    field = LayerField(layer)
    rng = np.random.default_rng(13)
    y0, y_bar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    grid = np.linspace(0.0, 0.4, n + 1)
    taped = discrete_adjoint(field, y0, params, grid, y_bar, method="rk4")
    stored = discrete_adjoint(field, y0, params, grid, y_bar, method="rk4", schedule=StoreAll())
    assert (taped.stats.checkpoint_part() == replay(StoreAll(), n)
            == stored.stats.checkpoint_part())
    assert np.array_equal(taped.params_bar, stored.params_bar)
    assert taped.stats.backward_nfe == 0 and stored.stats.backward_nfe == 4 * n


@pytest.mark.parametrize("config", [dict(method="rk4", steps=5),
                                    dict(method="rk4", steps=5, schedule="revolve"),
                                    dict(method="rk4", steps=5, gradient="backsolve"),
                                    dict(method="dopri5", rtol=1e-4, atol=1e-6)])
def test_float32_stays_float32(config):
    """float32 parameters and inputs give float32 outputs and cotangents on every path (no
    silent promotion to float64 in buffers, stage combinations or the adjoint system)."""
    from adjointcore.checkpointing import Revolve
    config = dict(config)
    if config.pop("schedule", None):
        config["schedule"] = Revolve(2)
    layer = Sequential(Linear(3, 600), Tanh(), Linear(600, 3))    # threaded tanh at 2^18 too
    params = layer.init(np.random.default_rng(14), dtype=np.float32)
    x = np.random.default_rng(15).standard_normal((500, 3)).astype(np.float32)
    block = ODEBlock(layer, **config)
    y, cache = block.forward(params, x)
    x_bar, p_bar = block.vjp(params, cache, np.ones_like(y))
    assert y.dtype == x_bar.dtype == p_bar.dtype == np.float32


def test_tape_budget_recomputes_beyond_it_bitwise():
    """``Taped(max_bytes)`` tapes as many steps as fit (the first step's tape is measured) and
    recomputes the stages of the rest; the gradient keeps every bit."""
    from adjointcore.checkpointing import StoreAll, Taped
    from adjointcore.sensitivity.discrete import tape_bytes
    from solvers import get_stepper
    layer, params = _mlp()
    field = LayerField(layer)
    rng = np.random.default_rng(16)
    y0, y_bar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    grid = np.linspace(0.0, 0.6, 9)
    per_step = tape_bytes(get_stepper("rk4").step_taped(field, 0, 0.0, 0.075, (y0,), params)[2])
    assert per_step > 4 * 4 * 3 * 8          # at least the four stage derivatives
    full = discrete_adjoint(field, y0, params, grid, y_bar, method="rk4")
    for budget, n_taped in ((int(2.5 * per_step), 2), (0, 0), (10 * per_step, 8)):
        g = discrete_adjoint(field, y0, params, grid, y_bar, method="rk4",
                             schedule=Taped(max_bytes=budget))
        assert np.array_equal(g.params_bar, full.params_bar)
        assert np.array_equal(g.y0_bar, full.y0_bar)
        assert g.stats.backward_nfe == 4 * (8 - n_taped)
        assert g.stats.checkpoint_part() == full.stats.checkpoint_part()
    stored = discrete_adjoint(field, y0, params, grid, y_bar, method="rk4", schedule=StoreAll())
    assert np.array_equal(stored.params_bar, full.params_bar)


@pytest.mark.parametrize("kind", ["ConcatLinear", "ConcatConv2d"])
def test_fast_path_converts_numpy_time_like_forward(kind):
    """A NumPy scalar time (as LMM steppers pass from a float64 grid) must not widen a float32
    output on the fast path: ``apply`` converts it as ``forward`` does."""
    from adjointcore.layers import ConcatConv2d
    if kind == "ConcatConv2d":
        layer, x = ConcatConv2d(2, 3, 3, padding=1), np.ones((2, 2, 4, 4), np.float32)
    else:
        layer, x = ConcatLinear(3, 5), np.ones((2, 3), np.float32)
    params = layer.init(np.random.default_rng(17), dtype=np.float32)
    y_checked, _ = layer.forward(params, x, t=np.float64(0.3))
    y_fast, _ = layer.apply(params, x, np.float64(0.3))
    assert y_fast.dtype == y_checked.dtype == np.float32
    assert np.array_equal(y_fast, y_checked)


def test_layer_passed_as_a_field_is_named():
    """A layer passed straight to ``solve`` used to fail inside a step with Python's own
    TypeError; the first (checked) evaluation now says to wrap it (issue 9)."""
    layer, params = _mlp()
    with pytest.raises(TypeError, match=r"is a layer .*LayerField\(layer\)"):
        solvers.solve(layer, np.ones((2, 3)), (0.0, 1.0), params, method="rk4", steps=3)


def test_field_forward_must_return_a_pair():
    class NoCache:
        def forward(self, t, y, params):
            return -y

        def vjp(self, cache, dy_bar, need_params=True):
            raise AssertionError("not reached")

    with pytest.raises(TypeError, match=r"must return the pair \(dy, cache\)"):
        solvers.solve(NoCache(), np.ones(3), (0.0, 1.0), method="rk4", steps=3)
