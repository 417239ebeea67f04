"""The vector-field protocol used by every solver, and ``as_field`` for plain callables.

A *field* is any object with

``forward(t, y, params) -> (dy, cache)``
    ``dy`` has the shape of ``y``; ``cache`` holds what the VJP needs.
``vjp(cache, dy_bar, need_params=True) -> (y_bar, params_bar, t_bar)``
    ``params_bar`` may be None when ``need_params`` is False; ``t_bar`` may be None.

Solvers never look inside ``cache``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def is_field(obj):
    """True if ``obj`` follows the field protocol (has callable ``forward`` and ``vjp``)."""
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "vjp", None))


@dataclass(frozen=True)
class CallableField:
    """Field around a plain callable: ``f(t, y)`` when ``params`` is None, else ``f(t, y, params)``.

    The cache is None and :meth:`vjp` raises ``NotImplementedError``.
    """

    f: Callable

    def forward(self, t, y, params):
        """Return ``(f(t, y) or f(t, y, params), None)``."""
        dy = self.f(t, y) if params is None else self.f(t, y, params)
        return dy, None

    def vjp(self, cache, dy_bar, need_params=True):
        """Not available: a plain callable has no hand-written VJP."""
        raise NotImplementedError(
            f"field {self.f!r} was built from a plain callable and plain callables have no VJP; "
            "pass an object with forward(t, y, params) -> (dy, cache) and "
            "vjp(cache, dy_bar, need_params) -> (y_bar, params_bar, t_bar) "
            "(e.g. adjointcore.fields.LayerField) to differentiate through the solver.")


def as_field(f):
    """Return ``f`` if it already follows the field protocol, else wrap the callable.

    Parameters
    ----------
    f : field or callable
        A field object, or ``f(t, y)`` / ``f(t, y, params)`` returning ``dy`` shaped like ``y``.

    Raises
    ------
    TypeError
        If ``f`` is neither a field nor callable.
    """
    if is_field(f):
        return f
    if callable(f):
        return CallableField(f)
    raise TypeError(f"`field` must be an object with forward/vjp methods or a callable "
                    f"f(t, y[, params]); got {type(f).__name__}: {f!r}")
