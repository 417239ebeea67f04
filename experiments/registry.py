"""Name -> experiment entry point ``fn(quick, out, seed) -> exit status``."""
from . import digits, gradcheck_report, gradient_accuracy, rda_evolution, theorem1

EXPERIMENTS = {
    "digits": digits.run,
    "gradcheck": gradcheck_report.run,
    "gradient_accuracy": gradient_accuracy.run,
    "rda_evolution": rda_evolution.run,
    "theorem1": theorem1.run,
}
