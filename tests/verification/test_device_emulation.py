"""The device emulation (issue 13, point 2): CuPy's rules on the CPU, and the synchronisations
each driver makes per step, asserted.

Per-step counts are measured as differences between two runs of the same driver with different
step counts, so the constant reads of a call (``y0`` and ``f(t0, y0)`` finite, Hairer's initial
step) cancel: fixed-step RK and multistep forwards 0, every discrete adjoint 0, adaptive forward
steps exactly 1 (accepted or rejected), continuous adjoints 1 per backward step.
"""
import numpy as np
import pytest

import solvers
from adjointcore import device_emulation as dev
from adjointcore.checkpointing import Revolve, StoreAll
from adjointcore.fields import LayerField
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.sensitivity import continuous_adjoint, discrete_adjoint

xp = dev.xp


def _problem(seed=0):
    layer = Sequential(Linear(3, 8), Tanh(), Linear(8, 3))
    rng = np.random.default_rng(seed)
    params = layer.init(rng)
    y0 = rng.standard_normal((4, 3))
    return LayerField(layer), params, y0


def _syncs(run):
    with dev.count_syncs() as counter:
        run()
    return counter


# -- the emulated array ------------------------------------------------------------------------
def test_host_conversion_and_mixing_are_refused():
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    for convert in (np.asarray, np.array, lambda v: np.concatenate([np.ones((1, 3)), v])):
        with pytest.raises(TypeError, match="host|Implicit"):
            convert(a)
    with pytest.raises(TypeError, match="host NumPy array"):
        a + np.ones(3)
    assert type(a + 1.0) is dev.DeviceArray and type(np.exp(a)) is dev.DeviceArray


def test_reads_are_counted_and_reductions_stay_on_the_device():
    a = xp.asarray(np.arange(4.0))
    with dev.count_syncs() as counter:
        total = a.sum()
        assert type(total) is dev.DeviceArray
        values = (float(total), bool(a.any()), int(a.argmax()), a[1].item(), a.get())
    assert values[0] == 6.0 and counter.total == 5
    assert dict(counter.kinds) == {"float": 1, "bool": 1, "int": 1, "item": 1, "get": 1}


# -- synchronisations per step -----------------------------------------------------------------
def _per_fixed_step(run, n=(8, 24)):
    """Reads per step of ``run(steps)`` (constant reads cancel)."""
    a, b = (_syncs(lambda k=k: run(k)).total for k in n)
    return (b - a) / (n[1] - n[0])


@pytest.mark.parametrize("method", ["rk4", "dopri5", "ab3", "abm4", "leapfrog"])
def test_fixed_step_forward_reads_nothing_per_step(method):
    field, params, y0 = _problem()
    p, y = xp.asarray(params), xp.asarray(y0)
    assert _per_fixed_step(lambda n: solvers.solve(field, y, (0.0, 1.0), p, method=method,
                                                   steps=n)) == 0
    # Streaming (t_eval without dense output; Runge-Kutta methods only, multistep solves keep
    # their trajectory) reads once per FINITE_CHECK_EVERY steps.
    streamed = _per_fixed_step(lambda n: solvers.solve(
        field, y, (0.0, 1.0), p, method=method, steps=n, t_eval=[0.5, 1.0],
        dense_output=False), n=(16, 48))
    assert streamed == (1 / 16 if method in solvers.TABLEAUX else 0)


@pytest.mark.parametrize("schedule", [None, StoreAll(), Revolve(snapshots=3)])
@pytest.mark.parametrize("method, options", [("rk4", None), ("ab3", None),
                                             ("lm", {"k": -0.1})])
def test_discrete_adjoint_reads_nothing(method, options, schedule):
    field, params, y0 = _problem(1)
    p, y = xp.asarray(params), xp.asarray(y0)

    def run(n):
        return discrete_adjoint(field, y, p, np.linspace(0.0, 1.0, n + 1), y, method=method,
                                method_options=options, schedule=schedule)
    assert _syncs(lambda: run(8)).total == _syncs(lambda: run(24)).total == 0


