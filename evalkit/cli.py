"""Command line: ``evalkit run`` (``--only`` to re-run some workbooks of a finished run),
``validate``, ``status``, ``synth``, ``brief``, ``diff``, ``params-schema`` and
``--version``.

Each command imports what it uses when it runs (the runner, the brief, data preparation),
so that ``--help``, ``status`` or ``params-schema`` answer at once instead of loading the
notebook and PDF tooling first.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from ._version import __version__
from .data.synthetic import SCENARIOS
from .errors import EvalkitError


def _failed_step(run: dict) -> str | None:
    """The step a failed run stopped at (``prepare``, the workbook's bare name, ``brief``,
    ``privacy scan``), from the ``run`` block of its results.json (``workbook <name>``
    for older results without ``failed_step``); None unless it failed."""
    if run.get("status") != "failed":
        return None
    if run.get("failed_step"):
        return run["failed_step"]
    wb = [w["workbook"] for w in run.get("workbooks", []) if w.get("status") == "failed"]
    return f"workbook {wb[0]}" if wb else None


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    n = int(text) if text.strip().isdecimal() else 0     # no signs, points or 1_000
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evalkit", description=(
        "Evaluate self-help referral programs on health-plan data: run parameterized workbooks."))
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run the workbooks named in a params file")
    p_run.add_argument("params", help="params YAML file (see params/ for examples)")
    p_run.add_argument("--out", help="output folder (default: runs/<params name>)")
    p_run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param by its dotted key, e.g. --set data.members=100000")
    p_run.add_argument("--quiet", action="store_true", help="no progress output")
    p_run.add_argument("--only", action="append", metavar="WORKBOOK",
                       help="re-run just this workbook (03_utilization or utilization; "
                            "repeat or separate with commas) into the finished run in --out, "
                            "keeping its other notebooks and estimates; then results.json, "
                            "the brief and the tables are rewritten")
    p_run.add_argument("--workers", type=_positive_int, metavar="N",
                       help="workbooks executed at once, each in a kernel of its own "
                            "(default: 2 on a machine of 2 cores or more where two kernels "
                            "fit in the memory available, else 1); 1 needs the least memory "
                            "(same numbers either way)")

    p_val = sub.add_parser("validate", help="check a params file without running anything")
    p_val.add_argument("params")
    p_val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param by its dotted key, as for run")
    p_val.add_argument("--data", action="store_true",
                       help="also open the data sources and check their tables, columns and "
                            "types against the data contract (no analysis)")

    p_st = sub.add_parser("status", help="say whether a run finished, failed or was interrupted")
    p_st.add_argument("run_dir", help="the run's output folder")

    argv = sys.argv[1:] if argv is None else argv
    p_syn = sub.add_parser(
        "synth", help="write a synthetic health plan as Parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a seeded synthetic health plan (the four contract tables and "
                    "truth.json).\n\nscenarios:\n" + "\n".join(textwrap.fill(
                        f"{s.name:<15} {s.description} ({s.members:,} members by default)",
                        width=88, initial_indent="  ", subsequent_indent=" " * 18)
                        for s in SCENARIOS.values()))
    p_syn.add_argument("out", help="folder for members/enrollment/encounters/exposure.parquet")
    p_syn.add_argument("--scenario", default="demo", choices=list(SCENARIOS) or None,
                       help="built-in scenario (default: demo; listed above)")
    p_syn.add_argument("--members", type=int,
                       help="number of members (default: the scenario's own)")
    p_syn.add_argument("--seed", type=int, default=20240611,
                       help="random seed: same seed, scenario and members give the same files "
                            "(default: 20240611)")

    p_brf = sub.add_parser("brief", help="render a finished run's brief again, or one for another "
                                         "audience beside it")
    p_brf.add_argument("run_dir", help="the run's output folder (holds results.json)")
    p_brf.add_argument("--audience", choices=["hmo", "research", "clearinghouse"],
                       help="write brief-AUDIENCE.html/.pdf for this audience beside the run's "
                            "own brief (default: re-render the run's own brief.html/.pdf)")

    p_diff = sub.add_parser("diff", help="two runs' estimates side by side (sensitivity "
                                         "analyses), with the params that differ")
    p_diff.add_argument("run_a", help="the first run's output folder (A)")
    p_diff.add_argument("run_b", help="the second run's output folder (B)")
    p_diff.add_argument("--csv", metavar="FILE",
                        help="also write every matched estimate, with both values, to FILE")
    p_diff.add_argument("--changed", action="store_true",
                        help="list only the estimates that differ or are in one run")

    sub.add_parser("params-schema", help="print the JSON Schema of params files "
                                         "(docs/params.schema.json), for editors")

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from .kernel_server import start_fork_server
            start_fork_server()         # the kernels' imports, beside the runner's own
            from .runner import run
            result = run(args.params, out=args.out, overrides=args.overrides, quiet=args.quiet,
                         only=args.only, workers=args.workers)
            print(f"outputs in {result.output_dir.resolve()}")
            print(f"results:  {result.results_path.resolve()}")
        elif args.command == "brief":
            from .report import write_brief
            brief = write_brief(args.run_dir, audience=args.audience,
                                stem=f"brief-{args.audience}" if args.audience else "brief")
            print(f"brief ({brief.audience}): {brief.html.resolve()}")
            print(f"                {brief.pdf.resolve()}")
        elif args.command == "validate":
            from .params import load
            from .prepare import check_data
            p = load(args.params, args.overrides)
            print(f"params ok ({p.mode} mode, workbooks: {', '.join(p.workbooks)}); "
                  f"hash {p.digest()[:12]}")
            if args.data:
                tables = check_data(p)
                print("data: nothing to open (" + ("published figures" if p.mode == "summary"
                      else "synthetic, generated when the run starts") + ")" if tables is None
                      else "data ok: " + "; ".join(
                          f"{r.table} {r.rows:,} rows, {r.columns} columns"
                          + (f" ({r.accepted:,} accepted, {r.quarantined:,} quarantined)"
                             if "accepted" in tables else "") for r in tables.itertuples()))
        elif args.command == "diff":
            from .diff import diff_runs
            d = diff_runs(args.run_a, args.run_b)
            print(d.summary())
            table = d.table(changed_only=args.changed)
            if not table.empty:
                print(table.to_string(index=False))
            if args.csv:
                d.estimates.to_csv(args.csv, index=False)
                print(f"all {len(d.estimates)} estimates: {args.csv}")
        elif args.command == "params-schema":
            from .params import schema_json
            sys.stdout.write(schema_json())
        elif args.command == "status":
            from .status import read_status
            st = read_status(args.run_dir)
            print(f"{args.run_dir}: {st['status']}"
                  + (f" in step '{step}'" if (step := _failed_step(st)) else "")
                  + (f" ({st['error']})" if st.get("error") else ""))
            if st.get("run_id"):
                print(f"  run id {st['run_id']}")
            for w in st.get("workbooks", []):
                print(f"  {w['workbook']:<16} {w['status']}"
                      + (f"  {w['seconds']:.1f} s" if w.get("seconds") is not None else "")
                      + (f", peak memory {w['peak_memory_mb'] / 1e3:.2f} GB"
                         if w.get("peak_memory_mb") else "")
                      + (f"  {w.get('cell', '')}: {w['error']}" if w.get("error") else ""))
            return 0 if st["status"] == "ok" else 1
        elif args.command == "synth":
            from .data.synthetic import generate, scenario
            from .limits import check_synth_disk
            sc = scenario(args.scenario)
            check_synth_disk(sc.members if args.members is None else args.members,
                             sc.lines_scale, args.out)
            plan = generate(args.out, scenario=args.scenario, members=args.members,
                            seed=args.seed, progress=True)
            print(f"wrote {args.out}: " + ", ".join(f"{k} {v:,} rows" for k, v in plan.rows.items()))
    except EvalkitError as err:
        print(f"evalkit: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
