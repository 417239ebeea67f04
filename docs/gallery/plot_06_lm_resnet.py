"""
LM-ResNet: a two-step scheme with learned coefficients
======================================================

A residual network ``u_{n+1} = u_n + f_n(u_n)`` is forward Euler. Lu, Zhong, Li and Dong's
LM-architecture replaces it by a linear two-step scheme with one trainable coefficient per
block,

.. math::

    u_{n+1} = (1 - k_n)\\, u_n + k_n\\, u_{n-1} + f_n(u_n),

initialised with ``k_n ~ U[-0.1, 0]``. The scheme is zero-stable for ``-1 < k_n <= 1``; for
``k_n != 0`` it is consistent with the rescaled equation ``u' = f / (1 + k)`` rather than with
``u' = f``. :class:`nets.LMStack` is such a stack as a layer, with a hand-written VJP that
includes the cotangents of the ``k_n``.

Here an LM stack of eight blocks and a plain :class:`nets.ResNetStack` with the same blocks
classify the digits; the figure shows the training loss and where the ``k_n`` went.
"""
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.losses import softmax_cross_entropy
from adjointcore.optim import Adam
from nets import LMStack, ResNetStack

digits = load_digits()
x, y = digits.data[:1500] / 16.0, digits.target[:1500]


def blocks():
    return [Sequential(Linear(16, 16), Tanh(), Linear(16, 16)) for _ in range(8)]


stacks = {"LM-ResNet": LMStack(blocks()), "ResNet": ResNetStack(blocks())}
curves, k_values = {}, {}
for name, stack in stacks.items():
    model = Sequential(Linear(64, 16), Tanh(), stack, Linear(16, 10))
    rng = np.random.default_rng(0)
    params = model.init(rng)
    opt = Adam(lr=5e-3)
    state = opt.init_state(params)
    losses, k_trace = [], []
    for epoch in range(6):
        perm = rng.permutation(len(y))
        for start in range(0, len(y), 100):
            idx = perm[start:start + 100]
            logits, cache = model.forward(params, x[idx])
            loss, logits_bar = softmax_cross_entropy(logits, y[idx])
            _, grad = model.vjp(params, cache, logits_bar)
            params, state = opt.step(params, grad, state)
            losses.append(float(loss))
            if isinstance(stack, LMStack):
                k_trace.append(np.array(model.views(params)["2.k"]))
    curves[name] = losses
    if k_trace:
        k_values = np.array(k_trace)
    print(f"{name}: final batch loss {np.mean(losses[-15:]):.3f}")

# %%
# ``k`` has one entry per block after the first (the first block is the start-up Euler step);
# it is the view ``"2.k"`` of the model's flat parameters (the stack is layer 2). The same
# training settings, seed and blocks give the LM stack the lower loss here; the coefficients
# move from their small initial values but stay inside the zero-stability interval.
print("learned k:", np.round(k_values[-1], 3))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for name, losses in curves.items():
    axes[0].plot(np.convolve(losses, np.ones(5) / 5, mode="valid"), label=name)
axes[0].set(xlabel="Adam iteration", ylabel="training loss (5-batch mean)", yscale="log")
axes[0].legend()
axes[1].plot(k_values, lw=1)
axes[1].axhspan(-1.0, 1.0, color="C2", alpha=0.08, label="zero-stable: -1 < k <= 1")
axes[1].axhline(0.0, color="0.5", lw=0.8)
axes[1].set(xlabel="Adam iteration", ylabel="$k_n$", title="one line per block n = 1..7")
axes[1].legend(loc="lower left")
plt.show()
