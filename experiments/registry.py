"""Name -> experiment entry point ``fn(quick, out, seed) -> exit status``."""
from . import digits, gradcheck_report, rda_evolution

EXPERIMENTS = {
    "digits": digits.run,
    "gradcheck": gradcheck_report.run,
    "rda_evolution": rda_evolution.run,
}
