"""Sensitivity drivers: gradients of losses on ODE trajectories.

- One entry point: :func:`trajectory_gradient` (and its two-phase form
  :func:`begin_trajectory_gradient`) with ``gradient="discrete" | "backsolve" |
  "interpolated"``, used by the ODE block, the experiments and NODE-EW.
- Discrete adjoint (discretize-then-optimize): :func:`discrete_adjoint` on a fixed or frozen
  adaptive grid under any checkpoint schedule; :func:`grid_forward` replays the discrete map;
  :func:`check_solve_gradient` verifies it by finite differences on the frozen grid.
- Continuous adjoint (optimize-then-discretize): :func:`continuous_adjoint` with the
  ``"interpolated"`` and ``"backsolve"`` variants and seminorm error control; the augmented
  backward system is the vector field :class:`AugmentedField`.
"""
from ._augmented import (
    AugmentedField,
    AugmentedLayout,
    AugmentedState,
    SemiNorm,
    augmented_layout,
    pack_augmented,
    unpack_augmented,
)
from ._cotangents import check_cotangents
from .check import SolveGradientReport, check_solve_gradient
from .continuous import ContinuousGradient, continuous_adjoint
from .discrete import (
    CountingField,
    DiscreteGradient,
    Recording,
    check_grid,
    discrete_adjoint,
    grid_forward,
    obs_steps_on_grid,
    record_forward,
)
from .trajectory import (
    GRADIENTS,
    TrajectoryGradient,
    TrajectorySweep,
    begin_trajectory_gradient,
    check_gradient_options,
    trajectory_gradient,
)

__all__ = ["GRADIENTS", "TrajectoryGradient", "TrajectorySweep", "begin_trajectory_gradient",
           "check_gradient_options", "trajectory_gradient", "AugmentedField", "AugmentedLayout",
           "AugmentedState", "SemiNorm", "augmented_layout",
           "pack_augmented", "unpack_augmented", "ContinuousGradient",
           "continuous_adjoint", "CountingField", "DiscreteGradient",
           "check_grid", "discrete_adjoint", "grid_forward", "obs_steps_on_grid",
           "SolveGradientReport", "check_solve_gradient", "check_cotangents", "Recording",
           "record_forward"]
