"""The documentation site (docs/): its API reference covers every public module, a broken gallery
example fails the build, and the whole site builds with warnings as errors.

Skipped when the documentation tools (the ``docs`` extra) are not installed. The full build runs
every gallery example and is marked ``slow``; the other tests take a few seconds.
"""
import importlib
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOC_TOOLS = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme", "myst_parser",
             "matplotlib", "sklearn")
MISSING = [name for name in DOC_TOOLS if importlib.util.find_spec(name) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"documentation tools not installed ({', '.join(MISSING)}); "
                          f"pip install -e '.[docs]'")


def sphinx(source: Path, out: Path, timeout: int) -> subprocess.CompletedProcess:
    """``python -m sphinx -W -b html SOURCE OUT`` in a fresh process (the repository importable)."""
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html",
                           "-d", str(out / ".doctrees"), str(source), str(out)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def public_modules() -> set:
    """``solvers``, ``nets`` and every public module or package directly under adjointcore."""
    import adjointcore
    names = {"solvers", "nets"}
    for info in pkgutil.iter_modules(adjointcore.__path__):
        if not info.name.startswith("_"):
            names.add(f"adjointcore.{info.name}")
    return names


def listed_in_api_index() -> set:
    text = (DOCS / "api" / "index.rst").read_text()
    return set(re.findall(r"^   ((?:adjointcore|solvers|nets)[\w.]*)\s*$", text, flags=re.M))


def test_api_reference_lists_every_public_module():
    missing = public_modules() - listed_in_api_index()
    assert not missing, (f"public modules missing from docs/api/index.rst: {sorted(missing)}; "
                         f"add them to one of its autosummary lists")


def test_every_listed_module_has_all():
    for name in sorted(listed_in_api_index()):
        if name == "adjointcore.gradcheck.strategies" and importlib.util.find_spec(
                "hypothesis") is None:
            continue
        module = importlib.import_module(name)
        assert isinstance(getattr(module, "__all__", None), (list, tuple)), (
            f"{name} has no __all__: the API reference lists exactly the names in it")


def test_gallery_examples_are_named_and_titled():
    scripts = sorted((DOCS / "gallery").glob("*.py"))
    assert scripts, "docs/gallery has no examples"
    for path in scripts:
        assert path.name.startswith("plot_"), f"{path.name}: gallery scripts are plot_*.py"
        head = path.read_text().lstrip()
        assert head.startswith(('"""', 'r"""')), f"{path.name}: starts with its docstring"


def test_broken_gallery_example_fails_the_build(tmp_path):
    """A gallery script that raises makes ``sphinx -W`` fail, naming the script."""
    src = tmp_path / "docs"
    src.mkdir()
    shutil.copy(DOCS / "conf.py", src / "conf.py")
    shutil.copytree(DOCS / "_templates", src / "_templates")
    (src / "gallery").mkdir()
    shutil.copy(DOCS / "gallery" / "GALLERY_HEADER.rst", src / "gallery")
    (src / "gallery" / "plot_broken.py").write_text(
        '"""\nBroken\n======\n\nRaises on purpose.\n"""\n'
        'raise RuntimeError("deliberately broken example")\n')
    (src / "index.rst").write_text("Test\n====\n\n.. toctree::\n\n   auto_examples/index\n")
    result = sphinx(src, tmp_path / "_build", timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "plot_broken.py" in result.stdout + result.stderr


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    """The whole site, gallery included: every public name gets a page."""
    out = tmp_path / "_build"
    result = sphinx(DOCS, out, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    for module in sorted(listed_in_api_index()):
        if module == "adjointcore.gradcheck.strategies" and importlib.util.find_spec(
                "hypothesis") is None:
            continue
        for name in importlib.import_module(module).__all__:
            page = out / "api" / "generated" / f"{module}.{name}.html"
            assert page.exists(), f"no API page for {module}.{name}"
    for script in (DOCS / "gallery").glob("plot_*.py"):
        assert (out / "auto_examples" / f"{script.stem}.html").exists(), script.name