def _adaptive_reads(rtol):
    field, params, y0 = _problem(2)
    p, y = xp.asarray(params), xp.asarray(y0)
    counter = _syncs(lambda: solvers.solve(field, y, (0.0, 2.0), p, rtol=rtol, atol=rtol))
    steps = solvers.solve(field, y0, (0.0, 2.0), params, rtol=rtol, atol=rtol).stats.n_steps
    return counter.total, steps


def test_adaptive_forward_reads_once_per_step():
    (a, n_a), (b, n_b) = _adaptive_reads(1e-3), _adaptive_reads(1e-8)
    assert n_b > n_a + 5
    assert b - a == n_b - n_a


@pytest.mark.parametrize("variant", ["backsolve", "interpolated"])
def test_continuous_adjoint_reads_once_per_step(variant):
    field, params, y0 = _problem(3)
    p, y = xp.asarray(params), xp.asarray(y0)

    def reads_and_steps(rtol):
        run = lambda: continuous_adjoint(field, y, p, [2.0], y[None], t0=0.0,  # noqa: E731
                                         variant=variant, rtol=rtol, atol=rtol)
        counter = _syncs(run)
        w = continuous_adjoint(field, y0, params, [2.0], y0[None], t0=0.0, variant=variant,
                               rtol=rtol, atol=rtol).stats
        return counter, w.n_steps + w.backward_accepted + w.backward_rejected
    (a, n_a), (b, n_b) = reads_and_steps(1e-3), reads_and_steps(1e-8)
    assert n_b > n_a + 5 and b.total - a.total == n_b - n_a
    assert b.uploads == 0            # dense output read at stage times without host copies


def test_dense_output_at_one_time_copies_nothing_to_the_device():
    field, params, y0 = _problem(4)
    sol = solvers.solve(field, xp.asarray(y0), (0.0, 1.0), xp.asarray(params), rtol=1e-6)
    host = solvers.solve(field, y0, (0.0, 1.0), params, rtol=1e-6)
    with dev.count_syncs() as counter:
        values = [sol.sol(t) for t in np.linspace(0.0, 1.0, 13)]
    assert counter.uploads == 0 and counter.total == 0
    for t, v in zip(np.linspace(0.0, 1.0, 13), values, strict=True):
        assert np.array_equal(v.get(), host.sol(t))


# -- failures keep the same finite prefix as on the host ---------------------------------------
class _BlowUp:
    """y' = y^2 from y0 = 1: blows up at t = 1; fixed steps overflow to inf after it."""

    def forward(self, t, y, params):
        return y * y, None

    def vjp(self, cache, dy_bar, need_params=True):
        raise NotImplementedError


@pytest.mark.parametrize("t_eval", [None, np.linspace(0.0, 3.0, 7)])
def test_device_failure_keeps_the_host_prefix(t_eval):
    y0 = np.ones(2)
    kwargs = dict(method="rk4", steps=40, raise_on_failure=False, t_eval=t_eval)
    if t_eval is not None:
        kwargs["dense_output"] = False
    with np.errstate(all="ignore"):
        host = solvers.solve(_BlowUp(), y0, (0.0, 3.0), **kwargs)
        device = solvers.solve(_BlowUp(), xp.asarray(y0), (0.0, 3.0), **kwargs)
    assert host.status is device.status is solvers.Status.NON_FINITE
    assert np.array_equal(host.grid, device.grid) and np.array_equal(host.ts, device.ts)
    assert np.array_equal(host.ys, device.ys.get())
    assert host.stats.n_rejected == device.stats.n_rejected == 1


# -- mutations: what the emulation must catch --------------------------------------------------
def test_host_conversion_inside_a_step_is_caught(monkeypatch):
    """A solver step that converts the state with np.asarray fails on the emulated device."""
    import solvers._solve as solve_module
    original = solve_module.rk_step_unchecked

    def converting(*args, **kwargs):
        y1, y_err, stages = original(*args, **kwargs)
        np.asarray(y1)
        return y1, y_err, stages
    monkeypatch.setattr(solve_module, "rk_step_unchecked", converting)
    field, params, y0 = _problem(5)
    solvers.solve(field, y0, (0.0, 1.0), params, method="rk4", steps=4)      # host: fine
    with pytest.raises(TypeError, match="Implicit conversion"):
        solvers.solve(field, xp.asarray(y0), (0.0, 1.0), xp.asarray(params), method="rk4",
                      steps=4)


