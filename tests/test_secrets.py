"""Secrets given as params (an encrypted database's key) are used to read the source and
appear in no output of the run: not params.json, results.json, the executed notebooks,
their HTML, nor an error message."""
from pathlib import Path

import duckdb
import pytest
import yaml

from evalkit import params as _params
from evalkit import runner
from evalkit.data import synthetic
from evalkit.errors import DataValidationError, ParamsError

KEY = "k3y-Of-The-Plan-7781"


@pytest.fixture(scope="module")
def encrypted_plan(tmp_path_factory):
    """A synthetic plan's four tables in an encrypted DuckDB database file."""
    tmp = tmp_path_factory.mktemp("enc")
    plan = synthetic.generate(tmp / "parquet", members=800, seed=11)
    db = tmp / "plan.duckdb"
    con = duckdb.connect()
    # Writing an encrypted file without the httpfs extension needs DuckDB's fallback
    # cipher; reading it (what evalkit does) works either way.
    con.execute("SET force_mbedtls_unsafe = 'true'")
    con.execute(f"ATTACH '{db}' AS plan (ENCRYPTION_KEY '{KEY}')")
    for table in ("members", "enrollment", "encounters", "exposure"):
        path = plan.paths[table]
        con.execute(f"CREATE TABLE plan.{table} AS SELECT * FROM read_parquet('{path}')")
    con.execute("DETACH plan")
    con.close()
    return db


def _params_file(tmp_path, db, key_ref="${env:EVALKIT_TEST_DB_KEY}"):
    f = tmp_path / "enc.yaml"
    f.write_text(yaml.safe_dump({"title": "encrypted source",
                                 "data": {"source": "duckdb", "database": str(db),
                                          "encryption_key": key_ref},
                                 "workbooks": ["data_quality"]}))
    return f


def _files_holding(folder: Path, text: str) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and text.encode() in p.read_bytes()]


def test_env_reference_is_expanded_and_a_missing_variable_is_named(monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_DB_KEY", KEY)
    raw = {"data": {"source": "duckdb", "database": "x.duckdb",
                    "encryption_key": "${env:EVALKIT_TEST_DB_KEY}"}}
    assert _params.validate(_params.expand_env(raw)).data.encryption_key == KEY
    monkeypatch.delenv("EVALKIT_TEST_DB_KEY")
    with pytest.raises(ParamsError, match=r"data.encryption_key: environment variable\(s\) "
                                          "EVALKIT_TEST_DB_KEY not set"):
        _params.expand_env(raw)


def test_encrypted_source_runs_and_the_key_reaches_no_output(encrypted_plan, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("EVALKIT_TEST_DB_KEY", KEY)
    res = runner.run(_params_file(tmp_path, encrypted_plan), out=tmp_path / "out", quiet=True)
    assert res.status == "ok"
    status = runner.read_status(res.output_dir)
    assert status["params"]["data"]["encryption_key"] == "***"
    assert status["params_hash"] == _params.validate(status["params"]).digest()
    # the key is nowhere: params.json, results.json, notebook, HTML, the analysis database
    assert _files_holding(res.output_dir, KEY) == []
    assert (res.output_dir / "01_data_quality.html").is_file()


def test_key_written_in_the_params_file_is_still_kept_out(encrypted_plan, tmp_path):
    res = runner.run(_params_file(tmp_path, encrypted_plan, key_ref=KEY), out=tmp_path / "out",
                     quiet=True)
    assert res.status == "ok" and _files_holding(res.output_dir, KEY) == []


def test_wrong_or_missing_key_is_a_clear_error_without_the_key(encrypted_plan, tmp_path):
    wrong = "not-the-right-key-123"
    with pytest.raises(DataValidationError, match="encryption key right") as err:
        runner.run(_params_file(tmp_path, encrypted_plan, key_ref=wrong), out=tmp_path / "a",
                   quiet=True)
    assert wrong not in str(err.value)
    assert runner.read_status(tmp_path / "a")["status"] == "failed"
    assert _files_holding(tmp_path / "a", wrong) == []
    with pytest.raises(DataValidationError, match="give data.encryption_key"):
        runner.run(_params_file(tmp_path, encrypted_plan, key_ref=None), out=tmp_path / "b",
                   quiet=True)
