"""ODE block: forward = solve, VJP = chosen gradient method; composition and work statistics."""
import numpy as np
import pytest

from adjointcore.checkpointing import Revolve
from adjointcore.gradcheck import central_difference, check_layer, relative_error
from adjointcore.layers import (
    ConcatConv2d,
    Conv2d,
    GlobalAvgPool2d,
    Linear,
    Sequential,
    Softplus,
    Tanh,
)
from nets.odeblock import ODEBlock

# Central differences at the automatic step reach ~1e-10 relative on these smooth maps;
# 1e-8 is the project's bound for gradients of discrete maps (DESIGN.md section 5.2).
FD_TOL = 1e-8


def mlp_field(d, hidden=8):
    return Sequential(Linear(d, hidden), Tanh(), Linear(hidden, d))


def conv_field(c):
    return Sequential(ConcatConv2d(c, c, 3, padding=1), Tanh(), ConcatConv2d(c, c, 3, padding=1))


@pytest.mark.parametrize("method,steps,schedule", [
    ("euler", 6, None), ("rk4", 5, Revolve(snapshots=2)), ("dopri5", 3, None),
    ("ab3", 8, None), ("abm4", 8, Revolve(snapshots=3)), ("leapfrog", 6, None),
])
def test_discrete_block_passes_check_layer(method, steps, schedule, rng):
    block = ODEBlock(mlp_field(3), method=method, steps=steps, schedule=schedule)
    x = rng.standard_normal((4, 3))
    report = check_layer(block, x=x, params=block.init(rng), seed=1)
    assert report.passed, str(report)
    assert report.figures["fd_x"] <= FD_TOL and report.figures["fd_params"] <= FD_TOL


def test_lm_block_gradient_and_k_option(rng):
    block = ODEBlock(mlp_field(3), method="lm", steps=6, method_options={"k": -0.2})
    report = check_layer(block, x=rng.standard_normal((2, 3)), params=block.init(rng))
    assert report.passed, str(report)


def test_composed_conv_stem_ode_block_classifier(rng):
    """conv stem -> ODE block (time-dependent conv field, augmented channel) -> classifier."""
    net = Sequential(Conv2d(1, 2, 3, padding=1), Tanh(),
                     ODEBlock(conv_field(3), method="rk4", steps=3, augment=1),
                     GlobalAvgPool2d(), Linear(3, 4))
    x = rng.standard_normal((2, 1, 5, 5))
    y, _ = net.forward(net.init(rng), x)
    assert y.shape == (2, 4)
    report = check_layer(net, x=x, params=net.init(rng), seed=3)
    assert report.passed, str(report)
    assert report.figures["taylor_min_rate"] >= 1.9


def test_augmented_dimensions_shapes_and_gradient(rng):
    block = ODEBlock(mlp_field(5), method="rk4", steps=4, augment=2)
    x = rng.standard_normal((3, 3))
    params = block.init(rng)
    y, cache = block.forward(params, x)
    assert y.shape == (3, 5) == block.output_shape(x.shape)
    x_bar, p_bar = block.vjp(params, cache, np.ones_like(y))
    assert x_bar.shape == x.shape and p_bar.shape == params.shape
    assert check_layer(block, x=x, params=params).passed


@pytest.mark.parametrize("variant", ["interpolated", "backsolve"])
def test_continuous_gradient_matches_discrete_within_tolerance(variant, rng):
    """At rtol 1e-10 the continuous adjoints agree with the exact gradient of a fine RK4 map.

    The fine map (400 RK4 steps, h^4 ~ 4e-11) is itself within ~1e-10 of the ODE gradient, so
    1e-7 relative is the stated multiple (1000x) of the adjoint tolerance.
    """
    field = mlp_field(3)
    params = field.init(rng)
    x = rng.standard_normal((2, 3))
    y_bar = rng.standard_normal((2, 3))
    cont = ODEBlock(field, method="dopri5", rtol=1e-10, atol=1e-12, gradient=variant)
    ref = ODEBlock(field, method="rk4", steps=400)
    _, c_cont = cont.forward(params, x)
    _, c_ref = ref.forward(params, x)
    xb, pb = cont.vjp(params, c_cont, y_bar)
    xb_ref, pb_ref = ref.vjp(params, c_ref, y_bar)
    assert relative_error(xb, xb_ref) < 1e-7
    assert relative_error(pb, pb_ref) < 1e-7


