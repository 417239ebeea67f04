"""``python tests/experiments/_killable.py ARGS`` = ``python -m experiments ARGS``, printing a
marker line around every atomic write of a run file (``@@ begin ckpt``, ``@@ end final``, ...)
so that the kill tests can aim SIGKILL at checkpoint flushes and at the final write."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import results  # noqa: E402
from experiments.__main__ import main  # noqa: E402

_write = results.atomic_write


def marked_write(path, fill):
    """:func:`experiments.results.atomic_write` between two marker lines."""
    kind = "ckpt" if str(path).endswith(".ckpt.h5") else "final"
    print(f"@@ begin {kind}", flush=True)
    out = _write(path, fill)
    print(f"@@ end {kind}", flush=True)
    return out


results.atomic_write = marked_write

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
