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

Only the evolution steps up to ``max(a_i)`` influence the output and are computed.

Reverse pass (derived from the discrete Lagrangian, i.e. backpropagation through the above)
-------------------------------------------------------------------------------------------
With ``z_bar_{n_z}`` given, for ``i = n_z - 1 .. 0``::

    (x_bar, g_i) = f.vjp at (z_i, w_{a_i}) of dt_z * z_bar_{i+1}
    z_bar_i      = z_bar_{i+1} + x_bar                 (the adjoint alpha of eq. (7a))
    (g_i is df/dtheta^T alpha, the gamma of eq. (7b), injected into w_bar at index a_i)

then, for ``j = M - 1 .. 0`` with ``M = max(a_i)`` and ``w_bar_M = sum_{a_i = M} g_i``::

    (w_bar_j, p_bar_j) = Step.vjp at w_j of w_bar_{j+1};   w_bar_j += sum_{a_i = j} g_i
    p_bar += p_bar_j                                       (eq. (7c)-(7e), discretised)

giving ``z0_bar = z_bar_0``, ``w0_bar = w_bar_0`` and ``p_bar``. The weight sweep runs under a
checkpoint schedule of :mod:`adjointcore.checkpointing` (``StoreAll()`` by default,
``Revolve(s)`` for binomial checkpointing of the weight trajectory); the z sweep keeps the
``n_z`` states ``z_i`` and applied weights and recomputes each ``f`` cache once.

References
----------
.. [1] T. Zhang, Z. Yao, A. Gholami, K. Keutzer, J. Gonzalez, G. Biros, M. Mahoney,
   "ANODEV2: A coupled neural ODE framework", NeurIPS 2019, arXiv:1906.04596.
.. [2] A. Gholami, K. Keutzer, G. Biros, "ANODE: Unconditionally accurate memory-efficient
   gradients for neural ODEs", IJCAI 2019 (discretise-then-optimise with checkpointing).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from adjointcore.backend import get_array_module
from adjointcore.checkpointing import CheckpointStats, StoreAll, run_adjoint
from adjointcore.errors import ShapeError, check_array, check_positive_int
from adjointcore.layers.base import call_vjp

from ._rda import RDAEvolution, RDAEvolutionCache

__all__ = ["CONFIGURATIONS", "ANODEV2Block", "ANODEV2Trace", "ANODEV2Grads", "LayerEvolution",
           "LayerEvolutionCache", "RDAEvolution", "RDAEvolutionCache", "apply_indices"]

#: The paper's two configurations (appendix A.1): steps of the activation and evolution ODEs.
CONFIGURATIONS = {1: {"n_z": 5, "n_w": 5}, 2: {"n_z": 2, "n_w": 10}}


# -- general evolution: forward Euler on w' = q(w; p) ----------------------------------------------
class LayerEvolutionCache(NamedTuple):
    """Cache of :meth:`LayerEvolution.step`: the layer cache and the step size."""
    q_cache: Any
    dt: float


class LayerEvolution:
    """Forward Euler step ``w_{j+1} = w_j + dt q(w_j; p)`` of a general evolution ODE.

    Parameters
    ----------
    q : layer object
        Any layer (e.g. a :class:`adjointcore.layers.Sequential` of ``Linear``/``Tanh``) mapping
        the flat weight vector, seen as a batch of one ``(1, n_weights)``, to the same shape.
        Time-dependent layers receive ``t=`` the step's start time. ``p`` is its parameter
        vector.

    Notes
    -----
    Same protocol as :class:`nets._rda.RDAEvolution`; ``step_vjp`` returns
    ``(w_bar + q_x^T (dt w_bar), q_p^T (dt w_bar))``.
    """

    def __init__(self, q):
        for attr in ("n_params", "forward", "vjp"):
            if not hasattr(q, attr):
                raise TypeError(f"`q` ({type(q).__name__}) is not a layer: it lacks {attr}.")
        self.q = q

    @property
    def n_params(self) -> int:
        return int(self.q.n_params)

    def init(self, rng, dtype=np.float64):
        """``q.init(rng, dtype)``."""
        return self.q.init(rng, dtype=dtype)

    def step(self, p, w, t=0.0, dt=1.0):
        """``(w + dt q(w; p), cache)``."""
        check_array("w", w, ndim=1, allow_complex=False, fix="Pass the flat weight vector.")
        ctx = {"t": t} if getattr(self.q, "time_dependent", False) else {}
        y, cache = self.q.forward(p, w[None, :], **ctx)
        if tuple(y.shape) != (1, w.shape[0]):
            raise ShapeError(f"`q` must map the weights (1, {w.shape[0]}) to the same shape, "
                             f"got {tuple(y.shape)}; end q with Linear(h, {w.shape[0]}).")
        return w + dt * y[0], LayerEvolutionCache(cache, float(dt))

    def step_vjp(self, p, cache, w_next_bar, need_params: bool = True):
        """``(w_bar, p_bar)`` of :meth:`step`."""
        x_bar, p_bar = call_vjp(self.q, p, cache.q_cache, cache.dt * w_next_bar[None, :],
                                need_params)
        return w_next_bar + x_bar[0], p_bar

    def __repr__(self) -> str:
        return f"LayerEvolution({self.q!r})"


