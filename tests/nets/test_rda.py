"""The RDA Fourier step of ANODEV2 (nets._rda): physics checks, VJP checks, mutations."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nets._rda as rda
from adjointcore.backend import to_host
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import central_difference, dot_product_test, relative_error
from nets._rda import rda_step, rda_step_vjp, wavenumbers

# FD of the same discrete map in float64: truncation O(eps^2) + roundoff O(eps_mach/eps) with
# eps ~ 6e-6 leaves ~1e-10; 1e-8 is the project's bar for solver-level gradients.
FD_TOL = 1e-8


# -- wavenumber convention -------------------------------------------------------------------------
def test_wavenumbers_are_two_pi_fftfreq_over_spacing():
    k0, k1 = wavenumbers((4, 5), spacing=0.5)
    np.testing.assert_array_equal(k0[:, 0], 2 * np.pi * np.fft.fftfreq(4, d=0.5))
    np.testing.assert_array_equal(k1[0], 2 * np.pi * np.fft.fftfreq(5, d=0.5))
    assert k0[1, 0] == pytest.approx(np.pi)          # 2 pi / (n d) = pi for n=4, d=0.5


@pytest.mark.parametrize("spacing", [1.0, 0.5, 2.0])
def test_plane_wave_decays_and_moves_with_physical_wavenumber(spacing):
    """cos(k x) on the grid x = a * spacing: diffusion decays by exp(-tau k^2 t), advection by
    v maps it to cos(k (x + v t)) (the pattern moves by -v t)."""
    n, m = 8, 1
    x = np.arange(n) * spacing
    k = 2 * np.pi * m / (n * spacing)
    w = np.cos(k * x)[:, None] * np.ones((1, 3))
    tau, v0, dt = 0.3, 0.37, 0.8
    out, _ = rda_step(w, dt, tau, (v0, 0.0), 0.0, spacing=spacing)
    expected = np.exp(-tau * k**2 * dt) * np.cos(k * (x + v0 * dt))[:, None] * np.ones((1, 3))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-14)   # exact mode: roundoff only


# -- (a) against a finite-difference solve of the linear PDE ---------------------------------------
TAU, V, RHO, T_END = 0.1, (0.7, -0.4), 0.3, 0.5


def _fd_operator(w, h):
    """tau Lap w + v . grad w + rho w by periodic second-order central differences."""
    lap = sum(np.roll(w, -1, a) - 2 * w + np.roll(w, 1, a) for a in (0, 1)) / h**2
    grad = [(np.roll(w, -1, a) - np.roll(w, 1, a)) / (2 * h) for a in (0, 1)]
    return TAU * lap + V[0] * grad[0] + V[1] * grad[1] + RHO * w


def _rk4(w, h, t_end, n_steps):
    dt = t_end / n_steps
    for _ in range(n_steps):
        k1 = _fd_operator(w, h)
        k2 = _fd_operator(w + 0.5 * dt * k1, h)
        k3 = _fd_operator(w + 0.5 * dt * k2, h)
        k4 = _fd_operator(w + dt * k3, h)
        w = w + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return w


def _pde_errors(ns=(32, 64, 128)):
    """Max-norm gap between the FD/RK4 solve and the spectral step on grids of n points."""
    errors = []
    for n in ns:
        h = 2 * np.pi / n
        x = np.arange(n) * h
        w0 = np.exp(np.sin(x)[:, None] + 0.5 * np.cos(2 * x)[None, :])
        spectral, _ = rda_step(w0, T_END, TAU, V, RHO, spacing=h)
        errors.append(np.abs(_rk4(w0, h, T_END, 400) - spectral).max())
    return np.array(errors)


def test_matches_finite_difference_pde_solve_at_second_order():
    """RK4 with dt = 1.25e-3 has time error ~1e-11, far below the O(h^2) space error, so the
    observed order between successive halvings of h is the central differences' 2 (measured
    1.98 and 1.996 on n = 32, 64, 128; n = 16 is still pre-asymptotic at 1.83)."""
    errors = _pde_errors()
    orders = np.log2(errors[:-1] / errors[1:])
    assert errors[-1] < 1e-2
    np.testing.assert_allclose(orders, 2.0, atol=0.05)


# -- (b) diffusion of a Gaussian, (c) advection by integer shifts, (d) reaction -------------------
def test_gaussian_diffusion_matches_closed_form_to_roundoff():
    """G(x, t) = s^2 / (s^2 + 2 tau t) exp(-|x|^2 / (2 (s^2 + 2 tau t))) in 2-D. The periodic box
    (side 32, spacing 0.25) leaves tails exp(-16^2 / 3.2) ~ 1e-35 and the spectrum
    exp(-k_nyq^2 s^2 / 2) ~ 1e-35, so only roundoff remains (5 steps of 0.2, float64)."""
    n, h, s, tau, t = 128, 0.25, 1.0, 0.3, 1.0
    x = (np.arange(n) - n // 2) * h
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    w = np.exp(-r2 / (2 * s**2))
    for _ in range(5):
        w, _ = rda_step(w, t / 5, tau, (0.0, 0.0), 0.0, spacing=h)
    var = s**2 + 2 * tau * t
    exact = s**2 / var * np.exp(-r2 / (2 * var))
    assert np.abs(w - exact).max() < 5e-15


@pytest.mark.parametrize("shape", [(5, 7), (6, 4), (2, 3, 8, 8)])
def test_advection_shifts_by_integer_multiples_exactly(shape):
    """v t = (2, -3) pixels: w(x, t) = w(x + v t, 0), i.e. np.roll by -v t (also with even
    sizes: the Nyquist modes pick up cos(pi m) = +-1)."""
    w = np.random.default_rng(3).standard_normal(shape)
    v, t = np.array([4.0, -6.0]), 0.5
    out, _ = rda_step(w, t, 0.0, v, 0.0)
    expected = np.roll(w, (-2, 3), axis=(-2, -1))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-14)


def test_reaction_multiplies_by_exp_rho_t():
    w = np.random.default_rng(4).standard_normal((3, 5, 6))
    out, _ = rda_step(w, 0.7, 0.0, (0.0, 0.0), -1.3)
    np.testing.assert_allclose(out, np.exp(-1.3 * 0.7) * w, rtol=0, atol=1e-15)  # FFT roundoff


def test_linear_steps_form_a_semigroup_on_odd_grids():
    w = np.random.default_rng(5).standard_normal((5, 7))
    one, _ = rda_step(w, 0.6, 0.2, (0.3, -0.8), 0.1)
    half, _ = rda_step(rda_step(w, 0.3, 0.2, (0.3, -0.8), 0.1)[0], 0.3, 0.2, (0.3, -0.8), 0.1)
    np.testing.assert_allclose(half, one, rtol=0, atol=1e-14)


def test_even_grid_nyquist_mode_is_multiplied_by_cos():
    """On an even grid the real part turns exp(i v k dt) at k = -pi into cos(pi v dt), so
    non-integer advection steps are not a semigroup there (documented in nets._rda)."""
    w = np.cos(np.pi * np.arange(4))[:, None] * np.ones((1, 3))     # pure Nyquist mode
    out, _ = rda_step(w, 1.0, 0.0, (0.3, 0.0), 0.0)
    np.testing.assert_allclose(out, np.cos(0.3 * np.pi) * w, rtol=0, atol=1e-15)


def test_multiplier_is_exp_dt_symbol():
    e = rda.rda_multiplier((3, 4), 0.5, 0.2, (0.3, -0.1), 0.4, spacing=0.5)
    k0, k1 = wavenumbers((3, 4), spacing=0.5)
    s = -0.2 * (k0**2 + k1**2) + 1j * (0.3 * k0 - 0.1 * k1) + 0.4
    np.testing.assert_allclose(e, np.exp(0.5 * s), rtol=1e-15)
    _, cache = rda_step(np.ones((3, 4)), 0.5, 0.2, (0.3, -0.1), 0.4, spacing=0.5)
    np.testing.assert_array_equal(cache.multiplier, e)


def test_per_channel_tau_acts_per_slice():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((3, 2, 5, 5))
    tau = np.array([[0.0], [0.1], [0.4]])
    out, _ = rda_step(w, 0.5, tau, (0.2, 0.1), 0.0)
    for o in range(3):
        ref, _ = rda_step(w[o], 0.5, float(tau[o, 0]), (0.2, 0.1), 0.0)
        np.testing.assert_array_equal(out[o], ref)


# -- VJP -------------------------------------------------------------------------------------------
def _check_vjp(seed, shape, sigma, tau_shape, spacing=1.0):
    """Max relative error of <y_bar, J d> (FD) vs <grad, d> over w, tau, v, rho."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    tau = 0.05 + 0.4 * rng.random(tau_shape)
    v = rng.uniform(-1, 1, 2)
    rho = rng.uniform(-1, 1)
    dt = rng.uniform(0.1, 1.0)
    y, cache = rda_step(w, dt, tau, v, rho, sigma, spacing)
    y_bar = rng.standard_normal(y.shape)
    w_bar, g = rda_step_vjp(cache, y_bar)
    args = {"w": w, "tau": tau, "v": v, "rho": np.asarray(rho)}
    grads = {"w": w_bar, "tau": g.tau, "v": g.v, "rho": g.rho}
    errors = {}
    for name, x in args.items():
        d = rng.standard_normal(np.shape(x))

        def fun(xx, name=name):
            kw = dict(args, **{name: xx})
            return rda_step(kw["w"], dt, kw["tau"], kw["v"], kw["rho"], sigma, spacing)[0]

        jd = central_difference(fun, x, d)
        assert np.shape(grads[name]) == np.shape(x)
        scale = np.linalg.norm(y_bar) * np.linalg.norm(jd)
        errors[name] = relative_error(np.sum(y_bar * jd), np.sum(grads[name] * d), scale)
    return errors


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       kh=st.integers(1, 6), kw=st.integers(1, 6),
       sigma=st.sampled_from(["identity", "tanh", "sigmoid", "softplus"]),
       per_channel=st.booleans(), spacing=st.sampled_from([1.0, 0.7]))
