"""Name -> experiment entry point ``fn(quick, out, seed) -> exit status``."""
from . import digits, gradcheck_report

EXPERIMENTS = {
    "digits": digits.run,
    "gradcheck": gradcheck_report.run,
}
