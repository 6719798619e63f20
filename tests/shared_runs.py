"""Runs that several test modules read: each is made once per test session.

A real run of the workbooks takes tens of seconds, so the end-to-end tests that only
read a run's outputs share one (the ``claims_run`` fixture in tests/conftest.py) instead
of each making its own of the same small plan. A test that changes a run folder works on
a copy of it (:func:`copy_run_folder`), so the shared run stays as it was made.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

#: The small synthetic plan of tests/test_runner.py and tests/test_brief.py: the default
#: claims workbooks on 1,500 members with planted data problems; 100 bootstrap
#: replicates and 1,000 PSA draws keep the costs and cost-benefit workbooks quick.
CLAIMS_RUN_PARAMS = {"title": "small synthetic plan",
                     "data": {"members": 1500, "plant_problems": True},
                     "models": {"bootstrap_replicates": 100}, "econ": {"psa_draws": 1000}}


def write_params(folder: Path, extra: dict | None = None) -> Path:
    """:data:`CLAIMS_RUN_PARAMS` (updated with ``extra``) as ``folder/small.yaml``."""
    f = Path(folder) / "small.yaml"
    f.write_text(yaml.safe_dump({**CLAIMS_RUN_PARAMS, **(extra or {})}))
    return f


def copy_run_folder(run, dest: Path) -> Path:
    """A copy of a finished run's output folder, to change without touching the run."""
    shutil.copytree(run.output_dir, dest)
    return Path(dest)
