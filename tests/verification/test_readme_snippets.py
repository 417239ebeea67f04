"""The README's Python snippets run as written, in order, in one namespace (so later snippets
may use names defined earlier), and print what the README says they print."""
import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[2] / "README.md"


class _ReadmeLayer:
    """``my_layer`` of the "Verifying your own layers" snippet: y = x * w, README protocol."""

    def forward(self, params, x):
        return x * params, (x,)

    def vjp(self, params, cache, y_bar):
        (x,) = cache
        return y_bar * params, np.sum(y_bar * x, axis=0)


def _snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _missing_imports(code):
    """Top-level modules a snippet imports that are not installed (cluster recipes such as
    dask-jobqueue's): such a snippet is compiled, not run."""
    import importlib.util
    names = re.findall(r"^(?:from|import)\s+([A-Za-z_]\w*)", code, flags=re.M)
    return [n for n in names if importlib.util.find_spec(n) is None]


def test_readme_snippets_run():
    snippets = _snippets()
    assert len(snippets) >= 4
    namespace = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in snippets:
            if "my_layer" in code:
                namespace["my_layer"] = _ReadmeLayer()
                namespace["params"] = np.ones(namespace["x"].shape[1])
            compiled = compile(code, str(README), "exec")
            if not _missing_imports(code):
                exec(compiled, namespace)
    printed = out.getvalue()
    assert "forward_nfe=80 n_accepted=20" in printed       # the NODE-EW block's comment
    assert printed.count("True") >= 1                        # ANODEV2 in Sequential passes
    assert namespace["report"].passed
