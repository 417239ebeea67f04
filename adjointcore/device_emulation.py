"""A CPU emulation of a GPU array backend: catches what would stall or break on a device.

Most machines this project runs on have no GPU, so the CuPy path would otherwise never execute.
:data:`xp` is an array module whose arrays (:class:`DeviceArray`) behave like CuPy's where it
matters for correctness and speed, while computing with NumPy underneath (so results are NumPy's
bits):

* **No implicit host conversion.** ``np.asarray(a)`` / ``np.array(a)`` raise ``TypeError``, as
  for a ``cupy.ndarray``; so does mixing a host NumPy array (``ndim >= 1``) into an operation with
  a device array. Host data go to the device with ``xp.asarray`` and come back with ``a.get()``
  or ``xp.asnumpy(a)``.
* **Synchronisations are counted.** Every conversion that makes the host wait for the device
  (``float(a)``, ``int(a)``, ``bool(a)``, ``a.item()``, ``a.tolist()``, ``a.get()``,
  ``xp.asnumpy(a)``, ``operator.index``) increments a counter, readable with :func:`count_syncs`;
  host-to-device copies (``xp.asarray`` of host data) are counted apart as uploads.
* **Reductions stay on the device**: ``a.sum()``, ``xp.max(a)`` return 0-d device arrays, so
  reading them is a counted synchronisation, as on a GPU.

``adjointcore.backend.get_array_module`` (and the solvers' own lookup) return :data:`xp` for these
arrays: an array type names its module in the class attribute ``__xp__``.

Examples
--------
>>> import numpy as np
>>> from adjointcore import device_emulation as dev
>>> a = dev.xp.asarray(np.arange(3.0))
>>> with dev.count_syncs() as syncs:
...     total = float(a.sum())
>>> total, syncs.total
(3.0, 1)
"""
from __future__ import annotations

import contextlib
import operator
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NoReturn

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["DeviceArray", "DeviceGenerator", "xp", "count_syncs", "SyncCounter", "to_device"]

_COUNTERS: list[SyncCounter] = []          # active SyncCounter objects (nested contexts all count)


class SyncCounter:
    """Counts of device-to-host synchronisations (by kind) and host-to-device uploads."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.uploads = 0

    @property
    def total(self) -> int:
        """All synchronisations."""
        return sum(self.kinds.values())

    def __repr__(self) -> str:
        return f"SyncCounter(total={self.total}, kinds={dict(self.kinds)}, uploads={self.uploads})"


@contextlib.contextmanager
def count_syncs() -> Iterator[SyncCounter]:
    """Context manager yielding a :class:`SyncCounter` of what happens inside it."""
    counter = SyncCounter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


def _sync(kind: str) -> None:
    for counter in _COUNTERS:
        counter.kinds[kind] += 1


def _upload() -> None:
    for counter in _COUNTERS:
        counter.uploads += 1


def _refuse_host(value: Any, where: str) -> None:
    if type(value) is np.ndarray and value.ndim > 0:
        raise TypeError(f"{where}: a host NumPy array of shape {value.shape} met a device array "
                        f"(CuPy refuses this too); move it with xp.asarray once, outside the "
                        f"loop.")


def _unwrap(value: Any, where: str) -> Any:
    """Device arrays to their NumPy buffers (recursively); host arrays refused."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, where) for k, v in value.items()}
    _refuse_host(value, where)
    return value


def _wrap(value: Any) -> Any:
    """NumPy results as device arrays (scalars as 0-d arrays, as CuPy returns them)."""
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _binary(name: str) -> Callable[[DeviceArray, Any], Any]:
    def op(self: DeviceArray, other: Any) -> Any:
        return _wrap(getattr(self._a, name)(_unwrap(other, name)))
    op.__name__ = name
    return op


def _inplace(name: str) -> Callable[[DeviceArray, Any], DeviceArray]:
    def op(self: DeviceArray, other: Any) -> DeviceArray:
        getattr(self._a, name)(_unwrap(other, name))
        return self
    op.__name__ = name
    return op


def _unary(name: str) -> Callable[[DeviceArray], Any]:
    def op(self: DeviceArray) -> Any:
        return _wrap(getattr(self._a, name)())
    op.__name__ = name
    return op


