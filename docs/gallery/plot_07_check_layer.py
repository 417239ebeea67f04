"""
Verifying a layer of your own
=============================

Every layer in adjointcore has a hand-written vector-Jacobian product, and so will yours.
:func:`adjointcore.gradcheck.check_layer` checks any object that follows the layer protocol;
it does not need to inherit from adjointcore's classes. It runs directional finite differences,
the dot-product test ``<J u, w> = <u, J^T w>`` and a Taylor remainder test on both the input
and the parameter cotangents (and the complex step for layers marked ``analytic``).

The layer below is ``y = sin(x * a) + b`` with one ``a`` and one ``b`` per feature. A second
version has a typical slip in its parameter cotangent: the batch sum of ``b_bar`` is missing.
"""
import matplotlib.pyplot as plt
import numpy as np

from adjointcore.gradcheck import check_layer, taylor_test


class SineScale:
    """``y = sin(x * a) + b`` on ``(N, d)`` input; ``params = [a, b]``."""

    analytic = True          # complex inputs flow through: the complex-step check applies

    def __init__(self, d):
        self.d = d
        self.n_params = 2 * d

    def init(self, rng, dtype=np.float64):
        return np.concatenate([rng.uniform(0.5, 1.5, self.d), np.zeros(self.d)]).astype(dtype)

    def forward(self, params, x):
        a, b = params[:self.d], params[self.d:]
        return np.sin(x * a) + b, (x, a)            # the cache: what the VJP needs

    def vjp(self, params, cache, y_bar):
        x, a = cache
        g = y_bar * np.cos(x * a)                   # cotangent of the argument of sin
        a_bar = np.sum(g * x, axis=0)
        b_bar = np.sum(y_bar, axis=0)
        return g * a, np.concatenate([a_bar, b_bar])

    def __repr__(self):
        return f"{type(self).__name__}({self.d})"


class BuggySineScale(SineScale):
    def vjp(self, params, cache, y_bar):
        x_bar, params_bar = super().vjp(params, cache, y_bar)
        params_bar[self.d:] = y_bar[0]              # the slip: one sample instead of the sum
        return x_bar, params_bar


rng = np.random.default_rng(0)
x = rng.standard_normal((5, 3))

# %%
# The report of the correct layer: every figure within its float64 tolerance.
good = SineScale(3)
report = check_layer(good, x=x)
print(report)

# %%
# The buggy layer: the input cotangent is still right, the parameter cotangent is not, and the
# report says which check failed and by how much.
bad = BuggySineScale(3)
bad_report = check_layer(bad, x=x)
print("passed:", bad_report.passed)
for line in bad_report.failures:
    print(" -", line)

# %%
# The Taylor test behind ``taylor_min_rate``: for ``J(p) = <w, y(p)>`` and a direction ``dp``,
# the remainder ``|J(p + eps dp) - J(p) - eps <grad, dp>|`` falls as ``eps**2`` when the
# gradient is right and only as ``eps`` when it is wrong.
params = good.init(np.random.default_rng(1))
w = rng.standard_normal((5, 3))
dp = rng.standard_normal(params.shape)


def J(p):
    return float(np.sum(w * good.forward(p, x)[0]))


fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
for layer, label, marker in ((good, "correct VJP", "o-"), (bad, "buggy VJP", "s--")):
    grad = layer.vjp(params, layer.forward(params, x)[1], w)[1]
    result = taylor_test(J, grad, params, dp, n=6, strict=False)
    ax.loglog(result.eps, result.r1, marker, label=f"{label}: rate {result.min_rate:.2f}")
ax.set(xlabel="eps", ylabel="Taylor remainder R1(eps)")
ax.legend()
plt.show()
