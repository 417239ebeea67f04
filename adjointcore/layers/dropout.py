"""Inverted dropout with the mask drawn from a passed Generator and kept in the cache.

References
----------
.. [1] N. Srivastava, G. Hinton, A. Krizhevsky, I. Sutskever, R. Salakhutdinov, "Dropout: a
   simple way to prevent neural networks from overfitting", JMLR 15 (2014).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, get_array_module, real_dtype
from ..errors import check_array, check_probability
from ._checks import check_mode
from .base import ParameterFree
from .second_order import SecondOrderBars, linear_jvp_vjp

__all__ = ["Dropout", "DropoutCache"]


def _device_generator(rng: Any, x: Array) -> bool:
    """True when ``rng`` is a generator of ``x``'s (non-NumPy) array module: CuPy's, or one
    whose module names itself (the device emulation's)."""
    if get_array_module(x) is np or not callable(getattr(rng, "random", None)):
        return False
    root = type(rng).__module__.split(".")[0]
    return root == "cupy" or type(rng).__module__ == "adjointcore.device_emulation"


class DropoutCache(NamedTuple):
    """Cache of :class:`Dropout`: ``mask`` (shape of x, entries 0 or ``1/(1-p)``) or None."""
    mask: Any


class Dropout(ParameterFree):
    """Inverted dropout: ``y = x * mask`` with ``mask = keep / (1 - p)``, ``keep ~ Bernoulli(1-p)``.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of zeroing an entry.
    mode : {"train", "eval"}
        "eval" is the identity (no ``rng`` needed).

    Notes
    -----
    The mask comes from one ``rng.random(x.shape)`` call on the generator passed as ``rng=``:

    * a ``numpy.random.Generator`` draws it on the host, and it is copied to the input's device,
      so the same seed gives the same mask on NumPy and CuPy (one host-to-device copy per call
      for device inputs);
    * a generator of the input's device (``cupy.random.default_rng(seed)``, or
      ``adjointcore.device_emulation.xp.random.default_rng(seed)``) draws it there, with no
      copy: reproducible from its seed on that device, but not the NumPy generator's mask.

    Given the mask the layer is linear, so its VJP is exact and the complex step applies; a
    finite-difference check must pass identically seeded generators to each forward call.
    ``needs_rng`` is true only when a mask is drawn (``mode="train"`` and ``p > 0``).
    """

    analytic = True

    def __init__(self, p: float = 0.5, mode: str = "train") -> None:
        self.p = check_probability("p", p)
        self.mode = check_mode(mode)

    @property
    # read-only: derived from mode and p
    def needs_rng(self) -> bool:  # type: ignore[override]
        return self.mode == "train" and self.p > 0

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        return tuple(input_shape)

    def forward(self, params: Array | None, x: Array, rng: Any = None,
                **context: Any) -> tuple[Array, DropoutCache]:
        """``(x * mask, DropoutCache(mask))``; identity with ``mask=None`` in eval mode or p=0."""
        self._check_no_params(params)
        check_array("x", x)
        if self.needs_rng and not (isinstance(rng, np.random.Generator)
                                   or _device_generator(rng, x)):
            raise TypeError(f"`rng` must be a numpy.random.Generator (or a generator of x's "
                            f"device, e.g. cupy.random.default_rng(seed)) in mode='train' with "
                            f"p={self.p}, got {rng!r}; call forward(params, x, "
                            f"rng=np.random.default_rng(seed)), or use Dropout(p, mode='eval').")
        return self.apply(params, x, rng=rng)  # type: ignore[return-value]  # tape=True: a cache

    def apply(self, params: Array | None, x: Array, t: Any = None, rng: Any = None,
              tape: bool = True) -> tuple[Array, DropoutCache | None]:
        """Unchecked :meth:`forward` (the mask is drawn also with ``tape=False``: the output
        depends on it)."""
        if not self.needs_rng:
            return x, DropoutCache(None)
        xp = get_array_module(x)
        dtype = real_dtype(x.dtype)
        keep = rng.random(tuple(x.shape)) >= self.p       # on the generator's side
        scale = np.asarray(1 - self.p, dtype)
        if isinstance(rng, np.random.Generator):
            mask = xp.asarray(keep.astype(dtype) / scale)
        else:                                             # drawn on the device: no copy
            mask = keep.astype(dtype) / dtype.type(scale)
        return x * mask, (DropoutCache(mask) if tape else None)

    def vjp(self, params: Array | None, cache: DropoutCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        if cache.mask is not None:
            self._check_y_bar(y_bar, cache.mask)
        return self.apply_vjp(params, cache, y_bar), self._params_bar(y_bar, need_params)

    def apply_vjp(self, params: Array | None, cache: DropoutCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`."""
        return y_bar if cache.mask is None else y_bar * cache.mask

    def jvp(self, params: Array | None, cache: DropoutCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode with the cached mask held fixed: ``y_dot = x_dot * mask``.

        Parameters
        ----------
        params : None or ndarray, shape (0,)
        cache : DropoutCache
        x_dot : ndarray, shape of ``x`` (any shape when no mask was drawn)
        params_dot : None or ndarray, shape (0,)

        Returns
        -------
        y_dot : ndarray, shape of ``x`` (``x_dot`` itself in eval mode or with p = 0)
        """
        self._check_mask_tangents(params, cache, x_dot, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def _check_mask_tangents(self, params: Array | None, cache: DropoutCache, x_dot: Array,
                             params_dot: Array | None) -> None:
        """No parameters; ``x_dot`` of the mask's shape (any shape without a mask)."""
        self._check_no_params(params)
        if cache.mask is not None:
            self._check_tangents(x_dot, cache.mask.shape, params_dot)
        else:
            # None entries: any size along that axis (check_array accepts them)
            self._check_tangents(x_dot, (None,) * getattr(x_dot, "ndim", 0),  # type: ignore[arg-type]
                                 params_dot)

    def apply_jvp(self, params: Array | None, cache: DropoutCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        return x_dot if cache.mask is None else x_dot * cache.mask

    def jvp_vjp(self, params: Array | None, cache: DropoutCache, x_dot: Array,
                params_dot: Array | None, y_dot_bar: Array,
                y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP with the cached mask held fixed (see :meth:`apply_jvp_vjp`).

        The checks of :meth:`jvp` (``x_dot`` of the mask's shape; any shape without a mask),
        then those of :meth:`Layer.jvp_vjp <adjointcore.layers.Layer.jvp_vjp>` (``y_dot_bar``,
        ``y_bar`` of ``x_dot``'s shape).

        Raises
        ------
        ShapeError, ParameterError, TypeError
            Naming ``params``, ``x_dot``, ``params_dot``, ``y_dot_bar`` or ``y_bar``.
        """
        self._check_mask_tangents(params, cache, x_dot, params_dot)
        return super().jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)

    def apply_jvp_vjp(self, params: Array | None, cache: DropoutCache, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Unchecked second-order VJP. Given the mask, ``y = mask * x`` and ``y_dot = mask *
        x_dot`` are linear: no second derivative, ``x_dot_bar = mask * y_dot_bar`` and
        ``x_bar = mask * y_bar`` (zero without ``y_bar``); the identity (eval mode, ``p = 0``)
        passes both cotangents through (``x_dot_bar`` is then ``y_dot_bar`` itself, as the VJP
        returns ``y_bar``). See :func:`~adjointcore.layers.base.linear_jvp_vjp`.

        Returns
        -------
        SecondOrderBars
            ``(x_bar, empty, x_dot_bar, empty, None)``.
        """
        return linear_jvp_vjp(self, params, cache, tuple(x_dot.shape), x_dot, y_dot_bar, y_bar)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p}, mode={self.mode!r})"