def test_extra_read_per_step_is_caught(monkeypatch):
    """A step that reads a scalar back each step gives a per-step count of 1, not 0."""
    import solvers._solve as solve_module
    original = solve_module.rk_step_unchecked

    def reading(*args, **kwargs):
        y1, y_err, stages = original(*args, **kwargs)
        float(y1.sum())
        return y1, y_err, stages
    monkeypatch.setattr(solve_module, "rk_step_unchecked", reading)
    field, params, y0 = _problem(6)
    p, y = xp.asarray(params), xp.asarray(y0)
    assert _per_fixed_step(lambda n: solvers.solve(field, y, (0.0, 1.0), p, method="rk4",
                                                   steps=n)) == 1


def test_anodev2_rda_weight_steps_stay_on_the_device():
    """ANODEV2 with RDA weights: the parameters are checked once per call, the wavenumbers
    are moved to the device once, so more weight steps add no read and no copy."""
    from adjointcore.layers import Conv2d
    from nets import ANODEV2Block, RDAEvolution
    conv = Sequential(Conv2d(2, 2, 3, padding=1), Tanh(), Conv2d(2, 2, 3, padding=1))
    counts = []
    for n_w in (4, 12):
        block = ANODEV2Block(conv, RDAEvolution(conv, sigma="tanh"), n_z=2, n_w=n_w)
        params = xp.asarray(block.init(np.random.default_rng(0)))
        x = xp.asarray(np.random.default_rng(1).standard_normal((2, 2, 5, 5)))
        block.forward(params, x)                        # first call: wavenumbers uploaded
        with dev.count_syncs() as counter:
            y, cache = block.forward(params, x)
            block.vjp(params, cache, xp.ones_like(y))
        counts.append((counter.total, counter.uploads))
    assert counts[0] == counts[1] and counts[1][1] == 0


def test_dropout_draws_its_mask_on_the_device():
    """A device generator: no copy, reproducible from its seed; a NumPy Generator still gives
    the host mask (one copy), equal to the NumPy backend's."""
    from adjointcore.layers import Dropout
    layer, x = Dropout(0.5), xp.asarray(np.ones((3, 4)))
    with dev.count_syncs() as counter:
        y1, cache = layer.forward(None, x, rng=xp.random.default_rng(3))
        y2, _ = layer.forward(None, x, rng=xp.random.default_rng(3))
        x_bar, _ = layer.vjp(None, cache, xp.ones_like(y1))
    assert counter.total == counter.uploads == 0
    assert np.array_equal(y1.get(), y2.get()) and np.array_equal(x_bar.get(), y1.get())
    with dev.count_syncs() as counter:
        y_host_rng, _ = layer.forward(None, x, rng=np.random.default_rng(3))
    reference, _ = layer.forward(None, np.ones((3, 4)), rng=np.random.default_rng(3))
    assert counter.uploads == 1 and np.array_equal(y_host_rng.get(), reference)
    with pytest.raises(TypeError, match="`rng`"):
        layer.forward(None, np.ones((3, 4)), rng=xp.random.default_rng(3))   # host x


def test_cross_entropy_reads_once():
    """Finite logits and labels in range are checked with one read (not three)."""
    from adjointcore.losses import softmax_cross_entropy
    logits = xp.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    labels = xp.asarray(np.array([0, 1, 2, 1, 0]))
    with dev.count_syncs() as counter:
        value, grad = softmax_cross_entropy(logits, labels)
    assert counter.total == 1 and counter.uploads == 0
    with pytest.raises(ValueError, match="`labels` must lie in"):
        softmax_cross_entropy(logits, xp.asarray(np.array([0, 1, 3, 1, 0])))
