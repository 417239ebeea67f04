"""ANODEV2 coupled block (nets.anodev2): discrete adjoint vs finite differences, Taylor test,
checkpointing, the paper's configurations, mutations."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nets._rda as rda
from adjointcore.checkpointing import Revolve, StoreAll, Uniform
from adjointcore.errors import ShapeError
from adjointcore.gradcheck import central_difference, relative_error, taylor_test
from adjointcore.layers import ConcatConv2d, Conv2d, Linear, Sequential, Tanh
from nets._rda import rda_step
from nets.anodev2 import (ANODEV2Block, LayerEvolution, RDAEvolution, apply_indices)

# Central FD of the same discrete map, float64: ~1e-10 attainable; 1e-8 is the project's bar.
FD_TOL = 1e-8


def _problem(seed, channels=2, k=3, hw=4, batch=2, kind="rda", sigma="tanh",
             per_channel=False):
    rng = np.random.default_rng(seed)
    f = Sequential(Conv2d(channels, channels, k, padding=k // 2), Tanh(),
                   Conv2d(channels, channels, k, padding=k // 2))
    if kind == "rda":
        evo = RDAEvolution(f, sigma=sigma, per_channel=per_channel)
        p = evo.init(rng) + rng.uniform(0.0, 0.3, evo.n_params)   # tau stays > 0
    else:
        evo = LayerEvolution(Sequential(Linear(f.n_params, 4), Tanh(), Linear(4, f.n_params)))
        p = evo.init(rng)
    z0 = rng.standard_normal((batch, channels, hw, hw))
    return rng, f, evo, z0, f.init(rng), p


def _gradient_errors(block, rng, z0, w0, p, schedule=None):
    """Relative error of <c, J d> (central FD) against <grad, d> for z0, w0 and p."""
    z_n, trace = block.forward(z0, w0, p)
    c = rng.standard_normal(z_n.shape)
    grads = block.vjp(trace, c, schedule=schedule)
    args = {"z0": z0, "w0": w0, "p": p}
    errors = {}
    for name, x in args.items():
        d = rng.standard_normal(x.shape)

        def fun(xx, name=name):
            kw = dict(args, **{name: xx})
            return block.forward(kw["z0"], kw["w0"], kw["p"])[0]

        jd = central_difference(fun, x, d)
        scale = np.linalg.norm(c) * np.linalg.norm(jd)
        errors[name] = relative_error(np.sum(c * jd), np.sum(getattr(grads, name) * d), scale)
    return errors


# -- configurations --------------------------------------------------------------------------------
def test_paper_configurations_apply_the_right_weights():
    assert apply_indices(5, 5) == (0, 1, 2, 3, 4)                   # configuration 1
    assert apply_indices(2, 10) == (0, 5)                           # configuration 2
    assert apply_indices(2, 10, "endpoints") == (0, 10)             # sec. 2.2 reading
    assert apply_indices(3, 6, "endpoints") == (0, 3, 6)
    _, f, evo, *_ = _problem(0)
    b1 = ANODEV2Block.from_configuration(f, evo, 1)
    b2 = ANODEV2Block.from_configuration(f, evo, 2)
    assert (b1.n_z, b1.n_w, b1.dt_z, b1.dt_w) == (5, 5, 0.2, 0.2)
    assert (b2.n_z, b2.n_w, b2.dt_z, b2.dt_w) == (2, 10, 0.5, 0.1)


@pytest.mark.parametrize("number, apply", [(1, "euler"), (2, "euler"), (2, "endpoints")])
def test_forward_matches_hand_written_loop(number, apply):
    """Independent oracle: the coupled Euler / RDA recursion spelled out with rda_step."""
    rng, f, evo, z0, w0, p = _problem(1)
    block = ANODEV2Block.from_configuration(f, evo, number, apply=apply)
    shapes = list(f.param_shapes.items())            # weight, bias, weight, bias
    ws = [w0]
    for _ in range(block.n_w):
        w = ws[-1].copy()
        o, kernel = 0, 0
        for _, shape in shapes:
            n = int(np.prod(shape))
            if len(shape) == 4:
                tau, v, rho = p[4 * kernel], p[4 * kernel + 1:4 * kernel + 3], p[4 * kernel + 3]
                w[o:o + n] = rda_step(w[o:o + n].reshape(shape), block.dt_w, tau, v, rho,
                                      "tanh")[0].ravel()
                kernel += 1
            o += n
        ws.append(w)
    z = z0
    for i in range(block.n_z):
        theta = ws[block.apply_at[i]]
        z = z + block.dt_z * f.forward(theta, z)[0]
    np.testing.assert_array_equal(block.forward(z0, w0, p)[0], z)
    np.testing.assert_array_equal(block.weights(w0, p)[-1], ws[-1])


def test_zero_evolution_reduces_to_neural_ode():
    """tau = v = rho = 0 and sigma = identity: constant weights, i.e. Euler on z' = f(z; w0);
    the w0 gradient is then the sum over steps of the per-step parameter gradients."""
    rng, f, _, z0, w0, _ = _problem(2)
    evo = RDAEvolution(f, sigma="identity")
    p = np.zeros(evo.n_params)
    block = ANODEV2Block(f, evo, n_z=3, n_w=6)
    z, zs = z0, []
    for _ in range(3):
        zs.append(z)
        z = z + block.dt_z * f.forward(w0, z)[0]
    z_n, trace = block.forward(z0, w0, p)
    np.testing.assert_allclose(z_n, z, rtol=0, atol=1e-14)      # FFT round trip only
    c = rng.standard_normal(z.shape)
    grads = block.vjp(trace, c)
    z_bar, w_bar = c, np.zeros_like(w0)
    for i in reversed(range(3)):
        x_bar, g = f.vjp(w0, f.forward(w0, zs[i])[1], block.dt_z * z_bar)
        z_bar, w_bar = z_bar + x_bar, w_bar + g
    np.testing.assert_allclose(grads.z0, z_bar, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grads.w0, w_bar, rtol=0, atol=1e-12)


# -- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rda", "layer"])
@pytest.mark.parametrize("number, apply", [(1, "euler"), (2, "euler"), (2, "endpoints")])
def test_gradients_match_central_differences_paper_configurations(kind, number, apply):
    rng, f, evo, z0, w0, p = _problem(3, kind=kind)
    block = ANODEV2Block.from_configuration(f, evo, number, apply=apply)
    errors = _gradient_errors(block, rng, z0, w0, p)
    assert max(errors.values()) <= FD_TOL, errors


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_z=st.integers(1, 3), ratio=st.integers(1, 3),
       apply=st.sampled_from(["euler", "endpoints"]), kind=st.sampled_from(["rda", "layer"]),
       sigma=st.sampled_from(["identity", "tanh"]), channels=st.integers(1, 2),
       k=st.sampled_from([1, 3]), hw=st.integers(3, 5), batch=st.integers(1, 2),
       per_channel=st.booleans())
def test_gradients_match_central_differences(seed, n_z, ratio, apply, kind, sigma, channels,
                                             k, hw, batch, per_channel):
    if apply == "endpoints" and n_z == 1:
        apply = "euler"
    n_w = ratio * (n_z if apply == "euler" else n_z - 1)
    rng, f, evo, z0, w0, p = _problem(seed, channels, k, hw, batch, kind, sigma, per_channel)
    block = ANODEV2Block(f, evo, n_z=n_z, n_w=n_w, t1=0.8, apply=apply)
    errors = _gradient_errors(block, rng, z0, w0, p)
    assert max(errors.values()) <= FD_TOL, errors


@pytest.mark.parametrize("kind", ["rda", "layer"])
@pytest.mark.parametrize("number", [1, 2])
def test_taylor_remainder_has_slope_two(kind, number):
    rng, f, evo, z0, w0, p = _problem(4, kind=kind)
    block = ANODEV2Block.from_configuration(f, evo, number)
    sizes = np.cumsum([z0.size, w0.size])

    def split(m):
        z, w, q = np.split(m, sizes)
        return z.reshape(z0.shape), w, q

    z_n, trace = block.forward(z0, w0, p)
    c = rng.standard_normal(z_n.shape)
    grads = block.vjp(trace, c)
    m = np.concatenate([z0.ravel(), w0, p])
    grad = np.concatenate([grads.z0.ravel(), grads.w0, grads.p])
    dm = rng.standard_normal(m.shape)
    dm[-evo.n_params:] = np.abs(dm[-evo.n_params:])      # keeps tau >= 0 for RDA
    res = taylor_test(lambda mm: float(np.sum(c * block.forward(*split(mm))[0])), grad, m, dm)
    assert res.converged
    assert abs(res.slope1 - 2.0) <= 0.05, res


def test_time_dependent_f_receives_step_times():
    rng = np.random.default_rng(5)
    f = Sequential(ConcatConv2d(2, 2, 3, padding=1), Tanh())
    evo = RDAEvolution(f, sigma="tanh")
    p = evo.init(rng) + 0.2
    block = ANODEV2Block(f, evo, n_z=2, n_w=4)
    errors = _gradient_errors(block, rng, rng.standard_normal((1, 2, 4, 4)), f.init(rng), p)
    assert max(errors.values()) <= FD_TOL, errors


@pytest.mark.parametrize("schedule", [Revolve(snapshots=2), Revolve(snapshots=3), Uniform(3)])
def test_checkpointed_weight_sweep_is_bitwise_store_all(schedule):
    rng, f, evo, z0, w0, p = _problem(6)
    block = ANODEV2Block(f, evo, n_z=2, n_w=10, apply="endpoints")
    z_n, trace = block.forward(z0, w0, p)
    c = rng.standard_normal(z_n.shape)
    ref = block.vjp(trace, c, schedule=StoreAll())
    got = block.vjp(trace, c, schedule=schedule)
    for name in ("z0", "w0", "p"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    assert got.stats.n_steps == 10 and got.stats.recomputed_steps > 0
    assert got.stats.max_live_snapshots <= (schedule.snapshots or 10)


# -- mutations -------------------------------------------------------------------------------------
def test_mutation_missing_conjugate_is_caught_at_block_level(monkeypatch):
    rng, f, evo, z0, w0, p = _problem(7, hw=5)
    p = p.copy()
    p[1:3] = (0.8, -0.5)               # advection on the first kernel: conj(E) != E
    block = ANODEV2Block.from_configuration(f, evo, 1)
    assert max(_gradient_errors(block, np.random.default_rng(0), z0, w0, p).values()) <= FD_TOL
    monkeypatch.setattr(rda, "adjoint_multiplier", lambda e: e)
    errors = _gradient_errors(block, np.random.default_rng(0), z0, w0, p)
    assert errors["w0"] > 1e-4


def test_mutation_wrong_coupling_index_is_caught():
    """Injecting f's parameter gradient at the wrong weight index (the 'endpoints' indices in
    an 'euler' block) must fail the FD check."""
    rng, f, evo, z0, w0, p = _problem(8)
    block = ANODEV2Block(f, evo, n_z=2, n_w=4)
    wrong = ANODEV2Block(f, evo, n_z=2, n_w=4, apply="endpoints")
    z_n, _ = block.forward(z0, w0, p)
    c = rng.standard_normal(z_n.shape)
    grads = wrong.vjp(wrong.forward(z0, w0, p)[1], c)
    d = rng.standard_normal(w0.shape)
    jd = central_difference(lambda w: block.forward(z0, w, p)[0], w0, d)
    assert relative_error(np.sum(c * jd), np.sum(grads.w0 * d)) > 1e-3


# -- bad input -------------------------------------------------------------------------------------
def test_bad_configuration_and_shapes_raise_clear_errors():
    rng, f, evo, z0, w0, p = _problem(9)
    with pytest.raises(ValueError, match="multiple of `n_z`"):
        ANODEV2Block(f, evo, n_z=3, n_w=4)
    with pytest.raises(ValueError, match="endpoints"):
        ANODEV2Block(f, evo, n_z=1, n_w=4, apply="endpoints")
    with pytest.raises(ValueError, match="apply"):
        ANODEV2Block(f, evo, apply="midpoint")
    with pytest.raises(ValueError, match="1 or 2"):
        ANODEV2Block.from_configuration(f, evo, 3)
    other = Sequential(Conv2d(3, 3, 3, padding=1))
    with pytest.raises(ValueError, match="evolves"):
        ANODEV2Block(other, evo)
    with pytest.raises(ValueError, match="conv kernels"):
        RDAEvolution(Sequential(Linear(3, 3)))
    block = ANODEV2Block(f, evo)
    with pytest.raises(ShapeError, match="w0"):
        block.forward(z0, w0[:-1], p)
    with pytest.raises(ShapeError, match="p"):
        block.forward(z0, w0, p[:-1])
    shrink = Sequential(Conv2d(2, 2, 3))
    with pytest.raises(ShapeError, match="preserve"):
        ANODEV2Block(shrink, RDAEvolution(shrink)).forward(z0, shrink.init(rng),
                                                           RDAEvolution(shrink).init())


def test_backend_agrees_with_numpy(xp):
    from adjointcore.backend import to_host
    rng, f, evo, z0, w0, p = _problem(10)
    block = ANODEV2Block.from_configuration(f, evo, 2)
    z_np, tr_np = block.forward(z0, w0, p)
    c = rng.standard_normal(z_np.shape)
    ref = block.vjp(tr_np, c)
    z_n, trace = block.forward(xp.asarray(z0), xp.asarray(w0), xp.asarray(p))
    got = block.vjp(trace, xp.asarray(c), schedule=Revolve(snapshots=2))
    np.testing.assert_allclose(to_host(z_n), z_np, rtol=0, atol=1e-12)   # GEMM/FFT roundoff
    for name in ("z0", "w0", "p"):
        np.testing.assert_allclose(to_host(getattr(got, name)), getattr(ref, name),
                                   rtol=1e-10, atol=1e-12)
