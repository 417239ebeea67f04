"""Optimisers and schedules: hand-computed steps, purity, validation."""
import numpy as np
import pytest

from adjointcore.backend import to_host
from adjointcore.errors import ShapeError
from adjointcore.optim import SGD, Adam, AdamState, SGDState, StepDecay


# -- SGD ------------------------------------------------------------------------------------------
def test_sgd_plain_and_weight_decay(xp, rng):
    p0, g = rng.standard_normal((2, 5))
    opt = SGD(lr=0.1)
    state = opt.init_state(xp.asarray(p0))
    p1, state1 = opt.step(xp.asarray(p0), xp.asarray(g), state)
    np.testing.assert_array_equal(to_host(p1), p0 - 0.1 * g)
    assert state1 == SGDState(None)
    p1, _ = SGD(lr=0.1, weight_decay=0.01).step(xp.asarray(p0), xp.asarray(g), state)
    np.testing.assert_allclose(to_host(p1), p0 - 0.1 * (g + 0.01 * p0), rtol=1e-15)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_two_steps(nesterov, rng):
    p0, g1, g2 = rng.standard_normal((3, 4))
    lr, m = 0.05, 0.9
    opt = SGD(lr, momentum=m, nesterov=nesterov)
    p1, s1 = opt.step(p0, g1, opt.init_state(p0))
    p2, s2 = opt.step(p1, g2, s1)
    v1, v2 = g1, m * g1 + g2
    want1 = p0 - lr * (g1 + m * v1 if nesterov else v1)
    want2 = want1 - lr * (g2 + m * v2 if nesterov else v2)
    np.testing.assert_allclose(p1, want1, rtol=1e-15)
    np.testing.assert_allclose(p2, want2, rtol=1e-14)  # a few roundings
    np.testing.assert_allclose(s2.velocity, v2, rtol=1e-15)


def test_sgd_on_quadratic_contracts_exactly():
    """f = |p - a|^2 / 2: each plain step multiplies p - a by (1 - lr)."""
    a = np.array([1.0, -2.0, 3.0])
    p = np.zeros(3)
    opt = SGD(lr=0.25)
    state = opt.init_state(p)
    for _ in range(20):
        p, state = opt.step(p, p - a, state)
    np.testing.assert_allclose(p - a, -a * 0.75 ** 20, rtol=1e-13)


def test_steps_are_pure(rng):
    p0, g = rng.standard_normal((2, 4))
    p_copy, g_copy = p0.copy(), g.copy()
    for opt in (SGD(0.1, momentum=0.5), Adam(0.1)):
        state = opt.init_state(p0)
        snapshot = [None if a is None else np.copy(a) for a in state]
        p1, new_state = opt.step(p0, g, state)
        assert p1 is not p0 and new_state is not state
        np.testing.assert_array_equal(p0, p_copy)
        np.testing.assert_array_equal(g, g_copy)
        for a, b in zip(state, snapshot, strict=True):
            np.testing.assert_array_equal(a, b)


# -- Adam -----------------------------------------------------------------------------------------
def test_adam_first_step_is_lr_sign(xp, rng):
    g = rng.normal(0, 1, 6)
    p0 = rng.standard_normal(6)
    opt = Adam(lr=1e-3)
    p1, state = opt.step(xp.asarray(p0), xp.asarray(g), opt.init_state(xp.asarray(p0)))
    # bias correction makes m_hat = g, v_hat = g^2 exactly: step = lr g / (|g| + eps)
    np.testing.assert_allclose(to_host(p1), p0 - 1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-15)
    np.testing.assert_allclose(to_host(p0 - to_host(p1)), 1e-3 * np.sign(g),
                               rtol=1e-8 / np.min(np.abs(g)) * 2)  # eps / |g| relative
    assert state.t == 1


