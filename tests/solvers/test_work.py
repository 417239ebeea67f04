"""``solvers.Work``: the field-wise sum and the counter replacement are what the dataclass
operations they stand for give (``dataclasses.replace``; ``max`` for the snapshots)."""
from __future__ import annotations

import dataclasses

import pytest

from solvers import Work

A = Work(forward_nfe=3, n_accepted=2, n_rejected=1, vjps=7, dense_evals=4, max_live_snapshots=5)
B = Work(forward_nfe=10, backward_nfe=6, reverse_steps=2, max_live_snapshots=3)


def test_sum_adds_every_counter_and_takes_the_larger_snapshot_count():
    total = A + B
    for f in dataclasses.fields(Work):
        a, b = getattr(A, f.name), getattr(B, f.name)
        assert getattr(total, f.name) == (max(a, b) if f.name == "max_live_snapshots" else a + b)
    assert A.__add__(3) is NotImplemented


@pytest.mark.parametrize("changes", [{}, {"forward_nfe": 11},
                                     {"n_rejected": 0, "dense_evals": 9, "forward_nfe": 1}])
def test_replace_is_dataclasses_replace(changes):
    assert A.replace(**changes) == dataclasses.replace(A, **changes)


def test_replace_refuses_an_unknown_counter():
    with pytest.raises(TypeError):
        A.replace(steps=1)
