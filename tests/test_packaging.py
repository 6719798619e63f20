"""evalkit as a package: the wheel carries the workbooks and runs from a fresh virtual
environment outside the checkout; declared dependencies are the imported ones; the two
locks agree; the metadata and the API reference are complete."""
import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from evalkit import __version__
from evalkit.catalog import CATALOG, WORKBOOK_DIR

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Declared in pyproject but imported by no module: why each is needed all the same.
DECLARED_NOT_IMPORTED = {
    "ipykernel": "the Jupyter kernel papermill runs the workbooks in",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9_.\-]+", req).group(0))


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names
            and m not in ("evalkit", "__future__")}


def _imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the files of evalkit (modules and workbook code cells) importing it."""
    import nbformat
    by_module: dict[str, set[str]] = {}
    sources = [(str(p.relative_to(ROOT)), p.read_text()) for p in (ROOT / "evalkit").rglob("*.py")]
    for w in CATALOG:
        nb = nbformat.read(WORKBOOK_DIR / w.file, as_version=4)
        sources += [(f"workbooks/{w.file}", "\n".join(c.source for c in nb.cells
                                                        if c.cell_type == "code"))]
    for where, text in sources:
        for m in _third_party(_imports(ast.parse(text))):
            by_module.setdefault(m, set()).add(where)
    dists = packages_distributions()
    out: dict[str, set[str]] = {}
    for module, files in by_module.items():
        assert module in dists, f"{module} (imported in {sorted(files)}) is not installed"
        for d in dists[module]:
            out.setdefault(_norm(d), set()).update(files)
    return out


def test_declared_dependencies_are_the_imported_ones():
    runtime = {_req_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {k: {_req_name(r) for r in v}
              for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    imported = _imported_distributions()
    # every import is declared: at run time, or (the Spark engine only) in the spark extra
    undeclared = {d: sorted(f) for d, f in imported.items() if d not in runtime | extras["spark"]}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    spark_only = {d for d in imported if d in extras["spark"] and d not in runtime}
    assert spark_only == {"pyspark"}
    assert imported["pyspark"] == {"evalkit/engines/spark.py"}
    # every runtime dependency is imported, or listed above with the reason it is needed
    assert runtime - set(imported) == set(DECLARED_NOT_IMPORTED)


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """Package -> (pinned version, hashes) of a lock file written by pip-compile."""
    text = (ROOT / name).read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if m:
            pins[_norm(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_locks_pin_with_hashes_and_agree():
    runtime, dev = _lock("requirements.lock"), _lock("requirements-dev.lock")
    assert len(runtime) > 50 and len(dev) > len(runtime)
    for name, (version, hashes) in {**runtime, **dev}.items():
        assert hashes, f"{name}=={version} has no hash"
    # `make demo` installs neither the test tools, JupyterLab, the docs nor Spark
    for name in ("pytest", "hypothesis", "jupyterlab", "pyspark", "py4j", "mkdocs", "mkdocstrings"):
        assert name not in runtime, name
        assert name in dev, name
    # the development lock is constrained by the runtime lock: same pins, same files
    for name, (version, hashes) in runtime.items():
        assert dev[name][0] == version, f"{name}: {version} vs {dev[name][0]}"
        assert set(dev[name][1]) == set(hashes), name
    # the lock has every declared runtime dependency
    assert {_req_name(r) for r in PYPROJECT["project"]["dependencies"]} <= set(runtime)


def test_package_metadata():
    meta = PYPROJECT["project"]
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    versions = [c.rsplit(":: ", 1)[1] for c in meta["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions == [tested], "claim only the Python versions the tests run on"
    assert meta["requires-python"] == f">={tested}"
    assert (ROOT / "evalkit" / "py.typed").is_file()
    for folder in (ROOT / "evalkit").rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{folder} is not a regular package"


def test_every_module_is_in_the_api_reference():
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: (evalkit[\w.]*)$", pages, flags=re.M))
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in (ROOT / "evalkit").rglob("*.py")
               if p.name not in ("__init__.py", "cli.py")} | {"evalkit"}
    missing = {m for m in modules if m not in documented
               and not any(m.startswith(d + ".") for d in documented if d != "evalkit")}
    assert not missing, f"add to a page of docs/api/: {sorted(missing)}"


@pytest.mark.slow
def test_api_reference_builds(tmp_path):
    """`make docs` builds the reference from the docstrings without a warning."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "models" / "index.html").read_text()
    assert 'id="evalkit.models.count.count_model"' in page


# ---------------------------------------------------------------- the wheel, installed
def _clean_env(**extra) -> dict:
    """The environment without this checkout on the import path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(ROOT)], check=True, env=_clean_env())
    (found,) = out.glob("evalkit-*.whl")
    return found


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel, shared by the tests of this session.

    Its dependencies are those of the environment running the tests, which was
    installed from the locks with their hashes (``make test``): a ``.pth`` line puts that
    environment's site-packages after the venv's own, so the wheel's evalkit (installed
    in the venv) is the one imported, and nothing of the checkout is on the path; its
    ``share/jupyter`` (templates, kernel specs) is linked into the venv.
    Installing the ~80 locked packages again would take minutes and test pip, not
    evalkit; ``pip check`` still proves the locked versions satisfy the wheel's
    requirements."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps",
                    str(wheel)], check=True, env=_clean_env())
    # only now the dependencies: pip never sees (nor touches) the environment they are in
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "zz-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    shared = Path(sys.prefix, "share", "jupyter")   # their data files (nbconvert's templates)
    if shared.is_dir():
        (venv / "share").mkdir(exist_ok=True)
        (venv / "share" / "jupyter").symlink_to(shared, target_is_directory=True)
    done = subprocess.run([python, "-m", "pip", "check"],
                          capture_output=True, text=True, env=_clean_env())
    assert done.returncode == 0, done.stdout      # the lock satisfies the wheel's requirements
    return venv


@pytest.mark.xdist_group("wheel")
def test_wheel_carries_workbooks_examples_and_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for w in CATALOG:
        assert f"evalkit/workbooks/{w.file}" in names
        assert f"evalkit/example_params/{w.example}" in names
    assert "evalkit/py.typed" in names
    assert "evalkit/report/templates/brief.html.j2" in names
    assert "evalkit/data/__init__.py" in names
    meta = zipfile.ZipFile(wheel).read(
        f"evalkit-{__version__}.dist-info/METADATA").decode()
    assert "Requires-Dist: patsy" in meta and "Requires-Dist: beautifulsoup4" in meta
    assert re.search(r"Requires-Dist: pyspark.*extra == \"spark\"", meta)


@pytest.mark.xdist_group("wheel")
@pytest.mark.slow
def test_installed_wheel_runs_a_plan_outside_the_checkout(installed, tmp_path):
    evalkit = str(installed / "bin" / "evalkit")
    env = _clean_env(EVALKIT_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([evalkit, "--version"], cwd=tmp_path, capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"evalkit {__version__}"
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import evalkit.catalog as c; print(c.WORKBOOK_DIR)"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, check=True)
    assert where.stdout.strip().startswith(str(installed))
    plan = tmp_path / "tiny.yaml"
    plan.write_text("title: tiny plan\nseed: 7\ndata: {source: synthetic, scenario: demo, "
                    "members: 1000}\nworkbooks: [data_quality]\n")
    done = subprocess.run([evalkit, "run", str(plan), "--out", "out", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["run"]["status"] == "ok"
    assert [w["workbook"] for w in results["run"]["workbooks"]] == ["data_quality"]
    assert results["tables"]                     # what the data-quality workbook recorded
    assert (tmp_path / "out" / "brief.pdf").is_file()
