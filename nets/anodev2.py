"""ANODEV2: activations and weights evolved by a coupled pair of ODEs, with the discrete adjoint.

Model (Zhang et al. [1]_, eq. (5) with a Dirac kernel ``K``, so ``theta(t) = w(t)``)::

    z' = f(z; theta(t)),   z(0) = z0         activation ODE (f: a layer stack, params theta)
    w' = q(w; p),          w(0) = w0         evolution ODE (RDA on the conv kernels, or a layer)

Discretisation (their eq. (9), appendix A.1). On ``[0, t1]`` the activation ODE takes ``n_z``
forward Euler steps of ``dt_z = t1 / n_z`` and the weights take evolution steps of
``dt_w = t1 / n_w`` (the exact-linear RDA step :func:`nets._rda.rda_step`, or a forward Euler
step ``w + dt_w q(w; p)`` for a general layer ``q``)::

    w_{j+1} = Step(w_j; p, dt_w)
    z_{i+1} = z_i + dt_z f(z_i; w_{a_i}),      i = 0 .. n_z - 1

Step ``i`` applies the weights ``w_{a_i}``:

- ``apply="euler"`` (default): ``a_i = i n_w / n_z``, the weights at the step's start time
  ``i dt_z``. Configuration 1 (``n_z = n_w = 5``) alternates one z step and one RDA step;
  configuration 2 (``n_z = 2``, ``n_w = 10``) evolves 5 RDA steps between the two z steps.
- ``apply="endpoints"``: ``a_i = i n_w / (n_z - 1)``, the reading of configuration 2 in the
  paper's sec. 2.2 ("we only use w_0 and w_1"): the second z step applies ``w(t1)``, reached
  after all ``n_w`` steps.

The forward runs all ``n_w`` evolution steps and returns the final weights ``w_{n_w} = w(t1)``
with its cache (``ANODEV2Cache.w_final``); only the steps up to ``M = max(a_i)`` influence the
output ``z_{n_z}`` (with ``apply="euler"``, ``M = n_w - n_w / n_z < n_w``), so the reverse pass
below differentiates those ``M`` steps only: the later ones have a zero cotangent.

The block is a layer (:mod:`adjointcore.layers.base`): ``params = [w0, p]``, ``x = z0``,
``forward(params, x) -> (z_{n_z}, ANODEV2Cache)`` and ``vjp(params, cache, y_bar) -> (x_bar,
[w0_bar, p_bar])``.

Reverse pass (derived from the discrete Lagrangian, i.e. backpropagation through the above)
-------------------------------------------------------------------------------------------
With ``z_bar_{n_z}`` given, for ``i = n_z - 1 .. 0``::

    (x_bar, g_i) = f.vjp at (z_i, w_{a_i}) of dt_z * z_bar_{i+1}
    z_bar_i      = z_bar_{i+1} + x_bar                 (the adjoint alpha of eq. (7a))
    (g_i is df/dtheta^T alpha, the gamma of eq. (7b), injected into w_bar at index a_i)

then, for ``j = M - 1 .. 0`` with ``M = max(a_i)`` and ``w_bar_M = sum_{a_i = M} g_i``::

    (w_bar_j, p_bar_j) = Step.vjp at w_j of w_bar_{j+1};   w_bar_j += sum_{a_i = j} g_i
    p_bar += p_bar_j                                       (eq. (7c)-(7e), discretised)

giving ``z0_bar = z_bar_0``, ``w0_bar = w_bar_0`` and ``p_bar``. The weight sweep restarts from
``w0`` under the block's checkpoint ``schedule`` of :mod:`adjointcore.checkpointing`
(``StoreAll()`` by default, ``Revolve(s)`` for binomial checkpointing of the weight trajectory);
the z sweep uses the ``n_z`` states ``z_i``, applied weights and ``f`` caches kept by the
forward (no ``f`` evaluation in the reverse pass).

References
----------
.. [1] T. Zhang, Z. Yao, A. Gholami, K. Keutzer, J. Gonzalez, G. Biros, M. Mahoney,
   "ANODEV2: A coupled neural ODE framework", NeurIPS 2019, arXiv:1906.04596.
.. [2] A. Gholami, K. Keutzer, G. Biros, "ANODE: Unconditionally accurate memory-efficient
   gradients for neural ODEs", IJCAI 2019 (discretise-then-optimise with checkpointing).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from adjointcore.backend import Array, as_dtype, get_array_module
from adjointcore.checkpointing import Schedule, StoreAll, run_adjoint
from adjointcore.errors import (
    ParameterError,
    ShapeError,
    check_array,
    check_generator,
    check_params,
    check_positive_int,
)
from adjointcore.layers.base import Layer, init_child
from adjointcore.layers.binding import call_vjp

from ._layer_evolution import LayerEvolution, LayerEvolutionCache
from ._rda import RDAEvolution, RDAEvolutionCache

__all__ = ["CONFIGURATIONS", "ANODEV2Block", "ANODEV2Cache", "LayerEvolution",
           "LayerEvolutionCache", "RDAEvolution", "RDAEvolutionCache", "apply_indices"]

#: The paper's two configurations (appendix A.1): steps of the activation and evolution ODEs.
CONFIGURATIONS = {1: {"n_z": 5, "n_w": 5}, 2: {"n_z": 2, "n_w": 10}}


# -- the coupled block -----------------------------------------------------------------------------
def evolution_step(evolution: Any, p: Array) -> Callable[[Array, float, float], tuple[Array, Any]]:
    """``step(w, t, dt) -> (w_next, cache)`` of ``evolution`` with its parameters ``p`` fixed.

    An evolution with ``check_params`` (:class:`RDAEvolution`) has ``p``'s values checked here,
    once, and then steps with ``checked=True``: on a device no step reads anything back.
    """
    if callable(getattr(evolution, "check_params", None)):
        evolution.check_params(p)
        return lambda w, t, dt: evolution.step(p, w, t, dt, checked=True)
    return lambda w, t, dt: evolution.step(p, w, t, dt)


def apply_indices(n_z: int, n_w: int, apply: str = "euler") -> tuple[int, ...]:
    """Evolution-step index ``a_i`` of the weights applied at activation step ``i``.

    ``"euler"``: ``i n_w / n_z`` (``n_w`` a multiple of ``n_z``); ``"endpoints"``:
    ``i n_w / (n_z - 1)`` (``n_z >= 2``, ``n_w`` a multiple of ``n_z - 1``). See module notes.
    """
    n_z, n_w = check_positive_int("n_z", n_z), check_positive_int("n_w", n_w)
    if apply == "euler":
        if n_w % n_z:
            raise ValueError(f"`n_w`={n_w} must be a multiple of `n_z`={n_z} with "
                             f"apply='euler' (weights sampled at the z step times).")
        return tuple(i * (n_w // n_z) for i in range(n_z))
    if apply == "endpoints":
        if n_z < 2 or n_w % (n_z - 1):
            raise ValueError(f"apply='endpoints' needs n_z >= 2 and n_w a multiple of n_z - 1, "
                             f"got n_z={n_z}, n_w={n_w}.")
        return tuple(i * (n_w // (n_z - 1)) for i in range(n_z))
    raise ValueError(f"`apply` must be 'euler' or 'endpoints', got {apply!r}.")


class ANODEV2Cache(NamedTuple):
    """Cache of :meth:`ANODEV2Block.forward`: what :meth:`ANODEV2Block.vjp` needs, and ``w(T)``.

    Attributes
    ----------
    zs : tuple of ndarray
        States ``z_0 .. z_{n_z - 1}`` entering each activation step, each of the input's shape.
    thetas : tuple of ndarray
        Weights ``w_{a_i}`` applied at each activation step, each of shape ``(f.n_params,)``.
    w_final : ndarray, shape (f.n_params,)
        ``w_{n_w} = w(t1)``, the end of the weight evolution (bitwise
        ``block.weights(w0, p)[-1]``). Read-only output: the VJP does not use it (steps after
        the last applied index do not influence the block's output).
    f_caches : tuple
        The cache of ``f`` at each activation step, kept for the VJP (which would otherwise
        evaluate ``f`` again at every ``(z_i, w_{a_i})``).
    """
    zs: tuple[Array, ...]
    thetas: tuple[Array, ...]
    w_final: Array
    f_caches: tuple[Any, ...]


class ANODEV2Block(Layer):
    """Coupled activation/evolution ODE block of ANODEV2 as a layer (discretised as in the paper).

    Its flat parameter vector is ``params = [w0, p]``: the initial weights ``w0`` of ``f``
    (``f.n_params`` values) followed by the evolution parameters ``p`` (``evolution.n_params``
    values; for :class:`RDAEvolution` the ``tau, v0, v1, rho`` of every kernel tensor). The block
    maps ``x = z_0`` to ``z_{n_z}`` (module notes), so it composes in
    :class:`~adjointcore.layers.Sequential` and is checked by
    :func:`adjointcore.gradcheck.check_layer`.

    Parameters
    ----------
    f : layer object
        Activation vector field ``f(z; theta)``, shape preserving (e.g. a
        :class:`~adjointcore.layers.Sequential` of padded ``Conv2d`` and ``Tanh``). Time-dependent
        layers receive ``t = i dt_z``. Layers drawing random numbers (``needs_rng``) are
        rejected: the VJP re-evaluates ``f`` and could not replay the draws.
    evolution : RDAEvolution, LayerEvolution or compatible
        One step of the evolution ODE (protocol in :class:`nets._rda.RDAEvolution`).
    n_z, n_w : int
        Steps of the activation and evolution ODEs on ``[0, t1]``.
    t1 : float
        Final time (the paper uses 1).
    apply : {"euler", "endpoints"}
        Which weights each activation step applies (:func:`apply_indices`); kept as the
        attribute ``apply_rule`` (``apply`` is the layer's fast-path method).
    schedule : checkpoint schedule, optional
        Schedule of the VJP's weight sweep (:mod:`adjointcore.checkpointing`); default ``None``
        is ``StoreAll()``. ``Revolve(snapshots=s)`` keeps at most ``s`` weight vectors and
        recomputes the others; every schedule gives bitwise the same gradient.

    Notes
    -----
    ``forward(params, x) -> (z_{n_z}, ANODEV2Cache)`` with ``x`` of any shape ``f`` accepts
    (e.g. ``(N, C, H, W)``); ``t=`` and ``rng=`` context keywords are accepted and ignored (the
    block has its own time axis ``[0, t1]``). The forward runs the weight evolution to the end,
    all ``n_w`` steps, and returns the final weights ``w(t1)`` in ``cache.w_final`` next to the
    applied weights ``cache.thetas``. With ``apply="euler"`` the steps after the last applied
    index ``a_{n_z - 1} = n_w - n_w / n_z`` do not influence ``z_{n_z}``: their cotangent is
    zero and the VJP runs no reverse step for them.

    ``vjp(params, cache, y_bar, need_params=True) -> (x_bar, params_bar)`` with
    ``params_bar = [w0_bar, p_bar]`` (``None`` when ``need_params`` is false: then only the
    activation sweep runs, with ``f``'s VJP asked for no parameter cotangent). The parameter
    cotangent needs the weight sweep, which restarts from ``w0`` under :attr:`schedule`; its
    work counters are not returned.

    Examples
    --------
    >>> from adjointcore.layers import Conv2d, Sequential, Tanh
    >>> f = Sequential(Conv2d(2, 2, 3, padding=1), Tanh(), Conv2d(2, 2, 3, padding=1))
    >>> block = ANODEV2Block.from_configuration(f, RDAEvolution(f, sigma="tanh"), 2)
    >>> block.apply_at
    (0, 5)
    >>> params = block.init(np.random.default_rng(0))
    >>> z, cache = block.forward(params, np.ones((1, 2, 4, 4)))
    >>> z.shape, cache.w_final.shape
    ((1, 2, 4, 4), (76,))
    """

    def __init__(self, f: Any, evolution: Any, n_z: int = 5, n_w: int = 5, t1: float = 1.0,
                 apply: str = "euler", schedule: Schedule | None = None) -> None:
        for obj, name, attrs in ((f, "f", ("n_params", "forward", "vjp")),
                                 (evolution, "evolution",
                                  ("n_params", "step", "step_vjp"))):
            missing = [a for a in attrs if not hasattr(obj, a)]
            if missing:
                raise TypeError(f"`{name}` ({type(obj).__name__}) lacks {', '.join(missing)}.")
        if getattr(f, "needs_rng", False):
            raise ValueError(f"`f` ({type(f).__name__}) draws random numbers (needs_rng=True); "
                             f"ANODEV2Block re-evaluates f in its VJP and cannot replay the "
                             f"draws. Use deterministic layers (e.g. Dropout removed or in eval "
                             f"mode).")
        n_weights = getattr(evolution, "n_weights", None)
        if n_weights is not None and n_weights != f.n_params:
            raise ValueError(f"`evolution` evolves {n_weights} weights but `f` has "
                             f"{f.n_params} parameters; build it as RDAEvolution(f).")
        if isinstance(t1, bool) or not (isinstance(t1, (int, float, np.integer, np.floating))
                                        and math.isfinite(t1) and t1 > 0):
            raise ValueError(f"`t1` must be a positive finite time, got {t1!r}.")
        if schedule is not None and not callable(getattr(schedule, "plan", None)):
            raise TypeError(f"`schedule` must be a checkpoint schedule (StoreAll(), Uniform(k), "
                            f"Revolve(s)) or None for StoreAll(), got {schedule!r}.")
        self.f, self.evolution, self.schedule = f, evolution, schedule
        self.apply_at = apply_indices(n_z, n_w, apply)
        # the rule is `apply_rule`: an attribute named `apply` would hide the fast path Layer.apply
        self.n_z, self.n_w, self.t1, self.apply_rule = int(n_z), int(n_w), float(t1), apply
        n_f, n_p = int(f.n_params), int(evolution.n_params)
        self._n_f, self._n_p = n_f, n_p
        self._w0_slice, self._p_slice = slice(0, n_f), slice(n_f, n_f + n_p)

    @classmethod
    def from_configuration(cls, f: Any, evolution: Any, number: int, t1: float = 1.0,
                           apply: str = "euler", schedule: Schedule | None = None) -> ANODEV2Block:
        """Block of the paper's configuration ``number`` (1 or 2, :data:`CONFIGURATIONS`)."""
        if number not in CONFIGURATIONS:
            raise ValueError(f"`number` must be 1 or 2 (the paper's configurations), got "
                             f"{number!r}.")
        return cls(f, evolution, t1=t1, apply=apply, schedule=schedule,
                   **CONFIGURATIONS[number])

    # -- parameters ------------------------------------------------------------------------------
    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"w0": (f.n_params,), "p": (evolution.n_params,)}``."""
        return {"w0": (self._n_f,), "p": (self._n_p,)}

    @property
    def n_params(self) -> int:
        return self._n_f + self._n_p

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64,
             **evolution_options: Any) -> NDArray[Any]:
        """``[w0, p]`` with ``w0 = f.init(rng, dtype)`` drawn first, then
        ``p = evolution.init(rng, dtype, **evolution_options)``.

        Parameters
        ----------
        rng : numpy.random.Generator
        dtype : dtype
            float64 (default) or float32.
        **evolution_options
            Passed to ``evolution.init``, e.g. ``spread=0.1`` to draw the RDA coefficients
            (:meth:`RDAEvolution.init`; its default is deterministic).

        Returns
        -------
        params : ndarray, shape (n_params,)
        """
        check_generator(rng)
        dtype = as_dtype(dtype)
        w0 = init_child(self.f, rng, dtype, self._n_f, "f")
        p = np.asarray(self.evolution.init(rng, dtype=dtype, **evolution_options))
        if p.shape != (self._n_p,):
            raise ParameterError(f"evolution.init returned shape {tuple(p.shape)}, expected "
                                 f"({self._n_p},) (its n_params).")
        return np.concatenate([w0, p.astype(dtype, copy=False)])

    def split(self, params: Array) -> tuple[Array, Array]:
        """``(w0, p)``: views of the two blocks of ``params`` (shapes ``(f.n_params,)`` and
        ``(evolution.n_params,)``)."""
        self._check_params(params)
        return params[self._w0_slice], params[self._p_slice]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if hasattr(self.f, "output_shape") and tuple(self.f.output_shape(shape)) != shape:
            raise ShapeError(f"`f` maps {shape} to {tuple(self.f.output_shape(shape))}; the "
                             f"activation field must preserve the shape (padding=k//2).")
        return shape

    @property
    def dt_z(self) -> float:
        return self.t1 / self.n_z

    @property
    def dt_w(self) -> float:
        return self.t1 / self.n_w

    def _context(self, i: int) -> dict[str, Any]:
        return {"t": i * self.dt_z} if getattr(self.f, "time_dependent", False) else {}

    def _check_params(self, params: Array) -> None:
        check_params("params", params, self.n_params, owner="ANODEV2Block")
        check_array("params", params, ndim=1, allow_complex=False,
                    fix="params = [w0, p] is real; build it with block.init(rng).")

    # -- forward ---------------------------------------------------------------------------------
    def weights(self, w0: Array, p: Array, n_steps: int | None = None) -> list[Array]:
        """Weight trajectory ``[w_0, .., w_n]`` (default ``n = n_w``), e.g. for plotting.

        Parameters
        ----------
        w0 : ndarray, shape (f.n_params,)
        p : ndarray, shape (evolution.n_params,)
        n_steps : int, optional
            Number of evolution steps ``n >= 0`` (default ``n_w``).

        Returns
        -------
        list of ndarray, each of shape (f.n_params,)
            ``weights(w0, p)[-1]`` is bitwise ``forward(...)[1].w_final``.
        """
        n = self.n_w if n_steps is None else check_positive_int("n_steps", n_steps, minimum=0)
        step = evolution_step(self.evolution, p)
        out = [w0]
        for j in range(n):
            out.append(step(out[-1], j * self.dt_w, self.dt_w)[0])
        return out

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, ANODEV2Cache]:
        """Integrate the coupled system from ``z_0 = x`` (module notes).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            ``[w0, p]`` (:meth:`init`).
        x : ndarray
            Initial activation ``z_0``, any shape ``f`` preserves, e.g. ``(N, C, H, W)``.
        **context
            ``t=``, ``rng=``: accepted and ignored.

        Returns
        -------
        z : ndarray, shape of ``x``
            ``z_{n_z}``.
        cache : ANODEV2Cache
            States, applied weights and the final weights ``w_final = w(t1)``.
        """
        unknown = set(context) - {"t", "rng"}
        if unknown:
            raise TypeError(f"unknown context {sorted(unknown)}; ANODEV2Block.forward accepts "
                            f"only t= and rng= (both ignored: the block integrates on [0, t1]).")
        self._check_params(params)
        check_array("x", x, allow_complex=False,
                    fix="x is the initial activation z0, a real array f accepts.")
        w0, p = params[self._w0_slice], params[self._p_slice]
        step = evolution_step(self.evolution, p)
        z, w, j, zs, thetas, f_caches = x, w0, 0, [], [], []
        for i, a in enumerate(self.apply_at):
            while j < a:
                w = step(w, j * self.dt_w, self.dt_w)[0]
                j += 1
            zs.append(z)
            thetas.append(w)
            dz, f_cache = self.f.forward(w, z, **self._context(i))
            f_caches.append(f_cache)
            if tuple(dz.shape) != tuple(z.shape):
                raise ShapeError(f"`f` must preserve the shape of z {tuple(z.shape)}, got "
                                 f"{tuple(dz.shape)}; pad the convolutions (padding=k//2).")
            z = z + self.dt_z * dz
        while j < self.n_w:          # to w(t1): no influence on z, exposed as cache.w_final
            w = step(w, j * self.dt_w, self.dt_w)[0]
            j += 1
        return z, ANODEV2Cache(tuple(zs), tuple(thetas), w, tuple(f_caches))

    # -- reverse ---------------------------------------------------------------------------------
    def vjp(self, params: Array, cache: ANODEV2Cache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Cotangents of ``<y_bar, z_{n_z}>`` w.r.t. ``x = z_0`` and ``params = [w0, p]``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            The parameters given to :meth:`forward`.
        cache : ANODEV2Cache
            From :meth:`forward`.
        y_bar : ndarray, shape of ``x``
            Cotangent of the block output.
        need_params : bool
            False: only ``x_bar`` (the weight sweep is skipped).

        Returns
        -------
        x_bar : ndarray, shape of ``x``
        params_bar : ndarray, shape (n_params,), or None
            ``[w0_bar, p_bar]``; ``None`` when ``need_params`` is false.
        """
        self._check_params(params)
        if not isinstance(cache, ANODEV2Cache) or len(cache.zs) != self.n_z:
            raise TypeError(f"`cache` must be the ANODEV2Cache returned by this block's forward "
                            f"(n_z = {self.n_z} states), got {type(cache).__name__}.")
        z_bar = check_array("y_bar", y_bar, shape=tuple(cache.zs[0].shape), allow_complex=False,
                            fix="Pass the cotangent of the block output (shape of x).")
        w0, p = params[self._w0_slice], params[self._p_slice]
        inject: dict[int, Any] = {}
        for i in reversed(range(self.n_z)):
            x_bar, g = call_vjp(self.f, cache.thetas[i], cache.f_caches[i], self.dt_z * z_bar,
                                need_params)
            z_bar = z_bar + x_bar
            if need_params:
                a = self.apply_at[i]
                inject[a] = g if a not in inject else inject[a] + g
        if not need_params:
            return z_bar, None
        xp = get_array_module(w0)
        p_bar = xp.zeros_like(p)
        m = self.apply_at[-1]
        if m == 0:
            return z_bar, xp.concatenate([inject[0], p_bar])
        evo, dt = self.evolution, self.dt_w
        step = evolution_step(evo, p)
        acc = [p_bar]

        def forward_step(j: int, w: Array) -> Array:
            return step(w, j * dt, dt)[0]

        def reverse_step(j: int, w: Array, w_next_bar: Array) -> Array:
            _, step_cache = step(w, j * dt, dt)
            w_bar, pb = evo.step_vjp(p, step_cache, w_next_bar)
            acc[0] = acc[0] + pb
            return w_bar + inject[j] if j in inject else w_bar

        # Only the first m = max(a_i) steps: later ones have a zero cotangent.
        w0_bar, _ = run_adjoint(StoreAll() if self.schedule is None else self.schedule, m,
                                state0=w0, forward_step=forward_step,
                                reverse_step=reverse_step, final_bar=lambda w: inject[m])
        return z_bar, xp.concatenate([w0_bar, acc[0]])

    def __repr__(self) -> str:
        sched = "" if self.schedule is None else f", schedule={self.schedule!r}"
        return (f"ANODEV2Block(n_z={self.n_z}, n_w={self.n_w}, t1={self.t1}, "
                f"apply={self.apply_rule!r}, evolution={self.evolution!r}{sched})")
