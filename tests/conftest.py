import json
from pathlib import Path

import pandas as pd
import pytest

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


# Property tests draw the same examples on every run, so a CI result can be reproduced;
# set HYPOTHESIS_PROFILE=explore to search new examples locally.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
