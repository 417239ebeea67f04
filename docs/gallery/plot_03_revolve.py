"""
Checkpointing: memory against recomputation
===========================================

A discrete adjoint walks the solver's steps backwards and needs each step's input state. Storing
all ``n`` states costs memory proportional to ``n``; a checkpoint schedule stores a few and
recomputes the others from the nearest stored one. The schedules are pure planners, so
:func:`adjointcore.checkpointing.replay` can count what each would do for ``n = 1000`` steps
without touching an array: the largest number of states held at once, and the forward steps
run again.

- :class:`~adjointcore.checkpointing.StoreAll`: every state, no recomputation.
- :class:`~adjointcore.checkpointing.Uniform`: every ``k``-th state, each segment recomputed
  once (its states then held while it is reversed).
- :class:`~adjointcore.checkpointing.Revolve`: Griewank and Walther's binomial schedule, the
  fewest recomputations for ``s`` snapshots when ``n`` is known in advance.
- :class:`~adjointcore.checkpointing.Online`: for a number of steps not known in advance (an
  adaptive solve).
"""
import matplotlib.pyplot as plt

from adjointcore.checkpointing import (Online, Revolve, StoreAll, Uniform,
                                       optimal_forward_steps, replay)

n = 1000

# %%
# Count. Every schedule returns a :class:`solvers.Work` record with the checkpoint counters.
revolve_s = [2, 3, 4, 5, 6, 8, 10, 14, 20, 30, 50, 80, 120]
revolve = [replay(Revolve(snapshots=s), n) for s in revolve_s]
online = [replay(Online(snapshots=s), n) for s in revolve_s[2:]]
uniform = [replay(Uniform(every=k), n) for k in (5, 10, 20, 32, 50, 100, 200, 500)]
store_all = replay(StoreAll(), n)

# %%
# Revolve reaches the published binomial optimum exactly: its forward steps, counted as
# Griewank and Walther count them (``taped_steps``), equal ``optimal_forward_steps(n, s)``.
for s, w in zip(revolve_s, revolve):
    assert w.taped_steps == optimal_forward_steps(n, s)
print("Revolve(10), n = 1000:", revolve[revolve_s.index(10)].summary())


def points(works):
    return ([w.max_live_snapshots for w in works], [w.recomputed_steps / n for w in works])


fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
ax.loglog(*points(revolve), "o-", label="Revolve(s)")
ax.loglog(*points(online), "^-", label="Online(s)")
ax.loglog(*points(uniform), "s", label="Uniform(every=k), k = 5 ... 500")
ax.axvline(store_all.max_live_snapshots, color="0.5", lw=1,
           label=f"StoreAll: {store_all.max_live_snapshots} states, no recomputation")
ax.set(xlabel="largest number of states held at once",
       ylabel="recomputed forward steps / n", title=f"n = {n} steps")
ax.legend(loc="upper right", fontsize=9)
plt.show()
