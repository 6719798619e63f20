"""The package's layout reads top-down, as docs of the flow say (README, Layout).

The import graph of ``evalkit`` is built from the source (``ast``, module-level and
function-level imports apart) and checked against the layers below: a module imports
only from its own layer or a lower one, no import forms a cycle, imports sit at the top
of modules (deferred only for an optional engine), and functions stay short enough to
read. Each allow-list here names what is still outside a rule; entries that no longer
apply fail the test, so the lists only shrink.
"""
from __future__ import annotations

import ast
import functools
import graphlib
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evalkit"

#: The layers, top to bottom; a module belongs to the layer of its longest listed prefix.
#: A module may import from its own layer and the layers below it, never from above.
#: ``params`` sits above the statistics so that no statistical module can read params:
#: the statistics take frames, formulas and numbers; params are validated against the
#: data contract and the synthetic scenarios, below them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry: run a params file, the command line",
     ("evalkit", "evalkit.cli", "evalkit.runner", "evalkit.status", "evalkit.diff")),
    ("run steps: prepare the database, analyse (the spec and the workbook sections), report",
     ("evalkit.prepare", "evalkit.examples", "evalkit.analysis", "evalkit.report")),
    ("params: the schema and its validation",
     ("evalkit.params",)),
    ("statistics: frames and formulas in, result values out",
     ("evalkit.models", "evalkit.causal", "evalkit.survival", "evalkit.synthesis",
      "evalkit.econ", "evalkit.describe")),
    ("data: sources, contract, quarantine, cohort and member x window SQL, engines",
     ("evalkit.data", "evalkit.engines", "evalkit.cohort", "evalkit.utilization")),
    ("contracts and cross-cutting checks",
     ("evalkit.results", "evalkit.privacy", "evalkit.terms", "evalkit.errors",
      "evalkit.limits", "evalkit.runlock", "evalkit.catalog", "evalkit._version",
      "evalkit.export", "evalkit.provenance", "evalkit.style")),
)

#: Third-party packages a function may import when it is called: optional engines that
#: are not installed with evalkit (``pip install evalkit[spark]``).
OPTIONAL_ENGINES = {"pyspark"}

#: Imports still made inside functions, by module, beside the optional engines; an entry
#: here needs a reason (an import so heavy that a process that never uses it must not pay
#: for it).
DEFERRED_IMPORTS: dict[str, set[str]] = {
    # Study (the statistics stack, ~2 s) on first use: the runner and the command line
    # import the package without analysing anything
    "evalkit": {"evalkit.analysis.study"},
    # each command loads what it runs: --help, status and params-schema answer in about
    # 1 s instead of 5 (the runner alone loads papermill, nbconvert and WeasyPrint)
    "evalkit.cli": {"evalkit.data.synthetic", "evalkit.diff", "evalkit.kernel_server",
                    "evalkit.limits", "evalkit.params", "evalkit.params.load",
                    "evalkit.prepare", "evalkit.report", "evalkit.runner", "evalkit.status"},
    # the brief's WeasyPrint and charts (~1.4 s) once the workbooks execute: the kernels
    # start and the data are prepared that much sooner (runner.preload_report)
    "evalkit.runner": {"evalkit.report"},
    # the output scanner's HTML parser and spreadsheet reader (~0.2 s) only where outputs
    # are scanned: the workbooks' kernels only suppress
    "evalkit.privacy": {"evalkit.privacy.scan"},
    # the Spark engine's SQL translation (sqlglot) only when the run uses Spark
    "evalkit.prepare": {"evalkit.engines.spark"},
}

MAX_FUNCTION_LINES = 150
#: Functions longer than MAX_FUNCTION_LINES, with their length today (a ceiling).
LONG_FUNCTIONS: dict[str, int] = {}


def module_name(path: Path) -> str:
    """``evalkit/analysis/spec.py`` -> ``evalkit.analysis.spec``; a package is its folder."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package (the workbooks' folder holds notebooks, not modules)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> list[str]:
    """The modules an import statement names: evalkit modules by their dotted name
    (``from . import x`` of a submodule names the submodule), others as written."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return subs + ([target] if len(subs) < len(node.names) else [])


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> evalkit modules it imports when loaded, module -> every module it
    imports inside a function), built once per package folder (tests read, never change,
    it)."""
    return _import_graph(PACKAGE)


@functools.cache
def _import_graph(package: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    assert package == PACKAGE
    mods = modules()
    known = set(mods)
    loaded, deferred = {m: set() for m in mods}, {m: set() for m in mods}
    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        in_functions = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        in_functions.add(node)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _targets(node, m, path.name == "__init__.py", known)
                if node in in_functions:
                    deferred[m].update(names)
                else:
                    loaded[m].update(t for t in names if t in known and t != m)
    return loaded, deferred


def layer_of(module: str) -> int:
    """Index of the module's layer in LAYERS (0 is the top)."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (
                    best is None or len(p) > len(best[1])):
                best = (i, p)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layout.py")
    return best[0]