def test_adaptive_discrete_block_uses_frozen_grid(rng):
    """Adaptive Dopri5 + discrete adjoint equals FD of the replay on the recorded grid."""
    from adjointcore.fields import LayerField
    from adjointcore.sensitivity import grid_forward
    field = mlp_field(3)
    block = ODEBlock(field, method="dopri5", rtol=1e-5, atol=1e-8)
    params, x = field.init(rng), rng.standard_normal((2, 3))
    y, cache = block.forward(params, x)
    y_bar = rng.standard_normal(y.shape)
    _, p_bar = block.vjp(params, cache, y_bar)
    v = rng.standard_normal(params.shape)

    def replay(p):
        return float(np.sum(y_bar * grid_forward(LayerField(field), x, p, cache.grid,
                                                 "dopri5")[0][-1]))
    assert relative_error(p_bar @ v, central_difference(replay, params, v)) <= FD_TOL
    # the replay reproduces the adaptive solve's output bit for bit
    ys = grid_forward(LayerField(field), x, params, cache.grid, "dopri5")[0]
    assert np.array_equal(ys[-1], y)


def test_stats_reported_to_monitor(rng):
    records = []
    block = ODEBlock(mlp_field(3), method="rk4", steps=20, schedule=Revolve(snapshots=4),
                     monitor=lambda phase, work: records.append((phase, work)))
    params = block.init(rng)
    y, cache = block.forward(params, rng.standard_normal((2, 3)))
    block.vjp(params, cache, np.ones_like(y))
    (p_fwd, fwd), (p_bwd, bwd) = records
    assert (p_fwd, fwd.nfe, fwd.n_steps) == ("forward", 80, 20)
    assert p_bwd == "backward" and bwd.reverse_steps == 20 and bwd.forward_nfe == 80
    assert 1 <= bwd.max_live_snapshots <= 4 and bwd.recomputed_steps > 0
    assert bwd.vjps == 80  # one field VJP per RK4 stage per step
    assert bwd.backward_nfe == 4 * (bwd.recomputed_steps + 20)
    assert cache.stats == fwd


def test_with_config_switches_solver_and_gradient_keeping_params(rng):
    euler = ODEBlock(mlp_field(3), method="euler", steps=10)
    fine = euler.with_config(method="dopri5", steps=None, gradient="interpolated", rtol=1e-8)
    assert fine.n_params == euler.n_params and fine.param_shapes == euler.param_shapes
    params, x = euler.init(rng), rng.standard_normal((2, 3))
    y_e, _ = euler.forward(params, x)
    y_f, _ = fine.forward(params, x)
    assert 1e-4 < relative_error(y_e, y_f) < 1e-1  # Euler's O(h) error, h = 0.1


@pytest.mark.parametrize("kwargs,match", [
    ({"gradient": "autodiff"}, "gradient"),
    ({"steps": 0}, "steps"),
    ({"method": "ab3"}, "multistep|steps"),
    ({"method": "ab3", "gradient": "interpolated"}, "multistep|steps"),
    ({"method": "rk4"}, "error estimate"),
    ({"method": "foo", "steps": 4}, "unknown method 'foo'"),
    ({"t_span": (1.0, 1.0)}, "t_span"),
    ({"t_span": 1.0}, "t_span"),
    ({"augment": -1}, "augment"),
    ({"gradient": "backsolve", "method_options": {"k": 0.1}}, "method_options"),
    ({"gradient": "interpolated", "schedule": Revolve(2)}, "`schedule`.*discrete"),
    ({"adjoint_options": {"seminorm": True}}, "`adjoint_options`.*continuous"),
    ({"gradient": "backsolve", "adjoint_options": {"rtol": 1e-3}}, r"keys \['rtol'\]"),
])
def test_bad_configuration_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ODEBlock(mlp_field(3), **kwargs)


def test_bad_input_is_named(rng):
    block = ODEBlock(mlp_field(3), method="rk4", steps=2)
    params = block.init(rng)
    with pytest.raises(ValueError, match="x"):
        block.forward(params, np.full((2, 3), np.nan))
    y, cache = block.forward(params, rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="y_bar"):
        block.vjp(params, cache, np.ones((3, 3)))


def test_softplus_field_backwards_in_time(rng):
    field = Sequential(Linear(2, 6), Softplus(), Linear(6, 2))
    block = ODEBlock(field, t_span=(1.0, 0.0), method="rk38", steps=5)
    assert check_layer(block, x=rng.standard_normal((3, 2)), params=block.init(rng)).passed


