"""Property: whatever the scenario, size, seed and chunking, the synthetic plan passes its
own data contract (no structural error, no quarantined row) and the cohort keeps members
in both arms."""
import tempfile
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.cohort import build_cohort
from evalkit.data import synthetic
from evalkit.data.load import load_claims, scan_sql

TABLES = ("members", "enrollment", "encounters", "exposure")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=st.sampled_from(sorted(synthetic.SCENARIOS)),
       members=st.integers(min_value=40, max_value=400),
       seed=st.integers(min_value=0, max_value=2**32 - 1),
       chunk=st.sampled_from([None, 17, 100]))
def test_generated_plan_passes_its_own_contract(scenario, members, seed, chunk):
    with tempfile.TemporaryDirectory() as tmp:
        plan = synthetic.generate(Path(tmp) / "plan", scenario=scenario, members=members,
                                  seed=seed, **({"chunk_members": chunk} if chunk else {}))
        con = duckdb.connect()
        report = load_claims(con, {t: scan_sql(str(plan.paths[t]), t) for t in TABLES})
        assert report.balanced()
        assert report.quarantine.empty, report.quarantine.to_dict("records")
        assert dict(zip(report.counts["table"], report.counts["accepted"])) == plan.rows
        attrition = build_cohort(con, 365, 365, True, 0.0)
        assert attrition.iloc[0]["total_members"] == members