def test_vjp_matches_central_differences(seed, batch, kh, kw, sigma, per_channel, spacing):
    shape = tuple(batch) + (kh, kw)
    tau_shape = (batch[0],) + (1,) * (len(batch) - 1) if per_channel and batch else ()
    errors = _check_vjp(seed, shape, sigma, tau_shape, spacing)
    assert max(errors.values()) <= FD_TOL, errors


def test_vjp_with_relu_matches_masked_linear_vjp():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((2, 5, 5))
    y, cache = rda_step(w, 0.4, 0.1, (0.5, -0.2), 0.2, sigma="relu")
    lin, lin_cache = rda_step(w, 0.4, 0.1, (0.5, -0.2), 0.2)
    np.testing.assert_array_equal(y, np.maximum(lin, 0))
    y_bar = rng.standard_normal(y.shape)
    got, g = rda_step_vjp(cache, y_bar)
    ref, g_ref = rda_step_vjp(lin_cache, y_bar * (lin > 0))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(g.v, g_ref.v)


def test_rho_gradient_is_dt_times_inner_product():
    """d u / d rho = dt u for the linear step, so rho_bar = dt <u_bar, u>."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((3, 4, 5))
    u, cache = rda_step(w, 0.35, 0.2, (0.4, 0.9), -0.5)
    u_bar = rng.standard_normal(u.shape)
    _, g = rda_step_vjp(cache, u_bar)
    assert float(g.rho) == pytest.approx(0.35 * np.sum(u_bar * u), rel=1e-13)


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (3, 4, 7)])
def test_dot_product_identity_of_the_linear_step(shape):
    """<L u, w> = <u, L^T w> for the exact linear map: roundoff level (1e-14)."""
    rng = np.random.default_rng(9)
    u, w_out = rng.standard_normal(shape), rng.standard_normal(shape)
    step = lambda x: rda_step(x, 0.45, 0.15, (1.3, -0.6), 0.25)  # noqa: E731
    cache = step(u)[1]
    mismatch = dot_product_test(lambda x: step(x)[0], lambda y: rda_step_vjp(cache, y)[0],
                                u, w_out)
    assert mismatch < 1e-14


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((2, 5, 5))
    y64, c64 = rda_step(w, 0.3, 0.1, (0.4, 0.2), 0.1, "tanh")
    y32, c32 = rda_step(w.astype(np.float32), 0.3, 0.1, (0.4, 0.2), 0.1, "tanh")
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-6)      # float32 roundoff
    b = rng.standard_normal(w.shape)
    g64, p64 = rda_step_vjp(c64, b)
    g32, p32 = rda_step_vjp(c32, b.astype(np.float32))
    assert g32.dtype == np.float32 and p32.v.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-5)
    np.testing.assert_allclose(p32.v, p64.v, rtol=1e-4)


def test_backend_agrees_with_numpy(xp):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((3, 2, 5, 4))
    tau = np.array([[0.1], [0.2], [0.3]])
    y_np, c_np = rda_step(w, 0.3, tau, (0.4, -0.2), 0.1, "tanh")
    y, c = rda_step(xp.asarray(w), 0.3, xp.asarray(tau), xp.asarray([0.4, -0.2]), 0.1, "tanh")
    assert type(y) is type(xp.asarray(w))
    np.testing.assert_allclose(to_host(y), y_np, rtol=0, atol=1e-14)   # FFT roundoff
    b = rng.standard_normal(w.shape)
    wb, g = rda_step_vjp(c, xp.asarray(b))
    wb_np, g_np = rda_step_vjp(c_np, b)
    np.testing.assert_allclose(to_host(wb), wb_np, rtol=0, atol=1e-13)
    np.testing.assert_allclose(to_host(g.tau), g_np.tau, rtol=1e-12)
    np.testing.assert_allclose(to_host(g.v), g_np.v, rtol=1e-12)


# -- mutations -------------------------------------------------------------------------------------
def _flipped_advection(k0, k1, tau, v, rho):
    t, r = tau[..., None, None], rho[..., None, None]
    return -t * (k0 * k0 + k1 * k1) - 1j * (v[..., 0, None, None] * k0
                                             + v[..., 1, None, None] * k1) + r


def test_mutation_advection_sign_is_caught(monkeypatch):
    monkeypatch.setattr(rda, "symbol", _flipped_advection)
    w = np.random.default_rng(12).standard_normal((5, 7))
    out, _ = rda_step(w, 0.5, 0.0, (4.0, -6.0), 0.0)
    assert np.abs(out - np.roll(w, (-2, 3), axis=(0, 1))).max() > 0.1     # shift check fails
    assert _pde_errors((16, 32))[-1] > 0.1                                # FD-PDE check fails


def test_mutation_missing_conjugate_in_adjoint_is_caught(monkeypatch):
    monkeypatch.setattr(rda, "adjoint_multiplier", lambda e: e)
    errors = _check_vjp(13, (2, 5, 4), "tanh", ())
    assert errors["w"] > 1e-3
    # dot-product identity breaks as well
    rng = np.random.default_rng(14)
    u, w_out = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    cache = rda_step(u, 0.45, 0.15, (1.3, -0.6), 0.25)[1]
    mismatch = dot_product_test(lambda x: rda_step(x, 0.45, 0.15, (1.3, -0.6), 0.25)[0],
                                lambda y: rda_step_vjp(cache, y)[0], u, w_out)
    assert mismatch > 1e-3


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"tau": -0.1}, ParameterError, "tau"),
    ({"tau": np.ones(4)}, ShapeError, "tau"),
    ({"v": (1.0, 2.0, 3.0)}, ShapeError, "v"),
    ({"rho": np.nan}, ParameterError, "rho"),
    ({"sigma": "swish"}, ValueError, "sigma"),
    ({"spacing": 0.0}, ValueError, "spacing"),
    ({"dt": float("inf")}, ValueError, "dt"),
    ({"w": np.ones(5)}, ShapeError, "w"),
])
def test_bad_input_names_the_argument(kwargs, exc, match):
    args = dict(w=np.ones((3, 5, 5)), dt=0.1, tau=0.1, v=(0.0, 0.0), rho=0.0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        rda_step(**args)
