"""Every code block in the README and the docs is checked, so a snippet cannot drift from the
code (issue 14, point 3).

- Python blocks (Markdown ```` ```python ```` fences, reST ``.. code-block:: python``) run as
  written, in order, in one namespace per file (later blocks may use names defined earlier).
  A file whose blocks use names they do not define (the protocol sketches of
  ``mental_model.rst``) gets them from :data:`PRELUDES`, built from real objects, so the
  documented signatures are exercised. A block that imports a module that is not installed (a
  cluster recipe's ``dask_jobqueue``) is compiled, not run.
- Shell blocks (``bash``) are checked without running anything long: ``python -m experiments
  NAME ...`` lines are parsed by the command line's own parser and their configuration is built
  (so an unknown experiment, a bad ``--set`` key or value fails here); ``sweep`` lines are
  planned (``sweepplan.plan_sweep``, which checks the grid and seeds), ``plot-sweep`` and
  ``seed-table`` lines parsed; ``pip install -e ".[X]"``
  lines name extras that ``pyproject.toml`` declares; ``python benchmarks/F`` and ``bash
  benchmarks/F`` name files that exist.
- Blocks without a language (``protocols.md``'s signature listings) are prose, not code.
- The ``>>>`` examples of the docstrings, which the API reference shows, run under doctest.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("*.rst")),
         *sorted((DOCS / "papers").glob("*.rst"))]
_MD_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", flags=re.S | re.M)
_RST_BLOCK = re.compile(r"^( *)\.\. code-block:: (\w+)\n((?:\1 +.*\n|[ \t]*\n)+)", flags=re.M)


def code_blocks(path: Path, language: str) -> list:
    """The code blocks of ``language`` in ``path``, in order, dedented."""
    text = path.read_text()
    if path.suffix == ".md":
        return [body for lang, body in _MD_FENCE.findall(text) if lang == language]
    blocks = []
    for _, lang, body in _RST_BLOCK.findall(text):
        if lang == language:
            lines = body.split("\n")
            width = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
            blocks.append("\n".join(x[width:] for x in lines).strip("\n") + "\n")
    return blocks


def _missing_imports(code: str) -> list:
    names = re.findall(r"^(?:from|import)\s+([A-Za-z_]\w*)", code, flags=re.M)
    return [n for n in names if importlib.util.find_spec(n) is None]


def _mental_model() -> dict:
    from adjointcore.fields import LayerField
    from adjointcore.layers import Linear, Sequential, Tanh
    layer = Sequential(Linear(3, 4), Tanh(), Linear(4, 3))
    rng = np.random.default_rng(0)
    params, x = layer.init(rng), rng.standard_normal((2, 3))
    return {"layer": layer, "params": params, "x": x, "y_bar": np.ones((2, 3)),
            "field": LayerField(layer), "t": 0.0, "y": x, "dy_bar": np.ones((2, 3))}


#: Names a file's snippets use without defining them (built from real objects).
PRELUDES = {"mental_model.rst": _mental_model}

#: What a file's snippets must print (comments in the snippets say so), with how many times:
#: the guide's ANODEV2 model and its protocol-only layer both pass check_layer.
PRINTS = {"guide.md": [("forward_nfe=80 n_accepted=20", 1), ("True\n", 2)]}


def run_python_blocks(path: Path, blocks: list, namespace: dict) -> str:
    """Run ``blocks`` in ``namespace`` in order; returns what they printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in blocks:
            compiled = compile(code, str(path), "exec")
            if not _missing_imports(code):
                exec(compiled, namespace)
    return out.getvalue()


