"""Sensitivity drivers: gradients of losses on ODE trajectories.

Continuous (optimise-then-discretise) adjoints: :func:`continuous_adjoint` with the
``"interpolated"`` and ``"backsolve"`` variants and seminorm error control; the augmented backward
system is the vector field :class:`AugmentedField`.
"""
from ._augmented import (AugmentedField, AugmentedLayout, AugmentedState, SemiNorm,
                         augmented_layout, pack_augmented, unpack_augmented)
from .continuous import AdjointStats, ContinuousGradient, continuous_adjoint

__all__ = ["AugmentedField", "AugmentedLayout", "AugmentedState", "SemiNorm", "augmented_layout",
           "pack_augmented", "unpack_augmented", "AdjointStats", "ContinuousGradient",
           "continuous_adjoint"]