class DeviceArray:
    """An array "on the emulated device": a NumPy buffer behind CuPy-like rules (module notes).

    Parameters
    ----------
    a : numpy.ndarray
        The buffer (shared, not copied).
    """

    __slots__ = ("_a",)
    __array_priority__ = 1000
    __xp__: ClassVar[_Module]      # set below, once the module exists

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    # -- what CuPy refuses or synchronises ----------------------------------------------------
    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> NoReturn:
        raise TypeError("Implicit conversion of a device array to a NumPy array is not allowed "
                        "(device emulation, as CuPy): use a.get(), xp.asnumpy(a) or "
                        "adjointcore.backend.to_host(a) where a host copy is really wanted.")

    def get(self) -> np.ndarray:
        """Copy to the host (a synchronisation)."""
        _sync("get")
        return self._a.copy()

    def item(self) -> Any:
        _sync("item")
        return self._a.item()

    def tolist(self) -> Any:
        _sync("tolist")
        return self._a.tolist()

    def __float__(self) -> float:
        _sync("float")
        return float(self._a)

    def __int__(self) -> int:
        _sync("int")
        return int(self._a)

    def __bool__(self) -> bool:
        _sync("bool")
        return bool(self._a)

    def __index__(self) -> int:
        _sync("index")
        return operator.index(self._a)

    def __complex__(self) -> complex:
        _sync("complex")
        return complex(self._a)

    # -- NumPy dispatch (CuPy implements both protocols) ------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        args = _unwrap(inputs, ufunc.__name__)
        kwargs = _unwrap(kwargs, ufunc.__name__)
        return _wrap(getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func: Callable[..., Any], types_: Any, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> Any:
        return _wrap(func(*_unwrap(args, func.__name__), **_unwrap(kwargs, func.__name__)))

    # -- attributes and methods -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def strides(self) -> tuple[int, ...]:
        return self._a.strides

    @property
    def itemsize(self) -> int:
        return self._a.itemsize

    @property
    def T(self) -> DeviceArray:
        return DeviceArray(self._a.T)

    @property
    def real(self) -> DeviceArray:
        return DeviceArray(self._a.real)

    @property
    def imag(self) -> DeviceArray:
        return DeviceArray(self._a.imag)

    @property
    def flags(self) -> Any:
        return self._a.flags

    @property
    def base(self) -> DeviceArray | None:
        return None if self._a.base is None else DeviceArray(self._a.base)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):         # no __array_interface__ & co.: no implicit host view
            raise AttributeError(name)
        method = getattr(self._a, name)
        if not callable(method):
            return _wrap(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return _wrap(method(*_unwrap(args, name), **_unwrap(kwargs, name)))
        return call

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Any]:
        return (_wrap(v) for v in self._a)

    def __getitem__(self, index: Any) -> Any:
        return _wrap(self._a[_unwrap(index, "indexing")])

    def __setitem__(self, index: Any, value: Any) -> None:
        self._a[_unwrap(index, "indexing")] = _unwrap(value, "assignment")

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self._a.shape}, dtype={self._a.dtype})"

    __add__, __radd__, __sub__, __rsub__ = (_binary(n) for n in
                                            ("__add__", "__radd__", "__sub__", "__rsub__"))
    __mul__, __rmul__, __truediv__, __rtruediv__ = (_binary(n) for n in
                                                    ("__mul__", "__rmul__", "__truediv__",
                                                     "__rtruediv__"))
    __floordiv__, __rfloordiv__, __mod__, __rmod__ = (_binary(n) for n in
                                                      ("__floordiv__", "__rfloordiv__",
                                                       "__mod__", "__rmod__"))
    __pow__, __rpow__, __matmul__, __rmatmul__ = (_binary(n) for n in
                                                  ("__pow__", "__rpow__", "__matmul__",
                                                   "__rmatmul__"))
    __and__, __rand__, __or__, __ror__, __xor__, __rxor__ = (_binary(n) for n in
                                                             ("__and__", "__rand__", "__or__",
                                                              "__ror__", "__xor__", "__rxor__"))
    __lt__, __le__, __gt__, __ge__, __eq__, __ne__ = (_binary(n) for n in
                                                      ("__lt__", "__le__", "__gt__", "__ge__",
                                                       "__eq__", "__ne__"))
    __iadd__, __isub__, __imul__, __itruediv__ = (_inplace(n) for n in
                                                  ("__iadd__", "__isub__", "__imul__",
                                                   "__itruediv__"))
    __ipow__, __imatmul__, __iand__, __ior__ = (_inplace(n) for n in
                                                ("__ipow__", "__imatmul__", "__iand__",
                                                 "__ior__"))
    __neg__, __pos__, __abs__, __invert__ = (_unary(n) for n in
                                             ("__neg__", "__pos__", "__abs__", "__invert__"))
    __hash__ = None  # type: ignore[assignment]  # unhashable, as CuPy arrays are