def function_lengths() -> dict[str, int]:
    """Qualified name -> lines from ``def`` to the function's last line, its docstring
    left out (a long explanation of the parameters is welcome; long code is not)."""
    out = {}
    for m, path in modules().items():
        def walk(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}.{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        body = child.body
                        doc = (body[0].end_lineno - body[0].lineno + 1
                               if body and isinstance(body[0], ast.Expr)
                               and isinstance(getattr(body[0], "value", None), ast.Constant)
                               and isinstance(body[0].value.value, str) else 0)
                        out[name] = child.end_lineno - child.lineno + 1 - doc
                    walk(child, name)
        walk(ast.parse(path.read_text()), m)
    return out


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """Import level of each module: 0 imports no evalkit module, else 1 + its deepest
    import's level."""
    out: dict[str, int] = {}
    for m in graphlib.TopologicalSorter(graph).static_order():
        out[m] = 1 + max((out[t] for t in graph[m]), default=-1)
    return out


# ------------------------------------------------------------------------------- tests
def test_no_import_cycle():
    loaded, _ = import_graph()
    try:
        graphlib.TopologicalSorter(loaded).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_every_import_points_down():
    loaded, _ = import_graph()
    upward = [f"{m} ({LAYERS[layer_of(m)][0].split(':')[0]}) imports {t} "
              f"({LAYERS[layer_of(t)][0].split(':')[0]})"
              for m, targets in sorted(loaded.items()) for t in sorted(targets)
              if layer_of(t) < layer_of(m)]
    assert upward == [], "imports from a higher layer:\n" + "\n".join(upward)


def test_statistics_never_see_params_or_the_analysis():
    """The statistical packages take frames and formulas: nothing they load, directly or
    through another module, reads params or the analysis spec."""
    loaded, _ = import_graph()
    statistics = LAYERS[3][1]

    def reach(m, seen):
        for t in loaded[m] - seen:
            seen.add(t)
            reach(t, seen)
        return seen

    seen = {m: reach(m, set()) for m in loaded if m.startswith(statistics)}
    bad = {m: sorted(t for t in r if t.startswith(("evalkit.params", "evalkit.analysis")))
           for m, r in seen.items()}
    assert not any(bad.values()), bad


def test_imports_at_the_top_of_modules():
    _, deferred = import_graph()
    found = {m: {t for t in ts if t.split(".")[0] not in OPTIONAL_ENGINES}
             for m, ts in deferred.items()}
    found = {m: ts for m, ts in found.items() if ts}
    unlisted = {m: sorted(ts - DEFERRED_IMPORTS.get(m, set())) for m, ts in found.items()}
    unlisted = {m: ts for m, ts in unlisted.items() if ts}
    assert not unlisted, f"imports inside functions (move them to the module's top): {unlisted}"
    stale = {m: sorted(ts - found.get(m, set())) for m, ts in DEFERRED_IMPORTS.items()}
    stale = {m: ts for m, ts in stale.items() if ts}
    assert not stale, f"no longer imported inside a function: remove from DEFERRED_IMPORTS: {stale}"


def test_functions_are_short():
    lengths = function_lengths()
    long = {f: n for f, n in lengths.items()
            if n > max(MAX_FUNCTION_LINES, LONG_FUNCTIONS.get(f, 0))}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"
    stale = {f: lengths.get(f) for f in LONG_FUNCTIONS
             if lengths.get(f, 0) <= MAX_FUNCTION_LINES}
    assert not stale, f"short now or gone: remove from LONG_FUNCTIONS: {stale}"
    grown = {f: (lengths[f], n) for f, n in LONG_FUNCTIONS.items() if lengths.get(f, 0) > n}
    assert not grown, grown


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    """The graph sees a cycle, an upward import and an import inside a function."""
    pkg = tmp_path / "evalkit"
    (pkg / "analysis").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "analysis" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from .analysis import spec\n")
    (pkg / "analysis" / "spec.py").write_text(
        "from ..errors import x\n\ndef f():\n    import nbformat\n    from pyspark import sql\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    loaded, deferred = import_graph()
    assert loaded["evalkit.errors"] == {"evalkit.analysis.spec"}
    assert layer_of("evalkit.analysis.spec") < layer_of("evalkit.errors")
    assert deferred["evalkit.analysis.spec"] == {"nbformat", "pyspark"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(loaded).prepare()


def main() -> None:
    """``python tests/test_layout.py``: the numbers the layout is measured by."""
    loaded, deferred = import_graph()
    mods = modules()
    sizes = {m: len(p.read_text().splitlines()) for m, p in mods.items()}
    lengths = function_lengths()
    lv = levels(loaded)
    big = max(sizes, key=sizes.get)
    longest = max(lengths, key=lengths.get)
    print(f"modules: {len(mods)}; import levels: {max(lv.values()) + 1}")
    print(f"largest file: {mods[big].relative_to(PACKAGE.parent)} ({sizes[big]} lines)")
    print(f"longest function: {longest} ({lengths[longest]} lines)")
    print(f"imports inside functions: {sum(len(v) for v in deferred.values())}")


if __name__ == "__main__":
    main()