def test_adam_two_steps_hand_computed(rng):
    p0, g1, g2 = rng.standard_normal((3, 5))
    lr, (b1, b2), eps, wd = 0.01, (0.8, 0.99), 1e-6, 0.1
    opt = Adam(lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    p1, s1 = opt.step(p0, g1, opt.init_state(p0))
    p2, s2 = opt.step(p1, g2, s1)
    m, v, p = np.zeros(5), np.zeros(5), p0
    for t, g in [(1, g1), (2, g2)]:
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(p2, p, rtol=1e-14)  # same operations, reassociated
    assert isinstance(s2, AdamState) and s2.t == 2
    np.testing.assert_allclose(s2.m, m, rtol=1e-15)
    np.testing.assert_allclose(s2.v, v, rtol=1e-15)


def test_lr_override(rng):
    p0, g = rng.standard_normal((2, 3))
    opt = SGD(lr=1.0)
    p1, _ = opt.step(p0, g, opt.init_state(p0), lr=0.5)
    np.testing.assert_array_equal(p1, p0 - 0.5 * g)
    with pytest.raises(ValueError, match="`lr`"):
        opt.step(p0, g, opt.init_state(p0), lr=-1.0)


# -- schedule -------------------------------------------------------------------------------------
def test_step_decay():
    sched = StepDecay(0.1, milestones=[3, 5], gamma=0.5)
    assert [sched(e) for e in range(7)] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert StepDecay(1.0, [])(100) == 1.0


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make, name", [
    (lambda: SGD(0.0), "lr"), (lambda: SGD(-1e-3), "lr"), (lambda: SGD(float("nan")), "lr"),
    (lambda: SGD(0.1, momentum=1.0), "momentum"), (lambda: SGD(0.1, momentum=-0.1), "momentum"),
    (lambda: SGD(0.1, nesterov=True), "nesterov"),
    (lambda: SGD(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: Adam(lr=0), "lr"), (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: Adam(betas=(-0.1, 0.9)), r"betas\[0\]"), (lambda: Adam(eps=0.0), "eps"),
    (lambda: StepDecay(0.1, [5, 3]), "milestones"), (lambda: StepDecay(0.1, [0]), "milestones"),
    (lambda: StepDecay(0.1, [2], gamma=0.0), "gamma"), (lambda: StepDecay(0.1, [2])(-1), "epoch"),
])
def test_bad_hyperparameters(make, name):
    with pytest.raises(ValueError, match=f"`{name}"):
        make()


def test_bad_types_and_state():
    with pytest.raises(TypeError, match="`lr`"):
        SGD("0.1")
    with pytest.raises(TypeError, match="`betas`"):
        Adam(betas=0.9)
    p = np.zeros(3)
    opt = Adam()
    with pytest.raises(ShapeError, match="`grad`"):
        opt.step(p, np.zeros(4), opt.init_state(p))
    with pytest.raises(ShapeError, match="`state.m`"):
        opt.step(p, np.zeros(3), opt.init_state(np.zeros(5)))
    with pytest.raises(TypeError, match="`state`"):
        opt.step(p, np.zeros(3), SGDState(None))
    with pytest.raises(TypeError, match="`state.velocity`"):
        SGD(0.1, momentum=0.9).step(p, np.zeros(3), SGDState(None))


def test_corrupt_state_is_rejected_with_names(rng):
    """A hand-built or corrupted state names the bad field (was a raw TypeError/AttributeError)."""
    p = rng.standard_normal(3)
    adam = Adam()
    with pytest.raises(ValueError, match=r"`state.t` must be an integer >= 0, got 'x'"):
        adam.step(p, p, AdamState("x", np.zeros(3), np.zeros(3)))
    with pytest.raises(ValueError, match=r"`state.t` must be an integer >= 0, got -1"):
        adam.step(p, p, AdamState(-1, np.zeros(3), np.zeros(3)))
    with pytest.raises(TypeError, match=r"`state.m` must be a NumPy or CuPy array"):
        adam.step(p, p, AdamState(0, [0.0, 0.0, 0.0], np.zeros(3)))
    with pytest.raises(TypeError, match=r"`state.m` and `state.v` must be arrays"):
        adam.step(p, p, AdamState(0, None, np.zeros(3)))
    with pytest.raises(TypeError, match=r"`state.velocity` has dtype int64"):
        SGD(0.1, momentum=0.9).step(p, p, SGDState(np.zeros(3, dtype=np.int64)))
