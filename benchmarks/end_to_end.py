"""The whole default run (every default workbook), end to end, at two plan sizes.

For each size, runs ``evalkit run params/demo.yaml`` (synthetic data generated inside
the run) in this process and prints the seconds of data preparation (generation, loading,
checks, cohort, member x window table) and of each workbook, from the run's results.json,
plus the run's peak memory (the runner, its largest Jupyter kernel and the two together,
sampled every half second in a fresh child process per size). The baseline in the same
process is the bare start of a kernel that imports evalkit's dependencies and runs
nothing, so the table shows how much of each workbook is analysis rather than kernel
start.

Usage: python benchmarks/end_to_end.py [--members 20000 1000000] [--bootstrap 1000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit import runner

HERE = Path(__file__).resolve().parent
PARAMS = HERE.parent / "params" / "demo.yaml"


def kernel_baseline() -> float:
    """Seconds to execute a notebook that only imports pandas, statsmodels and duckdb."""
    import nbformat
    import papermill as pm
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import pandas, statsmodels.api, duckdb, evalkit")])
    with tempfile.TemporaryDirectory() as tmp:
        src, dest = Path(tmp) / "a.ipynb", Path(tmp) / "b.ipynb"
        nbformat.write(nb, src)
        t = time.perf_counter()
        pm.execute_notebook(str(src), str(dest), kernel_name="python3", progress_bar=False,
                            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        return time.perf_counter() - t


class PeakSampler:
    """Samples, every ``interval`` seconds in a background thread, the resident memory of
    this process and of each of its descendants (the Jupyter kernels); keeps the peaks.

    ``getrusage``'s children figure cannot be used for the kernels: a child starts with
    its parent's peak across fork, so it only ever repeats the runner's.
    """

    def __init__(self, interval: float = 0.5):
        import threading
        import psutil
        self.proc, self.interval = psutil.Process(), interval
        self.runner = self.kernel = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        import psutil
        own = self.proc.memory_info().rss
        kids = []
        for c in self.proc.children(recursive=True):
            try:
                kids.append(c.memory_info().rss)
            except psutil.Error:                      # ended between listing and reading
                pass
        self.runner = max(self.runner, own)
        self.kernel = max([self.kernel, *kids])
        self.total = max(self.total, own + sum(kids))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def child(members: int, bootstrap: int, out: str) -> None:
    """One run; prints results.json's timings and the peak resident memory of the runner,
    of the largest kernel and of the two together, as JSON."""
    t = time.perf_counter()
    with PeakSampler() as peak:
        res = runner.run(PARAMS, out=out, quiet=True,
                          overrides={"data.members": members,
                                     "models.bootstrap_replicates": bootstrap})
    total = time.perf_counter() - t
    run = json.loads(res.results_path.read_text())["run"]
    # the runner's true peak (VmHWM) can fall between two samples
    hwm = int(next(x for x in Path("/proc/self/status").read_text().splitlines()
                   if x.startswith("VmHWM")).split()[1]) * 1024
    print(json.dumps({"total": total, "prepare": run["prepare_seconds"],
                      "workbooks": {w["workbook"]: w["seconds"] for w in run["workbooks"]},
                      "peak_runner_mb": max(hwm, peak.runner) / 2**20,
                      "peak_kernel_mb": peak.kernel / 2**20,
                      "peak_total_mb": peak.total / 2**20}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, nargs="+", default=[20_000, 1_000_000])
    ap.add_argument("--bootstrap", type=int, default=1000, help="cost bootstrap replicates")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(int(args.child[0]), int(args.child[1]), args.child[2])
    base = kernel_baseline()
    results = {}
    for m in args.members:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, __file__, "--child", str(m), str(args.bootstrap),
                                   str(Path(tmp) / "run")], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"run with {m:,} members failed:\n{proc.stderr[-3000:]}")
            results[m] = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = ["prepare", *next(iter(results.values()))["workbooks"]]
    print(f"\nend-to-end default run (params/demo.yaml, {args.bootstrap} bootstrap replicates); "
          f"seconds (x the {base:.1f} s of a bare kernel start with imports)\n")
    print(f"{'step':<16}" + "".join(f"{f'{m:,} members':>24}" for m in results))
    for step in steps:
        cells = []
        for r in results.values():
            s = r["prepare"] if step == "prepare" else r["workbooks"].get(step)
            cells.append("-" if s is None else f"{s:9.1f} s ({s / base:5.1f}x)")
        print(f"{step:<16}" + "".join(f"{c:>24}" for c in cells))
    print(f"{'total':<16}" + "".join(f"{r['total']:>22.1f} s" for r in results.values()))
    print(f"{'peak, runner':<16}" + "".join(f"{r['peak_runner_mb'] / 1024:>21.2f} GB" for r in results.values()))
    print(f"{'peak, a kernel':<16}" + "".join(f"{r['peak_kernel_mb'] / 1024:>21.2f} GB" for r in results.values()))
    print(f"{'peak, together':<16}" + "".join(f"{r['peak_total_mb'] / 1024:>21.2f} GB" for r in results.values()))


if __name__ == "__main__":
    main()
