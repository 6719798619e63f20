"""Runs and prepared plans that several test modules read: each is made once per session.

A real run of the workbooks takes tens of seconds, so the end-to-end tests that only
read a run's outputs share one (the ``claims_run`` fixture in tests/conftest.py) instead
of each making its own of the same small plan. A test that changes a run folder works on
a copy of it (:func:`copy_run_folder`), so the shared run stays as it was made. The
confounded plan with its fitted design (``confounded_plan``) is shared the same way by
the cohort-balance and negative-control tests.
"""
from __future__ import annotations

import shutil
import warnings
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


def confounded_plan(out: Path) -> tuple:
    """The 4,000-member demo plan (seed 1: sicker members are referred more often),
    prepared in ``out``, with its cohort design (default: matching), negative controls
    and effects: ``(study, design, negative_controls, calibrated_effects, crude_effects,
    true_effects)``."""
    from evalkit.analysis import design as D
    from evalkit import params as P
    from evalkit.analysis.study import prepare_study
    st = prepare_study(P.validate({"seed": 1, "data": {"members": 4000}}), out)
    kinds = st.design_outcomes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        des = st.cohort_design()
        nc = st.negative_controls(des)
        main, _ = D.effects(des, list(kinds), kinds)
    main = D.calibrated_records(main, nc)
    crude = D.crude_effects(des.frame, list(kinds), kinds)
    return st, des, nc, main, crude, st.true_effects(list(kinds))
