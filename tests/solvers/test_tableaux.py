"""Butcher tableaux: invariants, tight order conditions, derived flags, corruption rejected."""
import dataclasses
import re

import numpy as np
import pytest

import solvers
from solvers import TABLEAUX, ButcherTableau, get_tableau
from solvers._tableau import (
    COEFF_TOL,
    observed_algebraic_order,
    order_residuals,
    rooted_trees,
    tree_density,
)

EXPECTED = {  # name: (stages, order, err_order, fsal, has dense)
    "euler": (1, 1, None, False, False), "midpoint": (2, 2, None, False, False),
    "heun": (2, 2, None, False, False), "ralston": (2, 2, None, False, False),
    "rk3": (3, 3, None, False, False), "rk4": (4, 4, None, False, False),
    "rk38": (4, 4, None, False, False), "bosh3": (4, 3, 2, True, False),
    "dopri5": (7, 5, 4, True, True), "tsit5": (7, 5, 4, True, True),
    "cash_karp": (6, 5, 4, False, False),
}


def test_registry_names():
    assert set(TABLEAUX) == set(EXPECTED)


def test_rooted_tree_counts_and_densities():
    # OEIS A000081; the densities of the order-3 trees are 3 ([[.]]: chain) and 6 ([.,.]).
    assert [len(rooted_trees(q)) for q in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    assert sorted(tree_density(t) for t in rooted_trees(3)) == [3, 6]
    assert sorted(tree_density(t) for t in rooted_trees(4)) == [4, 8, 12, 24]


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_invariants(name):
    tab = TABLEAUX[name]
    stages, order, err_order, fsal, dense = EXPECTED[name]
    assert (tab.n_stages, tab.order, tab.err_order, tab.fsal) == (stages, order, err_order, fsal)
    assert (tab.dense is not None) == dense
    assert tab.a.dtype == tab.b.dtype == tab.c.dtype == np.float64
    assert np.all(np.triu(tab.a) == 0)
    np.testing.assert_allclose(tab.a.sum(1), tab.c, rtol=0, atol=COEFF_TOL)
    assert abs(tab.b.sum() - 1) <= COEFF_TOL
    if tab.b_err is not None:
        assert abs(tab.b_err.sum()) <= COEFF_TOL
    if tab.dense is not None:
        np.testing.assert_allclose(tab.dense.sum(1), tab.b, rtol=0, atol=COEFF_TOL)


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_order_conditions_are_tight(name):
    """All conditions up to the claimed order hold, and some condition of order + 1 fails."""
    tab = TABLEAUX[name]
    residuals = order_residuals(tab.a, tab.b, tab.order)
    assert max(abs(r) for _, r in residuals) <= COEFF_TOL
    assert observed_algebraic_order(tab.a, tab.b) == tab.order
    if tab.b_err is not None:
        assert observed_algebraic_order(tab.a, tab.b - tab.b_err) == tab.err_order


def test_live_stages():
    # Only the FSAL stages (b_s = 0, nothing after them) are dead; Dopri5's b_2 = 0 stage is live.
    for name, tab in TABLEAUX.items():
        expected_dead = [tab.n_stages - 1] if tab.fsal else []
        assert list(np.nonzero(~tab.live)[0]) == expected_dead, name
    assert TABLEAUX["dopri5"].b[1] == 0 and TABLEAUX["dopri5"].live[1]
    assert TABLEAUX["dopri5"].n_live == 6 and TABLEAUX["rk4"].n_live == 4


def test_coefficients_are_read_only():
    with pytest.raises(ValueError):
        TABLEAUX["rk4"].a[1, 0] = 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLEAUX["rk4"].order = 5


def _rk4_kwargs():
    tab = TABLEAUX["rk4"]
    return dict(c=tab.c.copy(), a=tab.a.copy(), b=tab.b.copy(), order=4, name="bad")


def _corrupt(change):
    kw = _rk4_kwargs()
    change(kw)
    return kw


CORRUPTIONS = {
    "a_typo": (lambda kw: kw["a"].__setitem__((2, 1), 0.5 + 1e-3), "a.sum(1) == c"),
    "a_typo_c_too": (lambda kw: (kw["a"].__setitem__((2, 1), 0.51), kw["c"].__setitem__(2, 0.51)),
                     "order condition"),
    "upper_triangle": (lambda kw: kw["a"].__setitem__((0, 1), 0.1), "strictly lower"),
    "b_sum": (lambda kw: kw["b"].__setitem__(0, 0.2), "b.sum() == 1"),
    "b_swap_keeps_sum": (lambda kw: kw.__setitem__("b", np.array([1 / 3, 1 / 6, 1 / 3, 1 / 6])),
                         "order condition"),
    "order_overclaimed": (lambda kw: kw.__setitem__("order", 5), "order condition"),
    "b_err_without_order": (lambda kw: kw.__setitem__("b_err", np.zeros(4)), "err_order"),
    "b_err_sum": (lambda kw: (kw.__setitem__("b_err", np.array([0.1, 0, 0, 0])),
                              kw.__setitem__("err_order", 2)), "b_err.sum() == 0"),
    "shape": (lambda kw: kw.__setitem__("b", np.ones(3) / 3), "need c (s,)"),
    "non_finite": (lambda kw: kw["c"].__setitem__(1, np.nan), "non-finite"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_tableau_rejected(case):
    change, message = CORRUPTIONS[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        ButcherTableau(**_corrupt(change))


def test_corrupted_dopri5_coefficient_rejected():
    """A single-digit typo in one Dopri5 coefficient (row sum repaired via c) is caught."""
    tab = TABLEAUX["dopri5"]
    a, c = tab.a.copy(), tab.c.copy()
    a[4, 3] = -213 / 729
    c[4] = a[4].sum()
    with pytest.raises(ValueError, match="order condition"):
        ButcherTableau(c=c, a=a, b=tab.b, b_err=tab.b_err, order=5, err_order=4, name="typo")


def test_corrupted_dense_rejected():
    tab = TABLEAUX["dopri5"]
    dense = tab.dense.copy()
    dense[2, 1] += 1e-6
    with pytest.raises(ValueError, match="dense"):
        ButcherTableau(c=tab.c, a=tab.a, b=tab.b, b_err=tab.b_err, order=5, err_order=4,
                       dense=dense)


def test_get_tableau():
    assert get_tableau("dopri5") is TABLEAUX["dopri5"]
    assert get_tableau(TABLEAUX["rk4"]) is TABLEAUX["rk4"]
    with pytest.raises(ValueError, match="known tableaux.*dopri5"):
        get_tableau("dopri")
    assert solvers.TABLEAUX is TABLEAUX
