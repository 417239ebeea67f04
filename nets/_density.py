"""What :class:`nets.cnf.CNF` and :class:`nets.coupled_cnf.CoupledCNF` share (private to those
two modules).

- The configuration checks their constructors run before any compute: the layer protocol of
  ``f`` (and ``g``), ``state_shape`` (``(N, ...)``, at least two positive sizes), a field that
  preserves it, the divergence method and the Hutchinson probes.
- ``_DensityField``, their common base: the divergence settings, the sample shape, the
  divergence call (:func:`adjointcore.divergence.divergence` with the field's method and
  probes), probe redrawing (``redraw``) and the ``(z, logp)`` blocks of the state.

See :mod:`nets.cnf` for the CNF itself, its field VJP and the Hutchinson probes.

References
----------
R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
equations", NeurIPS 2018 (Theorem 1, instantaneous change of variables).
W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD: free-form
continuous dynamics for scalable reversible generative models", ICLR 2019.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from adjointcore.backend import Array
from adjointcore.divergence import METHODS, DivergenceCache, draw_probes
from adjointcore.divergence import divergence as field_divergence
from adjointcore.errors import ShapeError, check_array

#: No public names: nets.cnf and nets.coupled_cnf import the underscored helpers.
__all__: list[str] = []


# -- configuration checks (run in the constructors, before any compute) ---------------------------
def _check_layer(name: str, layer: Any) -> None:
    missing = [a for a in ("forward", "vjp", "n_params", "init") if not hasattr(layer, a)]
    if missing:
        raise TypeError(f"`{name}` must follow the layer protocol; {layer!r:.80} lacks "
                        f"{', '.join(missing)}.")
def _check_state_shape(state_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in state_shape)
        ok = all(int(s) == s for s in state_shape)
    except (TypeError, ValueError):
        shape, ok = (), False
    if not ok or len(shape) < 2 or min(shape) < 1:
        raise ShapeError(f"`state_shape` must be the shape (N, ...) of the sample batch z with at "
                         f"least 2 positive sizes (e.g. (N, d)), got {state_shape!r}.")
    return shape
def _check_output_shape(name: str, layer: Any, shape: tuple[int, ...]) -> None:
    out = getattr(layer, "output_shape", None)
    if not callable(out):
        return
    try:
        got = tuple(out(shape))
    except (NotImplementedError, TypeError):
        return
    except ValueError as err:
        raise ShapeError(f"`{name}` {layer!r:.80} does not accept states of `state_shape` "
                         f"{shape}: {err}") from err
    if got != shape:
        raise ShapeError(f"`{name}` must map z of `state_shape` {shape} to the same shape (a "
                         f"vector field), but it maps it to {got}; adjust its widths.")
def _check_divergence(divergence: str, probes: Array | None, shape: tuple[int, ...],
                      closed_form: bool | None) -> tuple[str, Array | None]:
    """Validated ``(method, probes)``."""
    if divergence not in METHODS:
        raise ValueError(f"`divergence` must be one of {METHODS}, got {divergence!r}.")
    if closed_form not in (None, True, False):
        raise ValueError(f"`closed_form` must be None, True or False, got {closed_form!r}.")
    if divergence == "exact":
        if probes is not None:
            raise ValueError("`probes` only apply to divergence='hutchinson'; drop them for the "
                             "exact trace.")
        return divergence, None
    if closed_form:
        raise ValueError("`closed_form=True` applies to divergence='exact' only.")
    if probes is None:
        raise ValueError(f"divergence='hutchinson' needs `probes` of shape {shape} (one per "
                         f"sample) or (M,) + {shape}: draw them with "
                         f"draw_probes(rng, {shape}) or use CNF.redraw(rng).")
    check_array("probes", probes, allow_complex=False, finite=True,
                fix=f"Draw them with draw_probes(rng, {shape}).")
    got = tuple(probes.shape)
    if got != shape and (len(got) != len(shape) + 1 or got[1:] != shape or got[0] < 1):
        raise ShapeError(f"`probes` must have shape `state_shape` {shape} or (M,) + {shape}, got "
                         f"{got}; draw them with draw_probes(rng, {shape}).")
    return divergence, probes
def _zeros(xp: Any, n: int, like: Array) -> Array:
    return xp.zeros(n, dtype=like.dtype)
class _DensityField:
    """What :class:`CNF` and :class:`CoupledCNF` share: the divergence settings, the sample
    shape, probe handling and the ``(z, logp)`` blocks of the state."""

    def _set_divergence(self, layer_name: str, layer: Any, state_shape: Sequence[int],
                        divergence: str, probes: Array | None, closed_form: bool | None) -> None:
        _check_layer(layer_name, layer)
        shape = _check_state_shape(state_shape)
        method, probes = _check_divergence(divergence, probes, shape, closed_form)
        _check_output_shape(layer_name, layer, shape)
        self.z_shape = shape
        self.divergence = method
        self.probes = probes
        self.closed_form = closed_form

    @property
    def n_samples(self) -> int:
        """``N``: samples in the batch, one log-density each."""
        return self.z_shape[0]

    @property
    def n_z(self) -> int:
        """Entries of ``z``."""
        return math.prod(self.z_shape)

    def _divergence(self, layer: Any, t: Any, z: Array,
                    params: Array) -> tuple[Array, DivergenceCache]:
        return field_divergence(layer, t, z, params, method=self.divergence, probes=self.probes,
                                closed_form=self.closed_form)

    def redraw(self, rng: np.random.Generator, n_probes: int = 1, kind: str = "gaussian",
               dtype: DTypeLike = np.float64) -> Any:
        """A copy holding fresh Hutchinson probes ``draw_probes(rng, ...)``.

        Parameters
        ----------
        rng : numpy.random.Generator
        n_probes : int
            ``M``: probes per sample (the estimate is their mean); ``M = 1`` gives probes of
            shape ``z_shape``, ``M > 1`` of shape ``(M,) + z_shape``.
        kind : {"gaussian", "rademacher"}
        dtype : dtype

        Returns
        -------
        Same class, with ``divergence="hutchinson"`` (NumPy probes; for CuPy use
        :meth:`with_probes` with probes moved by :func:`adjointcore.backend.to_device`).
        """
        if isinstance(n_probes, bool) or not isinstance(n_probes, (int, np.integer)) \
                or n_probes < 1:
            raise ValueError(f"`n_probes` must be an integer >= 1, got {n_probes!r}.")
        shape = self.z_shape if n_probes == 1 else (int(n_probes),) + self.z_shape
        # CNF and CoupledCNF define with_probes
        return self.with_probes(draw_probes(rng, shape, kind, dtype))  # type: ignore[attr-defined]
