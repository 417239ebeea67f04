"""Name -> experiment entry point and configuration builder.

``EXPERIMENTS[name](quick=False, out="results", seed=0, *, overrides=None, options=None)`` runs
one durable run and returns its exit status; ``CONFIGS[name](quick, seed, overrides)`` returns
the run's full configuration without running it, so a caller (a sweep) can compute its identity
and files first: ``durable.run_paths(out, durable.run_identity(name, CONFIGS[name](...)))``.
"""
from . import digits, gradcheck_report, gradient_accuracy, rda_evolution, theorem1

EXPERIMENTS = {
    "digits": digits.run,
    "gradcheck": gradcheck_report.run,
    "gradient_accuracy": gradient_accuracy.run,
    "rda_evolution": rda_evolution.run,
    "theorem1": theorem1.run,
}

CONFIGS = {
    "digits": digits.make_config,
    "gradcheck": gradcheck_report.make_config,
    "gradient_accuracy": gradient_accuracy.make_config,
    "rda_evolution": rda_evolution.make_config,
    "theorem1": theorem1.make_config,
}

#: Experiments with a training loop that checkpoints and resumes.
CHECKPOINTED = frozenset({"digits", "theorem1"})