def test_store_all_reuses_forward_stages_bitwise(rng):
    """Store-all RK blocks keep the forward stages: no field evaluation in the backward call,
    and gradients bitwise equal to a Revolve-checkpointed backward call."""
    records, records_r = [], []
    taped = ODEBlock(mlp_field(3), method="rk4", steps=7,
                     monitor=lambda phase, work: records.append(work))
    revolve = taped.with_config(schedule=Revolve(snapshots=2),
                                monitor=lambda phase, work: records_r.append(work))
    params, x = taped.init(rng), rng.standard_normal((2, 3))
    y, cache = taped.forward(params, x)
    y_r, cache_r = revolve.forward(params, x)
    assert np.array_equal(y, y_r)
    y_bar = rng.standard_normal(y.shape)
    xb, pb = taped.vjp(params, cache, y_bar)
    xb_r, pb_r = revolve.vjp(params, cache_r, y_bar)
    assert np.array_equal(xb, xb_r) and np.array_equal(pb, pb_r)
    assert records[-1].backward_nfe == 0 and records[-1].vjps == 4 * 7
    # Revolve keeps the forward call's snapshots: the backward call recomputes the steps its
    # schedule asks for and each step's stages (4 evaluations each), never the whole forward.
    back = records_r[-1]
    assert records_r[0].nfe == 4 * 7 and back.vjps == 4 * 7
    assert back.backward_nfe == 4 * (back.recomputed_steps + 7) and back.max_live_snapshots <= 2
    # A second VJP on the same cache runs the forward sweep again, with the same bits.
    xb_r2, pb_r2 = revolve.vjp(params, cache_r, y_bar)
    assert np.array_equal(xb_r2, xb_r) and np.array_equal(pb_r2, pb_r)


def test_training_switches_configuration_once_mid_training(rng):
    """NODE-EW section 3.2.2 with the ODE block: Adam on fixed-step Euler + discrete adjoint,
    then one switch (same parameters) to adaptive Dopri5 + interpolated continuous adjoint."""
    from adjointcore.losses import mse
    from adjointcore.optim import Adam
    x = rng.standard_normal((16, 2))
    target = np.stack([x[:, 0] * np.cos(1.0) - x[:, 1] * np.sin(1.0),
                       x[:, 0] * np.sin(1.0) + x[:, 1] * np.cos(1.0)], axis=1)  # rotation by 1
    block = ODEBlock(mlp_field(2, hidden=16), method="euler", steps=8)
    params = block.init(rng)
    opt = Adam(lr=2e-2)
    state = opt.init_state(params)

    def train(blk, params, state, iterations):
        losses = []
        for _ in range(iterations):
            y, cache = blk.forward(params, x)
            loss, y_bar = mse(y, target)
            params, state = opt.step(params, blk.vjp(params, cache, y_bar)[1], state)
            losses.append(float(loss))
        return params, state, losses

    params, state, bp = train(block, params, state, 60)
    fine = block.with_config(method="dopri5", steps=None, gradient="interpolated", rtol=1e-6)
    params, state, ft = train(fine, params, state, 10)
    assert bp[-1] < 0.2 * bp[0]                       # Euler/discrete phase learns
    assert ft[-1] < ft[0]                              # fine-tuning on the ODE keeps improving
    assert abs(ft[0] - bp[-1]) < 0.5 * bp[-1] + 1e-2   # same parameters: no restart at the switch


def test_with_config_is_validated_for_every_gradient():
    """``with_config(steps=None)`` on a multistep block raises, whatever the gradient (the check
    used to run for gradient='discrete' only, deferring the failure to the first forward)."""
    for gradient in ("discrete", "backsolve", "interpolated"):
        block = ODEBlock(mlp_field(3), method="ab3", steps=8, gradient=gradient)
        with pytest.raises(ValueError, match="steps"):
            block.with_config(steps=None)
    with pytest.raises(TypeError, match="schedule"):
        ODEBlock(mlp_field(3), method="rk4", steps=4).with_config(schedule="revolve")


