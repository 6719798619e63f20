"""Workbooks run the way Jupyter users run notebooks: opened on their own (nbconvert,
papermill with no parameters) against a built-in example, or given a params YAML."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import evalkit
from evalkit import examples
from evalkit.catalog import CATALOG, WORKBOOK_DIR
from evalkit.errors import ParamsError

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny"
BIN = Path(sys.executable).parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("EVALKIT_CACHE", str(folder))
    return folder


def test_every_workbook_defaults_to_its_example():
    for w in CATALOG:
        nb = nbformat.read(WORKBOOK_DIR / w.file, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", [])
        assert code[0].source.startswith("params_path = None"), w.file
        # after the cell that starts the run notes and the theme, the study is opened
        assert f'evalkit.Study(params_path, workbook="{w.name}")' in code[2].source, w.file
        p = examples.example_params(w.name)
        assert p.mode in w.modes, w.name           # an example the workbook can read
        if p.mode == "claims":
            assert p.data.members == examples.EXAMPLE_MEMBERS


def test_unknown_workbook_is_a_clear_error():
    with pytest.raises(ParamsError, match="unknown workbook 'utilisation'"):
        examples.example_params("utilisation")


def test_example_is_prepared_once_and_reused(cache):
    first = examples.run_params(None, "proportions")
    assert first.parent.parent == cache and (first.parent / "work" / "analysis.duckdb").is_file()
    stamp = (first.parent / "work" / "analysis.duckdb").stat().st_mtime_ns
    assert examples.run_params(None, "proportions") == first
    assert (first.parent / "work" / "analysis.duckdb").stat().st_mtime_ns == stamp
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]   # no partial folder left
    study = evalkit.Study(None, workbook="proportions")
    assert study.params.mode == "summary" and study.output_dir == first.parent
    study.con.close()


def test_run_params_json_is_used_as_it_is(tmp_path):
    f = tmp_path / "params.json"
    assert examples.run_params(f, "utilization") == f


def test_params_yaml_with_files_is_prepared_afresh(cache, tmp_path):
    """A plan's own files may change: their params are prepared again on every open,
    never served stale from the cache."""
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump({"data": {
        "source": "files", "tables": {t: f"data/{t}.csv" for t in
                                      ("members", "enrollment", "encounters", "exposure")},
        "category_map": {"ED": "er", "IP": "inpatient"},
        "group_map": {"T": "self_help", "C": "control"}}}))
    study = evalkit.Study(f, workbook="utilization")
    before = study.sql('SELECT rows_in FROM load_counts WHERE "table" = \'encounters\'').rows_in[0]
    study.con.close()
    lines = (data / "encounters.csv").read_text().splitlines()
    (data / "encounters.csv").write_text("\n".join(lines[:-1]) + "\n")    # one line fewer
    study = evalkit.Study(str(f), workbook="utilization")
    after = study.sql('SELECT rows_in FROM load_counts WHERE "table" = \'encounters\'').rows_in[0]
    study.con.close()
    assert after == before - 1


@pytest.mark.slow
def test_nbconvert_executes_a_workbook_as_it_is(cache, tmp_path):
    """`jupyter nbconvert --to notebook --execute` with no parameters: the workbook runs
    against its built-in example (a 2,000-member synthetic plan, prepared on first use)."""
    done = subprocess.run(
        [str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
         str(WORKBOOK_DIR / "01_data_quality.ipynb"), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(tmp_path / "01_data_quality.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("example-demo-")]
    assert json.loads((folder / "params.json").read_text())["data"]["members"] == 2000
    assert (folder / "parts").is_dir()          # what the workbook recorded went there


@pytest.mark.xdist_group("examples-papermill")
@pytest.mark.slow
def test_papermill_takes_a_params_yaml(cache, tmp_path):
    """papermill WORKBOOK OUT -p params_path plan.yaml, from the folder of the plan."""
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "tiny.yaml").write_text(
        "title: tiny plan\ndata: {source: synthetic, scenario: demo, members: 2000}\n")
    done = subprocess.run(
        [str(BIN / "papermill"), str(WORKBOOK_DIR / "03_utilization.ipynb"), "out.ipynb",
         "-p", "params_path", "params/tiny.yaml", "--log-level", "ERROR"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'params_path = "params/tiny.yaml"' in injected[0].source
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("tiny-")]
    assert json.loads((folder / "params.json").read_text())["data"]["members"] == 2000
