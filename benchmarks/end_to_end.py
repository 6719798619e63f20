"""The whole default run (every default workbook), end to end: the plain sequential run
against the run with shared kernels, or kernels started as processes of their own against
kernels forked from the fork server.

For each plan size, runs ``evalkit run params/demo.yaml`` (synthetic data generated inside
the run) in each of the ways asked (``--paths``), interleaved, each run in a fresh child
process:

* ``sequential``: one workbook at a time, each in a kernel of its own, a process of its
  own (``runner.run(workers=1, shared_kernels=False, fork_kernels=False)``, how every run
  was made before);
* ``unforked``: as ``shared`` below, but each kernel a Python process of its own that
  imports the scientific stack itself (``runner.run(fork_kernels=False)``);
* ``shared``: the default, kernels started while the data are prepared (forked from the
  kernel fork server, which imported the stack once), reused between workbooks and two
  workbooks at once when memory allows (``runner.run()``).

It prints the seconds and the peak memory of data preparation and of each workbook (from
results.json; with two at once a workbook's seconds overlap another's), the run's wall
time and CPU time (the runner and its kernels), its peak memory (the runner, its largest
kernel and the two together, sampled every half second), medians over the repeats, and
the ratios
shared / sequential. The bare start of a kernel that imports evalkit's dependencies and
runs nothing is measured too, as the unit of what a workbook costs beyond its analysis.

Usage: python benchmarks/end_to_end.py [--members 20000 1000000] [--bootstrap 1000]
       [--repeats 1] [--paths sequential shared] (or unforked, in any order)
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit import kernel_server, runner

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
        # when the summed peak came (seconds from the start) and its parts: the runner's
        # and each other process's resident memory, largest first
        self.total_at, self.total_parts = 0.0, ()
        self._t0 = time.perf_counter()
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
        if own + sum(kids) > self.total:
            self.total = own + sum(kids)
            self.total_at = time.perf_counter() - self._t0
            self.total_parts = (own, *sorted(kids, reverse=True))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


#: How each path runs the workbooks (keyword arguments of ``runner.run``).
PATHS = {"sequential": {"workers": 1, "shared_kernels": False, "fork_kernels": False},
         "unforked": {"fork_kernels": False}, "shared": {}}


def child(members: int, bootstrap: int, out: str, path: str) -> None:
    """One run; prints results.json's timings, the CPU seconds of the runner and its
    kernels, and the peak resident memory of the runner, of the largest kernel and of
    the two together, as JSON."""
    t = time.perf_counter()
    with PeakSampler() as peak:
        res = runner.run(PARAMS, out=out, quiet=True, **PATHS[path],
                          overrides={"data.members": members,
                                     "models.bootstrap_replicates": bootstrap})
    total = time.perf_counter() - t
    # the fork server waited for its kernels: once it is waited for, their CPU time and
    # its own count among this process's children
    kernel_server.stop_fork_server()
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))
    run = json.loads(res.results_path.read_text())["run"]
    # the runner's true peak (VmHWM) can fall between two samples
    hwm = int(next(x for x in Path("/proc/self/status").read_text().splitlines()
                   if x.startswith("VmHWM")).split()[1]) * 1024
    print(json.dumps({"total": total, "cpu": cpu, "prepare": run["prepare_seconds"],
                      "workbooks": {w["workbook"]: w["seconds"] for w in run["workbooks"]},
                      # each step's own peak as results.json records it (the runner's
                      # sampler: a workbook's kernel and its children while it executed)
                      "step_peaks_mb": {"prepare": run.get("prepare_peak_memory_mb", 0),
                                        **{w["workbook"]: w.get("peak_memory_mb", 0)
                                           for w in run["workbooks"]}},
                      "peak_runner_mb": max(hwm, peak.runner) / 2**20,
                      "peak_kernel_mb": peak.kernel / 2**20,
                      "peak_total_mb": peak.total / 2**20,
                      "peak_total_at_s": round(peak.total_at, 1),
                      "peak_total_parts_mb": [round(x / 2**20) for x in peak.total_parts]}))


def _median_run(runs: list[dict]) -> dict:
    """Medians over repeated runs of the same path, step by step."""
    keys = ("total", "cpu", "prepare", "peak_runner_mb", "peak_kernel_mb", "peak_total_mb")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["workbooks"] = {w: statistics.median(r["workbooks"][w] for r in runs)
                        for w in runs[0]["workbooks"]}
    out["step_peaks_mb"] = {s: statistics.median(r["step_peaks_mb"][s] for r in runs)
                            for s in runs[0]["step_peaks_mb"]}
    return out


def _row(name: str, values: list[float], fmt: str, unit: str) -> str:
    """A table row: each path's value, then the last / the first when two ran."""
    cells = "".join(f"{format(v, fmt) + unit:>14}" for v in values)
    ratio = f"{values[-1] / values[0]:>9.2f}x" if len(values) == 2 and values[0] else ""
    return f"{name:<18}{cells}{ratio}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, nargs="+", default=[20_000, 1_000_000])
    ap.add_argument("--bootstrap", type=int, default=1000, help="cost bootstrap replicates")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each path, interleaved")
    ap.add_argument("--paths", nargs="+", default=["sequential", "shared"], choices=list(PATHS))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(int(args.child[0]), int(args.child[1]), args.child[2], args.child[3])
    base = kernel_baseline()
    print(f"a bare kernel start with imports: {base:.1f} s")
    for m in args.members:
        runs = {p: [] for p in args.paths}
        for _ in range(args.repeats):
            for path in args.paths:                  # interleaved: load drifts alike
                with tempfile.TemporaryDirectory() as tmp:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", str(m), str(args.bootstrap),
                         str(Path(tmp) / "run"), path], capture_output=True, text=True,
                        check=False)
                if proc.returncode:
                    sys.exit(f"{path} run with {m:,} members failed:\n{proc.stderr[-3000:]}")
                runs[path].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        med = {p: _median_run(r) for p, r in runs.items()}
        print(f"\nparams/demo.yaml at {m:,} members, {args.bootstrap} bootstrap replicates; "
              f"medians of {args.repeats} run(s) per path")
        print(f"{'':<18}" + "".join(f"{p:>14}" for p in med)
              + ("     ratio" if len(med) == 2 else ""))
        first = next(iter(med.values()))
        for step in ["prepare", *first["workbooks"]]:
            print(_row(step, [r["prepare"] if step == "prepare" else r["workbooks"][step]
                              for r in med.values()], ".1f", " s"))
        print(_row("wall, whole run", [r["total"] for r in med.values()], ".1f", " s"))
        print(_row("CPU, whole run", [r["cpu"] for r in med.values()], ".1f", " s"))
        for key, label in (("peak_runner_mb", "peak, runner"), ("peak_kernel_mb", "peak, a kernel"),
                           ("peak_total_mb", "peak, together")):
            print(_row(label, [r[key] / 1024 for r in med.values()], ".2f", " GB"))
        for step in first["step_peaks_mb"]:                 # 10^6 bytes in results.json
            print(_row(f"peak, {step}"[:18], [r["step_peaks_mb"][step] / 1e3
                                              for r in med.values()], ".2f", " GB"))


if __name__ == "__main__":
    main()
