"""Runs and prepared plans that several test modules read: each is made once per session.

A real run of the workbooks takes tens of seconds, so the end-to-end tests that only
read a run's outputs share one instead of each making its own of the same plan: the
small claims plan (the ``claims_run`` fixture in tests/conftest.py) and the runs of the
project's params files (:data:`PARAMS_RUNS`, through the ``shared_runs`` fixture). A
test that changes a run folder works on a copy of it (:func:`copy_run_folder`), so the
shared run stays as it was made. The confounded plan with its fitted design
(``confounded_plan``) is shared the same way by the cohort-balance and negative-control
tests. tests/test_sources_end_to_end.py keeps its plan and its run of each
kind of data source with :meth:`SharedRuns.get`, so the two pytest-xdist groups of that
file can each make some of them.

With pytest-xdist (``pytest -n 2``) the runs are kept in the folder the workers share
(the parent of each worker's base temporary folder): the first worker that needs a run
makes it while any other that needs it waits on a lock, then reads the same folder.
"""
from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import yaml

from evalkit import runner

PARAMS_DIR = Path(__file__).resolve().parent.parent / "params"

#: The small synthetic plan of tests/test_runner.py and tests/test_brief.py: the default
#: claims workbooks on 1,500 members with planted data problems; 100 bootstrap
#: replicates and 1,000 PSA draws keep the costs and cost-benefit workbooks quick. It is
#: params/demo.yaml (same workbooks, scenario, seed and windows) with a smaller plan and
#: its own title.
CLAIMS_RUN_PARAMS = {"title": "small synthetic plan",
                     "data": {"members": 1500, "plant_problems": True},
                     "models": {"bootstrap_replicates": 100}, "econ": {"psa_draws": 1000}}

#: How each params file is run when tests share its run: overrides of the file as
#: shipped (empty: as shipped). The group-types run is made as a public release (its
#: outputs scanned for small counts of people); the support-group run shows its code in the workbooks'
#: HTML (report.show_code, which the brief does not read). params/demo.yaml is not here: its workbooks are those of
#: the shared claims run. The humphreys_moos and healthwise_er runs are smaller than the
#: files ask for (fewer members or resampling replicates); every workbook still runs.
PARAMS_RUNS: dict[str, dict] = {
    "er_power": {},
    "parent_survey": {},
    "clearinghouse_brief": {},
    "group_types": {"report.public": True},
    "support_group_survival": {"report.show_code": True},
    "nhefs_ipw": {},
    "humphreys_moos": {"models.bootstrap_replicates": 100, "econ.joint_replicates": 60,
                       "econ.psa_draws": 1000},
    "healthwise_er": {"data.members": 3000, "models.bootstrap_replicates": 100},
}


def write_params(folder: Path, extra: dict | None = None) -> Path:
    """:data:`CLAIMS_RUN_PARAMS` (updated with ``extra``) as ``folder/small.yaml``."""
    f = Path(folder) / "small.yaml"
    f.write_text(yaml.safe_dump({**CLAIMS_RUN_PARAMS, **(extra or {})}))
    return f


def copy_run_folder(run, dest: Path) -> Path:
    """A copy of a finished run's output folder, to change without touching the run."""
    shutil.copytree(run.output_dir, dest)
    return Path(dest)


class SharedRuns:
    """Runs made once per test session (once across pytest-xdist workers) and read by
    every test that needs them; see the module's description."""

    def __init__(self, tmp_path_factory):
        base = tmp_path_factory.getbasetemp()
        shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
        self.root = shared / "shared-runs"
        self.root.mkdir(exist_ok=True)

    def get(self, name: str, make: Callable[[Path], runner.RunResult]) -> runner.RunResult:
        """The run called ``name``: made by ``make(folder)`` the first time it is asked
        for, in this session, by any worker."""
        folder = self.root / name
        record = folder / "run.pickle"
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)           # released when the file closes
            if not record.is_file():
                shutil.rmtree(folder, ignore_errors=True)   # a maker that failed
                folder.mkdir()
                record.write_bytes(pickle.dumps(make(folder)))
        return pickle.loads(record.read_bytes())

    def claims(self) -> runner.RunResult:
        """The small claims plan of :data:`CLAIMS_RUN_PARAMS`."""
        return self.get("claims", lambda folder: runner.run(
            write_params(folder), out=folder / "out", quiet=True))

    def params_file(self, name: str) -> runner.RunResult:
        """params/NAME.yaml run with the overrides of :data:`PARAMS_RUNS`."""
        def make(folder: Path) -> runner.RunResult:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return runner.run(PARAMS_DIR / f"{name}.yaml", out=folder / "out", quiet=True,
                                  overrides=PARAMS_RUNS[name] or None)
        return self.get(name, make)


def confounded_plan(out: Path) -> tuple:
    """The 4,000-member demo plan (seed 1: sicker members are referred more often),
    prepared in ``out``, with its cohort design (default: matching), negative controls
    and effects: ``(study, design, negative_controls, calibrated_effects, crude_effects,
    true_effects)``."""
    from evalkit import params as P
    from evalkit.analysis import design as D
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