@pytest.mark.parametrize("variant", ["interpolated", "backsolve"])
@pytest.mark.parametrize("method", ["rk4", "ab4"])
@pytest.mark.parametrize("t_span", [(0.0, 1.0), (1.0, 0.0)])
def test_continuous_gradient_with_fixed_steps(variant, method, t_span, rng):
    """Fixed steps with a continuous adjoint (the block passed rtol/atol together with steps,
    which the solvers reject, so this configuration always raised). 50 steps of h = 0.02 per
    solve against 400 RK4 steps + discrete adjoint: both are O(h^4) methods, but AB4's error
    constant is far larger (measured <= 2.0e-11 RK4, 3.1e-8 AB4); bounds 1e-9 and 3e-7."""
    field = mlp_field(3)
    params, x = field.init(rng), rng.standard_normal((2, 3))
    y_bar = rng.standard_normal((2, 3))
    block = ODEBlock(field, t_span=t_span, method=method, steps=50, gradient=variant)
    ref = ODEBlock(field, t_span=t_span, method="rk4", steps=400)
    _, cache = block.forward(params, x)
    _, c_ref = ref.forward(params, x)
    xb, pb = block.vjp(params, cache, y_bar)
    xb_ref, pb_ref = ref.vjp(params, c_ref, y_bar)
    bound = 1e-9 if method == "rk4" else 3e-7
    assert relative_error(xb, xb_ref) < bound and relative_error(pb, pb_ref) < bound


def test_continuous_gradient_of_augmented_image_block(rng):
    """4-D input, one augmented channel, time-dependent conv field, interpolated adjoint at rtol
    1e-9 vs 200 RK4 steps + discrete adjoint (h^4 ~ 6e-10): within 1x rtol (measured 7e-12)."""
    block = ODEBlock(conv_field(3), method="dopri5", rtol=1e-9, atol=1e-11, augment=1,
                     gradient="interpolated")
    ref = block.with_config(method="rk4", steps=200, gradient="discrete", rtol=1e-6, atol=1e-9)
    params, x = block.init(rng), rng.standard_normal((2, 2, 4, 4))
    y, cache = block.forward(params, x)
    assert y.shape == (2, 3, 4, 4)
    y_bar = rng.standard_normal(y.shape)
    xb, pb = block.vjp(params, cache, y_bar)
    xb_ref, pb_ref = ref.vjp(params, ref.forward(params, x)[1], y_bar)
    assert xb.shape == x.shape
    assert relative_error(xb, xb_ref) < 1e-9 and relative_error(pb, pb_ref) < 1e-9


@pytest.mark.parametrize("options,name", [({"rtol": -1.0}, "rtol"),
                                          ({"atol": float("nan")}, "atol"),
                                          ({"rtol": 0.0, "gradient": "backsolve"}, "rtol")])
def test_bad_tolerances_fail_at_construction(options, name):
    """Bad tolerances are refused when the block is built, naming the option (issue 9), not at
    the first forward call."""
    with pytest.raises(ValueError, match=f"`{name}`"):
        ODEBlock(mlp_field(3), **options)


def test_adaptive_method_message_lists_every_adaptive_pair():
    with pytest.raises(ValueError, match=r"\['bosh3', 'cash_karp', 'dopri5', 'tsit5'\]"):
        ODEBlock(mlp_field(3), method="rk4")
    ODEBlock(mlp_field(3), method="cash_karp")           # an adaptive pair is accepted


@pytest.mark.parametrize("shape", [(6,), (2, 3, 2, 2, 2)])
def test_any_state_shape_without_augmentation(shape):
    """Issue 9: the block integrates states of any shape (1-D, 5-D, ...) when nothing is
    appended on axis 1; its discrete gradient matches central differences."""
    from adjointcore.layers import Scale, Tanh
    rng = np.random.default_rng(11)
    n = shape[1] if len(shape) > 1 else shape[0]
    layer = Sequential(Scale(n, init_value=0.7), Tanh()) if len(shape) > 1 else None
    if layer is None:                                  # 1-D state: a field over one sample
        class Flat:
            n_params = 0
            def forward(self, params, x):
                return np.tanh(x), x
            def vjp(self, params, cache, y_bar):
                return y_bar * (1 - np.tanh(cache) ** 2), np.zeros(0)
        layer = Flat()
        params = np.zeros(0)
    else:
        params = layer.init(rng)
    block = ODEBlock(layer, method="rk4", steps=5)
    x = rng.standard_normal(shape)
    y, cache = block.forward(params, x)
    assert y.shape == x.shape
    y_bar = rng.standard_normal(shape)
    x_bar, _ = block.vjp(params, cache, y_bar)
    v = rng.standard_normal(shape)
    fd = central_difference(lambda z: block.forward(params, z)[0], x, v)
    assert relative_error(float(np.sum(x_bar * v)), float(np.sum(y_bar * fd))) < 1e-8
