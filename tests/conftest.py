import json
from pathlib import Path

import pandas as pd
import pytest
from shared_runs import SharedRuns, confounded_plan

REFERENCE = Path(__file__).parent / "reference"


def reference_json(topic: str) -> dict:
    """Expected values computed by R (see tests/reference/README.md for provenance)."""
    return json.loads((REFERENCE / "expected" / f"{topic}.json").read_text())


def reference_data(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "data" / f"{name}.csv")


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
