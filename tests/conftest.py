import json
from pathlib import Path

import pandas as pd
import pytest
from shared_runs import SharedRuns, confounded_plan
from xdist.scheduler import LoadGroupScheduling

REFERENCE = Path(__file__).parent / "reference"


def reference_json(topic: str) -> dict:
    """Expected values computed by R (see tests/reference/README.md for provenance)."""
    return json.loads((REFERENCE / "expected" / f"{topic}.json").read_text())


def reference_data(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "data" / f"{name}.csv")


#: Groups of tests that take the longest, roughly longest first (seconds measured in a full
#: run on a busy 2-core machine, about three times those of a quiet one); the claims run
#: that many groups read comes first, beside the test that makes a second run of it.
#: `make test` hands whole groups to the two pytest-xdist workers (``--dist loadgroup``) in
#: this order, so the long ones start early and neither worker is left with one of them at
#: the end. A test is in the group its ``xdist_group`` mark names, else in its file's; the
#: runs of tests/shared_runs.py are made by the first worker that asks for them.
LONGEST_FIRST = (
    "run-demo",              # the shared claims run and the tests that read only it
    "runner-same-params",    # a second run of the claims plan (70 s)
    "wheel",                 # build, install and run the wheel (220 s)
    "test_spark.py", "test_spark_cluster.py",   # a Spark session, a Spark cluster (110 s each)
    "public-run",            # a public run from the command line, and one refused (90 s)
    "runner-small-cells",    # three runs of the tiny plan (80 s)
    "test_faults.py", "test_cli_extras.py", "test_runner.py",   # (85-100 s each)
    "sources-1", "sources-2",   # three and four data sources run end to end (60 s each)
    "test_layout.py", "test_bad_inputs.py", "faults-killed", "test_readmission.py",
    "bad-inputs-runs", "test_cohort_balance_workbook.py", "examples-papermill",
    "test_valuation_workbook.py", "test_secrets.py", "test_examples.py",   # (50-70 s each)
    "test_kernel_server.py", "test_bootstrap.py", "test_bootstrap_count.py",
    "test_utilization.py", "test_load.py",              # (30-60 s each)
    "run-healthwise_er", "run-humphreys_moos", "run-nhefs_ipw", "run-support_group_survival",
    "run-group_types", "run-clearinghouse_brief", "run-parent_survey", "run-er_power",
    "test_brief.py", "test_packaging.py", "test_safety.py",
)
GROUPS_FILE = "test-groups-{}.json"


def _group(item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return mark.args[0] if mark else item.path.name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker: the groups of :data:`LONGEST_FIRST` first, and each
    test's group written for :class:`GroupScheduling` (in one process the files keep their
    order)."""
    if not hasattr(config, "workerinput"):
        return
    rank = {g: i for i, g in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))
    folder = Path(config.option.basetemp).parent          # the controller's (pytest-xdist)
    (folder / GROUPS_FILE.format(config.workerinput["workerid"])).write_text(
        json.dumps({item.nodeid: _group(item) for item in items}))


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` by the groups the workers wrote (:class:`GroupScheduling`)."""
    if config.getoption("dist") == "loadgroup":
        return GroupScheduling(config, log)
    return None


class GroupScheduling(LoadGroupScheduling):
    """pytest-xdist's ``loadgroup`` (each group whole in one worker, the groups handed out
    in collection order), with each test's group read from what the workers wrote at
    collection rather than from a suffix of its node id, which pytest-xdist 3.8 cannot add
    under pytest 9.2 (pytest-xdist issue 1386)."""

    _groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            folder = self.config._tmp_path_factory.getbasetemp()
            self._groups = {}
            for f in sorted(folder.glob(GROUPS_FILE.format("*"))):
                self._groups.update(json.loads(f.read_text()))
        return self._groups.get(nodeid) or super()._split_scope(nodeid)


@pytest.fixture
def ref_json():
    return reference_json


@pytest.fixture
def ref_data():
    return reference_data


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory) -> SharedRuns:
    """The session's shared runs (:class:`shared_runs.SharedRuns`): ``.claims()`` and
    ``.params_file(NAME)``, each made once, also across pytest-xdist workers."""
    return SharedRuns(tmp_path_factory)


@pytest.fixture(scope="session")
def claims_run(shared_runs):
    """One run of the default claims workbooks on the small plan of
    :data:`shared_runs.CLAIMS_RUN_PARAMS`, shared by every test module that only reads
    its outputs (copy the folder with :func:`shared_runs.copy_run_folder` to change it)."""
    return shared_runs.claims()


@pytest.fixture(scope="session")
def confounded(tmp_path_factory):
    """:func:`shared_runs.confounded_plan`, prepared and fitted once per session (read only)."""
    return confounded_plan(tmp_path_factory.mktemp("confounded"))


# Property tests draw the same examples on every run, so a CI result can be reproduced;
# set HYPOTHESIS_PROFILE=explore to search new examples locally.
import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def assert_structured_records(results: dict) -> None:
    """Every estimate of a results.json carries the structured fields, with exactly one
    primary estimate per outcome and scale, and the run's spec is recorded."""
    from collections import Counter

    from evalkit.results import ANALYSES
    est = results["estimates"]
    assert est, "no estimates"
    assert results.get("spec") is not None and "study" in results["spec"]
    for e in est:
        assert e["analysis"] in ANALYSES, e
        assert isinstance(e["adjusted_for"], list), e
        assert isinstance(e["primary"], bool), e
        if e["analysis"] in ("adjusted", "design"):
            assert e["adjusted_for"], e
    primaries = Counter((e["outcome"], e["scale"]) for e in est if e["primary"])
    groups = {(e["outcome"], e["scale"]) for e in est}
    assert set(primaries) == groups and set(primaries.values()) == {1}
