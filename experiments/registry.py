"""Name -> experiment entry point and configuration builder.

``EXPERIMENTS[name](quick=False, out="results", seed=0, *, overrides=None, options=None)`` runs
one durable run and returns its exit status; ``CONFIGS[name](quick, seed, overrides)`` returns
the run's full configuration without running it, so a caller (a sweep) can compute its identity
and files first: ``durable.run_paths(out, durable.run_identity(name, CONFIGS[name](...)))``.
``OPTIONAL_SETTINGS[name]`` lists the settings that configuration omits at their defaults
(:func:`settings` puts them back).
"""
from . import (
    _thesis,
    anodev2_classify,
    cnf2d,
    digits,
    gradcheck_report,
    gradient_accuracy,
    lm_resnet_classify,
    node_ew_mnist,
    rda_evolution,
    theorem1,
    thesis_efficiency,
    thesis_eval_solvers,
)

EXPERIMENTS = {
    "digits": digits.run,
    "gradcheck": gradcheck_report.run,
    "gradient_accuracy": gradient_accuracy.run,
    "rda_evolution": rda_evolution.run,
    "theorem1": theorem1.run,
    "cnf2d": cnf2d.run,
    "thesis_efficiency": thesis_efficiency.run,
    "thesis_eval_solvers": thesis_eval_solvers.run,
    "node_ew_mnist": node_ew_mnist.run,
    "lm_resnet_classify": lm_resnet_classify.run,
    "anodev2_classify": anodev2_classify.run,
}

CONFIGS = {
    "digits": digits.make_config,
    "gradcheck": gradcheck_report.make_config,
    "gradient_accuracy": gradient_accuracy.make_config,
    "rda_evolution": rda_evolution.make_config,
    "theorem1": theorem1.make_config,
    "cnf2d": cnf2d.make_config,
    "thesis_efficiency": thesis_efficiency.make_config,
    "thesis_eval_solvers": thesis_eval_solvers.make_config,
    "node_ew_mnist": node_ew_mnist.make_config,
    "lm_resnet_classify": lm_resnet_classify.make_config,
    "anodev2_classify": anodev2_classify.make_config,
}

#: Settings an experiment accepts that its configuration holds only when set to something other
#: than their default (so default runs keep their identity): name -> {key: default}.
OPTIONAL_SETTINGS = {
    "thesis_efficiency": {key: default for key, (default, _) in _thesis.ABLATIONS.items()},
}


def settings(name: str, config: dict) -> dict:
    """``config`` with the optional settings of experiment ``name`` it leaves out at their
    defaults (:data:`OPTIONAL_SETTINGS`): every setting the run was made with."""
    return {**OPTIONAL_SETTINGS.get(name, {}), **config}


#: Experiments with a training loop that checkpoints and resumes.
CHECKPOINTED = frozenset({"digits", "theorem1"})
CHECKPOINTED |= {"thesis_efficiency", "thesis_eval_solvers"}
CHECKPOINTED |= {"cnf2d"}
CHECKPOINTED |= {"anodev2_classify"}
CHECKPOINTED |= {"node_ew_mnist", "lm_resnet_classify"}
