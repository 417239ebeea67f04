"""
Discrete against continuous adjoints
====================================

Three ways to get the gradient of a loss on a neural ODE's solution, all through
:func:`adjointcore.sensitivity.trajectory_gradient`:

- ``"discrete"`` (discretize-then-optimize): the exact gradient of the adaptive Dopri5 solution
  on its accepted, frozen grid.
- ``"interpolated"`` (optimize-then-discretize): the adjoint ODE solved backwards, reading the
  forward state from the forward solve's dense output.
- ``"backsolve"`` (optimize-then-discretize, Chen et al.): the adjoint ODE solved backwards
  together with the state itself, reconstructed backwards from ``y(T)``.

Each is compared with a reference, the discrete adjoint of 2000 RK4 steps (its error is
about ``h^4``, far below everything measured here), at tolerances from 1e-3 to 1e-10.
"""
import matplotlib.pyplot as plt
import numpy as np

from adjointcore.fields import LayerField
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.sensitivity import trajectory_gradient

# %%
# A small MLP field on a 2-D state, a batch of 16 initial states, and the loss
# ``<y_bar, y(T)>``: its gradient with respect to the parameters is what we compare.
layer = Sequential(Linear(2, 32), Tanh(), Linear(32, 2))
field = LayerField(layer)
rng = np.random.default_rng(0)
params = 1.5 * layer.init(rng)
y0 = rng.standard_normal((16, 2))
t_obs = np.array([2.0])
y_bars = rng.standard_normal((1, 16, 2))

reference = trajectory_gradient(field, y0, params, t_obs, y_bars, t0=0.0, gradient="discrete",
                                method="rk4", steps=2000).params_bar

# %%
# Sweep the tolerance. ``out.stats`` is the :class:`solvers.Work` record of the whole gradient;
# the cost counted here is field evaluations plus field VJPs (``nfe + vjps``): the discrete
# adjoint runs one VJP per forward stage, a continuous adjoint one evaluation and one VJP per
# stage of its backward solve.
rtols = np.logspace(-3, -10, 8)
gradients = ("discrete", "interpolated", "backsolve")
error = {g: [] for g in gradients}
nfe = {g: [] for g in gradients}
for rtol in rtols:
    for g in gradients:
        out = trajectory_gradient(field, y0, params, t_obs, y_bars, t0=0.0, gradient=g,
                                  method="dopri5", rtol=rtol, atol=1e-3 * rtol)
        err = np.linalg.norm(out.params_bar - reference) / np.linalg.norm(reference)
        error[g].append(err)
        nfe[g].append(out.stats.nfe + out.stats.vjps)
for g in gradients:
    print(f"{g:>12}: relative error at rtol 1e-10 = {error[g][-1]:.1e}, "
          f"evaluations + VJPs = {nfe[g][-1]}")

# %%
# The discrete adjoint differentiates the computation that was run: its gradient is exact for
# the computed solution, so its error is inherited from the forward solve alone, and it needs
# no backward solve, only one VJP per stage it already evaluated. The continuous adjoints
# approximate the gradient of the exact solution by a second, independent solve; their error
# also follows the tolerance, at about twice the cost here. (Backsolve is accurate on this
# smooth, non-stiff field; it can fail where the backward reconstruction of ``y`` is
# unstable.)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for g, marker in zip(gradients, "osd"):
    axes[0].loglog(rtols, error[g], marker + "-", label=g)
    axes[1].loglog(nfe[g], error[g], marker + "-", label=g)
axes[0].set(xlabel="rtol (atol = 1e-3 rtol)", ylabel="relative gradient error")
axes[0].invert_xaxis()
axes[1].set(xlabel="field evaluations + VJPs",
            ylabel="relative gradient error")
axes[0].legend()
plt.show()
