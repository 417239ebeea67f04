"""Gradient verification toolkit (public API: users run it on their own layers).

Checks, from cheapest to strictest:

- :func:`central_difference` / :func:`richardson_difference` with :func:`auto_step`:
  finite-difference directional derivatives (float64 relative error ~1e-10 / ~1e-13).
- :func:`complex_step`: exact-to-roundoff directional derivative of analytic code.
- :func:`dot_product_test`: adjoint identity ``<J u, w> = <u, J^T w>``.
- :func:`taylor_test`: remainder rates (1 and 2) of a gradient, pyadjoint style.
- :func:`check_layer`: all of the above on any object following the layer protocol, returning a
  :class:`LayerReport`.
- :func:`check_jvp`: a layer's forward mode ``jvp`` against finite differences, the complex step
  and its own VJP (same :class:`LayerReport`).
- :func:`check_jvp_vjp`: a layer's second-order VJP ``jvp_vjp`` (finite differences, complex step,
  Taylor test of the tangent-lifted scalar).

Hypothesis strategies live in :mod:`adjointcore.gradcheck.strategies` (imported lazily by the
user, since ``hypothesis`` is a test dependency); ``python -m adjointcore.gradcheck`` checks
every built-in layer.
"""
from ._complex import complex_step
from ._dot import dot_product_test
from ._fd import auto_step, central_difference, relative_error, richardson_difference
from ._jvp import JVP_CHECKS, check_jvp, default_jvp_tolerances
from ._layer import CHECKS, LayerReport, check_layer, default_tolerances
from ._second import SECOND_ORDER_CHECKS, check_jvp_vjp, default_second_order_tolerances
from ._taylor import TaylorResult, TaylorTestError, taylor_test

__all__ = [
    "auto_step", "central_difference", "richardson_difference", "relative_error",
    "complex_step", "dot_product_test", "taylor_test", "TaylorResult", "TaylorTestError",
    "check_layer", "LayerReport", "CHECKS", "default_tolerances",
    "check_jvp", "JVP_CHECKS", "default_jvp_tolerances",
    "check_jvp_vjp", "SECOND_ORDER_CHECKS", "default_second_order_tolerances",
]