def _asarray(a: Any, dtype: DTypeLike | None = None, **kwargs: Any) -> DeviceArray:
    """Host data to the device (an upload), device arrays as they are (cast if asked)."""
    if isinstance(a, DeviceArray):
        return a if dtype is None or a.dtype == np.dtype(dtype) else DeviceArray(
            a._a.astype(dtype))
    if isinstance(a, (np.ndarray, list, tuple)):
        _upload()
    return DeviceArray(np.array(a, dtype=dtype, **kwargs))


def _asnumpy(a: Any, **kwargs: Any) -> np.ndarray:
    return a.get() if isinstance(a, DeviceArray) else np.asarray(a)


class _Module(types.ModuleType):
    """An emulated array namespace: ``target``'s functions (NumPy's, or a submodule's such as
    ``lib.stride_tricks``, ``linalg``, ``fft``) on device arrays."""

    ndarray = DeviceArray
    # Set on the instances below (the rest of NumPy's namespace comes through __getattr__).
    asarray: Callable[..., DeviceArray]
    array: Callable[..., DeviceArray]
    asnumpy: Callable[..., np.ndarray]
    get_array_module: Callable[..., _Module]
    random: _Module
    default_rng: Callable[..., DeviceGenerator]

    def __init__(self, name: str, target: types.ModuleType, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = getattr(self._target, name)
        if isinstance(target, types.ModuleType):
            return _Module(f"{self.__name__}.{name}", target)
        if isinstance(target, (type, np.dtype)) or not callable(target) or name in _PASSTHROUGH:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            return _wrap(target(*_unwrap(args, name), **_unwrap(kwargs, name)))
        call.__name__ = name
        return call


#: NumPy names returned as they are (dtype helpers and host-side queries, no arrays in or out).
_PASSTHROUGH = {"dtype", "finfo", "iinfo", "result_type", "promote_types", "can_cast",
                "issubdtype", "errstate", "seterr", "geterr", "ndim", "shape"}

xp = _Module("adjointcore.device_emulation.xp", np,
             "NumPy functions on emulated device arrays (see adjointcore.device_emulation).")
xp.asarray = _asarray
xp.array = _asarray
xp.asnumpy = _asnumpy
xp.get_array_module = lambda *arrays: xp
DeviceArray.__xp__ = xp


class DeviceGenerator:
    """A random generator "on the emulated device" (``xp.random.default_rng(seed)``, as
    ``cupy.random.default_rng``): draws are device arrays, made without a host copy. A NumPy
    ``Generator`` underneath, so draws are reproducible from the seed.

    Parameters
    ----------
    seed : int or None
    """

    def __init__(self, seed: int | None = None) -> None:
        self._generator = np.random.default_rng(seed)

    def random(self, size: Any = None, dtype: Any = np.float64) -> DeviceArray:
        return DeviceArray(np.asarray(self._generator.random(size, dtype=dtype)))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> DeviceArray:
        return DeviceArray(np.asarray(self._generator.standard_normal(size, dtype=dtype)))

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> DeviceArray:
        return DeviceArray(np.asarray(self._generator.uniform(low, high, size)))

    def __repr__(self) -> str:
        return "DeviceGenerator(emulated device)"


xp.random = _Module("adjointcore.device_emulation.xp.random", np.random)
xp.random.default_rng = DeviceGenerator


def to_device(x: Any) -> Any:
    """A host array (or a tuple/list/dict of them) on the emulated device."""
    if isinstance(x, dict):
        return {k: to_device(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v) for v in x)
    return None if x is None else _asarray(x)
