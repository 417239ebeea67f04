r"""
ANODEV2: convolution kernels under reaction-diffusion-advection
===============================================================

ANODEV2 couples the activation ODE ``z' = f(z; theta(t))`` with an evolution ODE for the
weights. In its reaction-diffusion-advection (RDA) form every convolution kernel ``w`` follows
the linear operator

.. math::

    \tau \Delta w + v \cdot \nabla w + \rho w

with three trained coefficients per kernel tensor: diffusion ``tau``, velocity ``v`` and
reaction ``rho``. One evolution step solves this linear equation exactly in Fourier space (on a
periodic grid) and then applies a nonlinearity ``sigma`` to the result, the paper's
eq. (12)-(13). :class:`nets.RDAEvolution` is that step; only ``w(0)`` and the coefficients are
parameters. :class:`nets.ANODEV2Block` is the coupled block as a layer with
``params = [w0, p]``.

This example starts a 15x15 kernel as a centred Gaussian, as in the paper's Figure 3, and shows
its weights along the evolution for the linear operator (``sigma`` the identity) and for
``sigma = tanh``, the choice of the paper's networks.
"""
import matplotlib.pyplot as plt
import numpy as np

from adjointcore.layers import Conv2d, Sequential, Tanh
from nets import ANODEV2Block, RDAEvolution

# %%
# The activation field is one padded convolution and a tanh; its only 4-D tensor, the kernel,
# evolves. Ten evolution steps on ``[0, 1]``; two activation steps (the paper's
# configuration 2).
f = Sequential(Conv2d(1, 1, 15, padding=7), Tanh())
grid = np.arange(15) - 7.0
gaussian = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 1.5 ** 2))

rows = {}
for sigma in ("identity", "tanh"):
    evolution = RDAEvolution(f, sigma=sigma)
    block = ANODEV2Block(f, evolution, n_z=2, n_w=10)
    params = block.init(np.random.default_rng(0), tau=0.8, v=(2.0, -1.5), rho=0.3)
    w0, p = block.split(params)
    names = f.views(w0)
    w0 = f.flatten({**names, "0.weight": gaussian.reshape(1, 1, 15, 15)})
    rows[sigma] = [f.views(w)["0.weight"][0, 0] for w in block.weights(w0, p)]

    # The block is a layer: forward maps an image batch, the cache also holds w(T).
    z, cache = block.forward(np.concatenate([w0, p]), np.ones((2, 1, 15, 15)))
    assert np.array_equal(cache.w_final, block.weights(w0, p)[-1])

# %%
# Each row is one kernel at steps 0, 2, ..., 10 (times 0, 0.2, ..., 1). It spreads (diffusion),
# its pattern moves by ``-v t`` (advection: two pixels up, one and a half to the right) and the
# reaction term scales it by ``exp(rho t)``. With ``sigma = tanh``, applied after every step,
# large weights shrink (``tanh(u) < u`` for ``u > 0``), so the peak falls faster.
steps = range(0, 11, 2)
fig, axes = plt.subplots(2, len(steps), figsize=(10, 3.8), layout="constrained")
vmax = max(abs(k).max() for r in rows.values() for k in r)
for i, (sigma, kernels) in enumerate(rows.items()):
    for j, step in enumerate(steps):
        ax = axes[i, j]
        im = ax.imshow(kernels[step], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title(f"t = {step / 10:.1f}")
        if j == 0:
            ax.set_ylabel(f"sigma = {sigma}")
fig.colorbar(im, ax=axes, shrink=0.8, label="kernel weight")
plt.show()
