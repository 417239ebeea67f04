"""Name -> experiment entry point ``fn(quick, out, seed) -> exit status``."""
from . import gradcheck_report

EXPERIMENTS = {
    "gradcheck": gradcheck_report.run,
}
