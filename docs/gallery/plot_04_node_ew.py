"""
NODE-EW: weights that evolve by their own ODE
=============================================

He, Xie and Lin's NODE-EW lets the weights of the vector field change with depth: the state
``x`` and the weights ``theta`` solve the coupled system

.. math::

    x'(t) = f(x, t, \\theta(t)), \\qquad \\theta'(t) = g(\\theta, t, \\theta_1),

with trained initial weights ``theta0`` and trained parameters ``theta1`` of ``g``.
:class:`nets.CoupledField` is that system as a vector field; in an :class:`nets.ODEBlock` it
maps ``x(0)`` to ``x(T)`` with parameters ``[theta0, theta1]``, and its gradient comes from any
of the block's gradient methods. Here it fits a small 2-D map next to a neural ODE whose
weights are constant (``g = None``), with the same ``f`` and the same solver.
"""
import matplotlib.pyplot as plt
import numpy as np

from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.losses import mse
from adjointcore.optim import Adam
from nets import CoupledField, ODEBlock
from solvers import solve

rng = np.random.default_rng(0)
x = rng.uniform(-1.5, 1.5, (64, 2))
target = np.stack([x[:, 0] + 0.6 * np.sin(2.0 * x[:, 1]),
                   x[:, 1] - 0.6 * np.tanh(2.0 * x[:, 0])], axis=1)

# %%
# Both models integrate 10 RK4 steps on ``[0, 1]`` and train by the discrete adjoint.
f = Sequential(Linear(2, 8), Tanh(), Linear(8, 2))
g = Sequential(Linear(f.n_params, f.n_params), Tanh())
coupled = CoupledField(f, g, x_shape=x.shape)
models = {
    "NODE-EW (evolving weights)": ODEBlock(coupled, method="rk4", steps=10),
    "neural ODE (constant weights)": ODEBlock(CoupledField(f, None, x_shape=x.shape),
                                              method="rk4", steps=10),
}

curves, trained = {}, {}
for name, block in models.items():
    params = block.init(np.random.default_rng(1))
    opt = Adam(lr=1e-2)
    state = opt.init_state(params)
    losses = []
    for it in range(200):
        y, cache = block.forward(params, x)
        loss, y_bar = mse(y, target)
        _, grad = block.vjp(params, cache, y_bar)
        params, state = opt.step(params, grad, state)
        losses.append(float(loss))
    curves[name], trained[name] = losses, params
    print(f"{name}: {block.n_params} parameters, final loss {losses[-1]:.2e}")

# %%
# NODE-EW reaches a lower loss in the same number of iterations, but it also has far more
# parameters (``g`` is a dense map on the 42 weights of ``f``), so this illustrates the
# construction rather than settling the comparison.
#
# The weights of the trained NODE-EW along the depth ``t``: solve the coupled system with its
# parameters and read ``theta(t)`` from the state (``[x.ravel(), theta]``, :meth:`unpack`).
params = trained["NODE-EW (evolving weights)"]
theta0, theta1 = params[:coupled.n_state_params], params[coupled.n_state_params:]
t_eval = np.linspace(0.0, 1.0, 11)
sol = solve(coupled, coupled.initial_state(x, theta0), (0.0, 1.0), params=theta1,
            method="rk4", steps=10, t_eval=t_eval)
thetas = np.array([coupled.unpack(y)[1] for y in sol.ys])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for name, losses in curves.items():
    axes[0].semilogy(losses, label=name)
axes[0].set(xlabel="Adam iteration", ylabel="mean squared error")
axes[0].legend()
axes[1].plot(t_eval, thetas[:, :12], "-")
axes[1].set(xlabel="t (depth)", ylabel=r"$\theta_i(t)$",
            title="first 12 weights of f along the depth")
plt.show()
