"""Time stepping: Butcher tableaux, Runge-Kutta and linear multistep steps, their discrete
adjoints, step-size control, dense output and the ``solve`` driver.

Imports no other package of this repository.
"""
from ._controller import (
    ControllerState,
    IController,
    PIController,
    block_tolerance,
    initial_step,
    per_sample_rms_norm,
    rms_norm,
)
from ._dense import DenseOutput
from ._field import CallableField, FieldKernel, as_field, check_field_output, field_kernel, is_field
from ._memory import _apply_from_environment, release_host_memory, retain_host_memory
from ._result import MESSAGES, Solution, SolveError, Status
from ._rk import RKStages, rk_step, rk_step_vjp
from ._solve import adaptive_methods, solve
from ._stepper import RKStepper, get_stepper
from ._tableau import ButcherTableau
from ._work import Work
from ._xp import Array as Array  # the array annotation (Any), re-exported by adjointcore.backend
from .tableaux import TABLEAUX, get_tableau

__all__ = [
    "ButcherTableau", "TABLEAUX", "get_tableau",
    "RKStages", "rk_step", "rk_step_vjp",
    "as_field", "is_field", "CallableField", "FieldKernel", "field_kernel", "check_field_output",
    "PIController", "IController", "ControllerState", "initial_step", "block_tolerance",
    "rms_norm", "per_sample_rms_norm",
    "DenseOutput", "solve", "adaptive_methods", "Solution", "Status", "SolveError",
    "MESSAGES", "Work",
    "RKStepper", "get_stepper",
    "retain_host_memory", "release_host_memory",
]

_apply_from_environment()       # freed host buffers are reused (ADJOINTCORE_HOST_MEMORY)
