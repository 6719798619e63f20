"""Data preparation (:func:`evalkit.prepare.prepare`) stage by stage, wall and CPU seconds.

For each plan size, runs ``prepare()`` on ``params/demo.yaml`` (synthetic plan generated,
problems planted, claims loaded and checked, cohort and member x window table built) in a
fresh child process per tree, the trees interleaved, and prints per stage the median wall
seconds and CPU seconds (every thread of the process) over the repeats. Stages are the
functions :func:`prepare` calls, timed by wrapping them in the child; a stage a tree does
not have is left blank. Indented stages run inside the one above them; ``other`` is the
rest of ``prepare()`` (fingerprint of the inputs, the analysis spec, the checkpoint).

Give the code before a change as a second tree (a checkout of the earlier commit) to see
both side by side: ``--trees /path/to/old/checkout .``. The load average of the machine is
printed with each run: the machine's other work moves wall times (CPU seconds less so).

Usage: python benchmarks/prepare.py [--members 20000 200000] [--repeats 1]
       [--trees TREE ...] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARAMS = HERE.parent / "params" / "demo.yaml"

#: (label, module, attribute, depth): the functions timed, in the order shown
STAGES = [
    ("synthetic.generate", "evalkit.data.synthetic", "generate", 1),
    ("plant_problems", "evalkit.prepare", "plant_problems", 1),
    ("load_claims", "evalkit.prepare", "load_claims", 1),
    ("structural checks", "evalkit.data.load", "_structural_checks", 2),
    ("member ids", "evalkit.data.load", "member_id_sql", 2),
    ("encounter checks", "evalkit.data.load", "_check_encounters", 2),
    ("split accepted", "evalkit.data.load", "_split_accepted", 2),
    ("load notes", "evalkit.data.load", "record_notes", 2),
    ("build_cohort", "evalkit.cohort", "build_cohort", 1),
    ("build_member_windows", "evalkit.utilization", "build_member_windows", 1),
]


def child(members: int, threads: int | None) -> dict:
    """Run prepare() once in this process with every stage wrapped; return the seconds."""
    import importlib

    from evalkit import params as _params
    from evalkit.prepare import prepare

    spent: dict[str, list[float]] = {}

    def timed(label, fn):
        def wrapper(*args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                w = spent.setdefault(label, [0.0, 0.0])
                w[0] += time.perf_counter() - t
                w[1] += time.process_time() - c
        return wrapper

    for label, module, attr, _ in STAGES:
        mod = importlib.import_module(module)
        if hasattr(mod, attr):
            setattr(mod, attr, timed(label, getattr(mod, attr)))
    sets = [f"data.members={members}"] + ([f"engine.threads={threads}"] if threads else [])
    p = _params.load(PARAMS, sets)
    with tempfile.TemporaryDirectory(prefix="evalkit-prepare-") as out:
        load = os.getloadavg()[0]
        t, c = time.perf_counter(), time.process_time()
        prepare(p, out)
        whole = [time.perf_counter() - t, time.process_time() - c]
    top = sum(spent.get(label, [0, 0])[0] for label, _, _, d in STAGES if d == 1)
    top_cpu = sum(spent.get(label, [0, 0])[1] for label, _, _, d in STAGES if d == 1)
    spent["other"] = [whole[0] - top, whole[1] - top_cpu]
    spent["prepare()"] = whole
    return {"stages": spent, "load": load}


def run(tree: Path, members: int, threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--child", str(members)]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--trees", nargs="+", default=[str(HERE.parent)],
                    help="source trees to import evalkit from (e.g. an earlier checkout)")
    ap.add_argument("--threads", type=int, default=None, help="engine.threads (default: all)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.threads)))
        return
    trees = [Path(t).resolve() for t in a.trees]
    names = [t.name for t in trees]
    labels = [(label, d) for label, _, _, d in STAGES] + [("other", 1), ("prepare()", 0)]
    for members in a.members:
        runs = {t: [] for t in trees}
        for _ in range(a.repeats):
            for t in trees:           # interleaved, so drifting load hits every tree alike
                runs[t].append(run(t, members, a.threads))
        loads = "; ".join(n + " " + ", ".join(f"{r['load']:.1f}" for r in runs[t])
                          for n, t in zip(names, trees))
        print(f"\n{members:,} members (median of {a.repeats}; load average at start: {loads})")
        head = "".join(f"{n[:14] + ' wall':>22}{'cpu':>8}" for n in names)
        print(f"{'stage':<26}{head}")
        for label, depth in labels:
            cells = ""
            for t in trees:
                vals = [r["stages"].get(label) for r in runs[t]]
                if any(v is None for v in vals):
                    cells += f"{'':>22}{'':>8}"
                    continue
                w = statistics.median(v[0] for v in vals)
                c = statistics.median(v[1] for v in vals)
                cells += f"{w:>22.2f}{c:>8.2f}"
            print(f"{'  ' * max(depth - 1, 0) + label:<26}{cells}")


if __name__ == "__main__":
    main()
