"""The synthesis workbook end to end when studies are pooled: the 13 BCG trials as summary
params (published per-arm counts), run through evalkit.runner.run.

Reference: tests/reference/expected/meta_bcg.json from tests/reference/r/meta_bcg.R
(R 4.2.2, metafor 3.8-1): rma(yi, vi, method = "REML", control = list(threshold = 1e-12))
and method = "DL" / "FE" on escalc(measure = "RR", ...) of tests/reference/data/bcg.csv.
"""
import json

import numpy as np
import pytest
import yaml
from conftest import reference_data, reference_json

from evalkit import runner


@pytest.fixture(scope="module")
def bcg_run(tmp_path_factory):
    bcg = reference_data("bcg")
    studies = [{"name": f"{r.author} {r.year}", "outcome": "tuberculosis", "measure": "RR",
                "treated": {"n": int(r.tpos + r.tneg), "events": int(r.tpos)},
                "control": {"n": int(r.cpos + r.cneg), "events": int(r.cpos)}}
               for r in bcg.itertuples()]
    tmp = tmp_path_factory.mktemp("bcg")
    f = tmp / "bcg.yaml"
    f.write_text(yaml.safe_dump({"title": "BCG trials", "mode": "summary",
                                 "summary": {"studies": studies}}))
    run = runner.run(f, out=tmp / "out", quiet=True)
    return run, json.loads(run.results_path.read_text())


def test_pooled_records_match_rma(bcg_run):
    run, res = bcg_run
    ref = reference_json("meta_bcg")
    assert res["run"]["status"] == "ok"
    assert [w["workbook"] for w in res["run"]["workbooks"]] == ["synthesis"]
    pooled = {e["method"].split(",")[0]: e for e in res["estimates"] if e.get("level") == "pooled"}
    for name, block in (("random effects (REML)", "REML_tight"),
                        ("random effects (DerSimonian-Laird)", "DL"), ("fixed effect", "FE")):
        e, r = pooled[name], ref[block]
        np.testing.assert_allclose([e["estimate"], e["ci_low"], e["ci_high"], e["tau2"], e["i2"]],
                                   [r["risk_ratio"], r["rr_ci_lb"], r["rr_ci_ub"], r["tau2"], r["I2"]],
                                   rtol=1e-9)
        assert e["k"] == 13 and e["scale"] == "ratio"
    assert pooled["random effects (REML)"]["chosen"] is True
    studies = [e for e in res["estimates"] if e.get("level") == "study"]
    np.testing.assert_allclose(np.log([e["estimate"] for e in studies]), ref["yi"], rtol=1e-12)
    assert not any(e.get("level") == "projection" for e in res["estimates"])
    nb = (run.output_dir / "09_synthesis.ipynb").read_text()
    assert nb.count("image/png") >= 2                  # study effects and the forest plot
    assert "no projection" in nb and "Nothing had to be assumed" in nb