# -- the coupled block -----------------------------------------------------------------------------
def apply_indices(n_z: int, n_w: int, apply: str = "euler") -> tuple:
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


class ANODEV2Trace(NamedTuple):
    """What :meth:`ANODEV2Block.vjp` needs from the forward pass.

    Attributes
    ----------
    zs : tuple of ndarray
        States ``z_0 .. z_{n_z - 1}`` entering each activation step.
    thetas : tuple of ndarray
        Weights ``w_{a_i}`` applied at each step (flat).
    w0, p : ndarray
        Initial weights and evolution parameters (the weight sweep restarts from ``w0``).
    """
    zs: tuple
    thetas: tuple
    w0: Any
    p: Any


class ANODEV2Grads(NamedTuple):
    """Gradients of :meth:`ANODEV2Block.vjp` and the weight sweep's checkpoint counters."""
    z0: Any
    w0: Any
    p: Any
    stats: CheckpointStats | None


class ANODEV2Block:
    """Coupled activation/evolution ODE block of ANODEV2, discretised as in the paper.

    Parameters
    ----------
    f : layer object
        Activation vector field ``f(z; theta)``, shape preserving (e.g. a
        :class:`~adjointcore.layers.Sequential` of padded ``Conv2d`` and ``Tanh``). Time-dependent
        layers receive ``t = i dt_z``.
    evolution : RDAEvolution, LayerEvolution or compatible
        One step of the evolution ODE (protocol in :class:`nets._rda.RDAEvolution`).
    n_z, n_w : int
        Steps of the activation and evolution ODEs on ``[0, t1]``.
    t1 : float
        Final time (the paper uses 1).
    apply : {"euler", "endpoints"}
        Which weights each activation step applies (:func:`apply_indices`).

    Examples
    --------
    >>> from adjointcore.layers import Conv2d, Sequential, Tanh
    >>> f = Sequential(Conv2d(2, 2, 3, padding=1), Tanh(), Conv2d(2, 2, 3, padding=1))
    >>> block = ANODEV2Block.from_configuration(f, RDAEvolution(f, sigma="tanh"), 2)
    >>> block.apply_at
    (0, 5)
    """

    def __init__(self, f, evolution, n_z: int = 5, n_w: int = 5, t1: float = 1.0,
                 apply: str = "euler"):
        for obj, name, attrs in ((f, "f", ("n_params", "forward", "vjp")),
                                 (evolution, "evolution",
                                  ("n_params", "step", "step_vjp"))):
            missing = [a for a in attrs if not hasattr(obj, a)]
            if missing:
                raise TypeError(f"`{name}` ({type(obj).__name__}) lacks {', '.join(missing)}.")
        n_weights = getattr(evolution, "n_weights", None)
        if n_weights is not None and n_weights != f.n_params:
            raise ValueError(f"`evolution` evolves {n_weights} weights but `f` has "
                             f"{f.n_params} parameters; build it as RDAEvolution(f).")
        if not (isinstance(t1, (int, float, np.floating)) and math.isfinite(t1) and t1 > 0):
            raise ValueError(f"`t1` must be a positive finite time, got {t1!r}.")
        self.f, self.evolution = f, evolution
        self.apply_at = apply_indices(n_z, n_w, apply)
        self.n_z, self.n_w, self.t1, self.apply = int(n_z), int(n_w), float(t1), apply

    @classmethod
    def from_configuration(cls, f, evolution, number: int, t1: float = 1.0,
                           apply: str = "euler"):
        """Block of the paper's configuration ``number`` (1 or 2, :data:`CONFIGURATIONS`)."""
        if number not in CONFIGURATIONS:
            raise ValueError(f"`number` must be 1 or 2 (the paper's configurations), got "
                             f"{number!r}.")
        return cls(f, evolution, t1=t1, apply=apply, **CONFIGURATIONS[number])

    @property
    def dt_z(self) -> float:
        return self.t1 / self.n_z

    @property
    def dt_w(self) -> float:
        return self.t1 / self.n_w

    def _context(self, i: int) -> dict:
        return {"t": i * self.dt_z} if getattr(self.f, "time_dependent", False) else {}

    def _check(self, z0, w0, p):
        check_array("z0", z0, allow_complex=False)
        check_array("w0", w0, shape=(self.f.n_params,), allow_complex=False,
                    fix="w0 is the flat initial parameter vector of f (f.init(rng)).")
        check_array("p", p, shape=(self.evolution.n_params,), allow_complex=False,
                    fix="p is the evolution's parameter vector (evolution.init(rng)).")

    # -- forward ---------------------------------------------------------------------------------
    def weights(self, w0, p, n_steps: int | None = None) -> list:
        """Weight trajectory ``[w_0, .., w_n]`` (default ``n = n_w``), e.g. for plotting."""
        n = self.n_w if n_steps is None else check_positive_int("n_steps", n_steps, minimum=0)
        out = [w0]
        for j in range(n):
            out.append(self.evolution.step(p, out[-1], j * self.dt_w, self.dt_w)[0])
        return out

    def forward(self, z0, w0, p):
        """Integrate the coupled system; returns ``(z_{n_z}, ANODEV2Trace)``."""
        self._check(z0, w0, p)
        z, w, j, zs, thetas = z0, w0, 0, [], []
        for i, a in enumerate(self.apply_at):
            while j < a:
                w = self.evolution.step(p, w, j * self.dt_w, self.dt_w)[0]
                j += 1
            zs.append(z)
            thetas.append(w)
            dz, _ = self.f.forward(w, z, **self._context(i))
            if tuple(dz.shape) != tuple(z.shape):
                raise ShapeError(f"`f` must preserve the shape of z {tuple(z.shape)}, got "
                                 f"{tuple(dz.shape)}; pad the convolutions (padding=k//2).")
            z = z + self.dt_z * dz
        return z, ANODEV2Trace(tuple(zs), tuple(thetas), w0, p)

    # -- reverse ---------------------------------------------------------------------------------
    def vjp(self, trace: ANODEV2Trace, z_bar, schedule=None) -> ANODEV2Grads:
        """Gradients w.r.t. ``z0``, ``w0`` and ``p`` of ``<z_bar, z_{n_z}>`` (module notes).

        Parameters
        ----------
        trace : ANODEV2Trace
            From :meth:`forward`.
        z_bar : ndarray
            Cotangent of the block output.
        schedule : checkpoint schedule, optional
            For the weight sweep (default ``StoreAll()``); e.g. ``Revolve(snapshots=2)``.
        """
        check_array("z_bar", z_bar, shape=tuple(trace.zs[0].shape), allow_complex=False,
                    fix="Pass the cotangent of the block output (shape of z0).")
        inject = {}
        for i in reversed(range(self.n_z)):
            _, cache = self.f.forward(trace.thetas[i], trace.zs[i], **self._context(i))
            x_bar, g = self.f.vjp(trace.thetas[i], cache, self.dt_z * z_bar)
            z_bar = z_bar + x_bar
            a = self.apply_at[i]
            inject[a] = g if a not in inject else inject[a] + g
        xp = get_array_module(trace.w0)
        p_bar = xp.zeros_like(trace.p)
        m = self.apply_at[-1]
        if m == 0:
            return ANODEV2Grads(z_bar, inject[0], p_bar, None)
        evo, p, dt = self.evolution, trace.p, self.dt_w
        acc = [p_bar]

        def forward_step(j, w):
            return evo.step(p, w, j * dt, dt)[0]

        def reverse_step(j, w, w_next_bar):
            _, cache = evo.step(p, w, j * dt, dt)
            w_bar, pb = evo.step_vjp(p, cache, w_next_bar)
            acc[0] = acc[0] + pb
            return w_bar + inject[j] if j in inject else w_bar

        w0_bar, stats = run_adjoint(StoreAll() if schedule is None else schedule, m,
                                    state0=trace.w0, forward_step=forward_step,
                                    reverse_step=reverse_step, final_bar=lambda w: inject[m])
        return ANODEV2Grads(z_bar, w0_bar, acc[0], stats)

    def __repr__(self) -> str:
        return (f"ANODEV2Block(n_z={self.n_z}, n_w={self.n_w}, t1={self.t1}, "
                f"apply={self.apply!r}, evolution={self.evolution!r})")
