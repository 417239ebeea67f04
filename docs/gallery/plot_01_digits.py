"""
A neural ODE classifier on the digits
=====================================

A linear stem, one neural-ODE block and a linear classifier, trained on scikit-learn's bundled
8x8 digits. The block integrates an MLP vector field with four RK4 steps; its gradient is the
discrete adjoint (backpropagation through the solver) under a Revolve checkpoint schedule with
two snapshots. Every call to the block reports its work, so the figure can show the function
evaluations per epoch next to the loss and the accuracy.

``python -m experiments digits`` is the full version of this script: a durable run, larger
widths, 15 epochs, results written to HDF5.
"""
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from adjointcore.checkpointing import Revolve
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.losses import softmax_cross_entropy
from adjointcore.optim import Adam
from nets import ODEBlock

# %%
# Data: 1797 images, scaled to [0, 1]; the last 297 are the test set.
digits = load_digits()
x_all, y_all = digits.data / 16.0, digits.target
x_train, y_train = x_all[:1500], y_all[:1500]
x_test, y_test = x_all[1500:], y_all[1500:]

# %%
# The model is one :class:`~adjointcore.layers.Sequential` with one flat parameter vector.
# ``monitor`` receives the :class:`solvers.Work` record of every forward and backward phase.
work_log = []
field = Sequential(Linear(16, 32), Tanh(), Linear(32, 16))
block = ODEBlock(field, t_span=(0.0, 1.0), method="rk4", steps=4, gradient="discrete",
                 schedule=Revolve(snapshots=2),
                 monitor=lambda phase, work: work_log.append((phase, work)))
model = Sequential(Linear(64, 16), Tanh(), block, Linear(16, 10))

rng = np.random.default_rng(0)
params = model.init(rng)
opt = Adam(lr=1e-2)
state = opt.init_state(params)

# %%
# Training: five epochs of mini-batches of 100.
history = {"loss": [], "test_acc": [], "nfe_forward": [], "nfe_backward": []}
for epoch in range(5):
    perm = rng.permutation(len(y_train))
    losses = []
    work_log.clear()
    for start in range(0, len(perm), 100):
        idx = perm[start:start + 100]
        logits, cache = model.forward(params, x_train[idx])
        loss, logits_bar = softmax_cross_entropy(logits, y_train[idx])
        _, grad = model.vjp(params, cache, logits_bar)
        params, state = opt.step(params, grad, state)
        losses.append(float(loss))
    history["nfe_forward"].append(sum(w.forward_nfe for p, w in work_log if p == "forward"))
    history["nfe_backward"].append(sum(w.backward_nfe for p, w in work_log if p != "forward"))
    logits, _ = model.forward(params, x_test)
    history["loss"].append(np.mean(losses))
    history["test_acc"].append(np.mean(np.argmax(logits, axis=1) == y_test))
    print(f"epoch {epoch + 1}: loss {history['loss'][-1]:.3f}  "
          f"test accuracy {history['test_acc'][-1]:.3f}")

# %%
# Four RK4 steps cost 16 field evaluations per forward pass. With two snapshots for four steps,
# Revolve recomputes some steps in the backward pass: those are the backward evaluations.
epochs = np.arange(1, 6)
fig, axes = plt.subplots(1, 3, figsize=(10, 3), layout="constrained")
axes[0].plot(epochs, history["loss"], "o-")
axes[0].set(xlabel="epoch", ylabel="training loss (nats)")
axes[1].plot(epochs, history["test_acc"], "o-", color="C2")
axes[1].set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
axes[2].plot(epochs, history["nfe_forward"], "o-", label="forward")
axes[2].plot(epochs, history["nfe_backward"], "s--", label="backward (recomputed)")
axes[2].set(xlabel="epoch", ylabel="field evaluations per epoch")
axes[2].legend()
for ax in axes:
    ax.set_xticks(epochs)
plt.show()