@pytest.mark.parametrize("path", [p for p in FILES if code_blocks(p, "python")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_snippets_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # a snippet that writes files writes them here
    namespace = PRELUDES.get(path.name, dict)()
    printed = run_python_blocks(path, code_blocks(path, "python"), namespace)
    for text, times in PRINTS.get(path.name, []):
        assert printed.count(text) == times, (path.name, text, printed)
    if path.name == "guide.md":
        assert namespace["report"].passed           # check_layer on the protocol-only layer
        assert type(namespace["report"].figures) is dict


def _shell_commands(block: str) -> list:
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.split("\n"):
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.extend(part.strip() for part in line.split("&&"))
    return commands


def _extras() -> set:
    if sys.version_info >= (3, 11):
        import tomllib
    else:                                      # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def check_shell_command(command: str) -> str:
    """Check one documented shell command without running it; returns what kind it was."""
    from experiments import durable, registry, sweepplan
    from experiments.__main__ import (
        _parser,
        _plot_sweep_parser,
        _seed_table_parser,
        _sweep_parser,
    )
    argv = shlex.split(command)
    if argv[:3] == ["python", "-m", "experiments"]:
        rest = argv[3:]
        if rest and rest[0] == "sweep":
            args = _sweep_parser().parse_args(rest[1:])
            sweepplan.plan_sweep(args.name, args.grid, args.seeds, args.quick, args.set)
            return "sweep"
        if rest and rest[0] in ("plot-sweep", "seed-table"):
            parser = _plot_sweep_parser() if rest[0] == "plot-sweep" else _seed_table_parser()
            parser.parse_args(rest[1:])
            return rest[0]
        args = _parser().parse_args(rest)
        assert args.name in registry.EXPERIMENTS, args.name
        overrides = dict(durable.parse_override(text) for text in args.set)
        registry.CONFIGS[args.name](args.quick, args.seed, overrides)
        return "experiment"
    if argv[:2] == ["pip", "install"] and "-e" in argv:
        spec = argv[argv.index("-e") + 1]
        extras = re.fullmatch(r"\.(?:\[([\w,]+)\])?", spec)
        assert extras, spec
        unknown = set((extras.group(1) or "").split(",")) - _extras() - {""}
        assert not unknown, f"{command}: pyproject.toml declares no extra {sorted(unknown)}"
        return "pip"
    if argv[0] in ("python", "bash") and len(argv) > 1 and argv[1].startswith("benchmarks/"):
        assert (ROOT / argv[1]).is_file(), command
        return "benchmark"
    return "other"


@pytest.mark.parametrize("path", [p for p in FILES if code_blocks(p, "bash")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_snippets_name_real_commands(path):
    kinds = [check_shell_command(c) for b in code_blocks(path, "bash")
             for c in _shell_commands(b)]
    assert kinds


def test_readme_opens_with_the_two_setup_commands():
    first = code_blocks(ROOT / "README.md", "bash")[0].strip().split("\n")
    assert len(first) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert first[1] in ci                      # CI runs the README's test command verbatim
    assert first[0].endswith("python -m experiments digits")


# ----------------------------------------------------------------------------- the checker itself
def test_a_broken_python_snippet_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nfrom adjointcore.layers import Linear\nLinear(2, 2).nope()\n```\n")
    with pytest.raises(AttributeError, match="nope"):
        run_python_blocks(page, code_blocks(page, "python"), {})


def test_rst_blocks_are_found_and_dedented(tmp_path):
    page = tmp_path / "page.rst"
    page.write_text("Intro\n\n.. code-block:: python\n\n   x = 1\n   if x:\n       y = 2\n\n"
                    "Text\n\n   .. code-block:: bash\n\n      pip install -e .\n")
    (block,) = code_blocks(page, "python")
    assert block == "x = 1\nif x:\n    y = 2\n"
    assert code_blocks(page, "bash") == ["pip install -e .\n"]


@pytest.mark.parametrize("command, error, match", [
    ("python -m experiments digts", AssertionError, "digts"),
    ("python -m experiments digits --set widht=3", "ConfigError", "widht"),
    ('pip install -e ".[nonesuch]"', AssertionError, "nonesuch"),
    ("python benchmarks/no_such_script.py", AssertionError, "no_such_script"),
    ("python -m experiments sweep digits --grid width=abc", "SweepError", "must be int"),
])
def test_a_broken_shell_snippet_fails(command, error, match):
    from experiments import durable, sweepplan
    error = {"ConfigError": durable.ConfigError,
             "SweepError": sweepplan.SweepError}.get(error, error)
    with pytest.raises(error, match=match):
        check_shell_command(command)


# ----------------------------------------------------------------------------- docstrings
def _package_modules() -> list:
    """Every module of the three packages and of experiments (the API reference's sources)."""
    import pkgutil
    names = []
    for package in ("adjointcore", "solvers", "nets", "experiments"):
        pkg = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")
                  if not m.name.endswith("__main__")]
    return names


def test_docstring_examples_run():
    """The ``>>>`` examples in the docstrings (shown in the API reference) run and print what
    they say (doctest, NumPy's printing as in the examples)."""
    import doctest
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for name in _package_modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name, extraglobs={"np": np}):
            if test.examples:
                examples += len(test.examples)
                result = runner.run(test, out=lambda text: None)
                assert not result.failed, f"{test.name}: {result.failed} example(s) failed"
    assert examples >= 20                     # the examples exist (five modules hold them)
