#!/usr/bin/env python3
"""Summarises the rolling-restart benchmark (scripts/bench-rolling-restart.sh).

Reads each run's chaos report (<out>/<side>-p<partitions>-<run>/results.md, the summary table
of carrier-chaos) and prints a Markdown table: per scenario and partition count, the longest
gap of a healthy destination on each side (median of the runs, and every run's figure), the
ratio after/before, and whether every run kept the delivery verdict (nothing lost, no raw
reorder).
"""

import argparse
import pathlib
import statistics
import sys


def summary_rows(report: pathlib.Path) -> dict:
    """scenario -> {column header: cell} from the first table of a chaos report."""
    rows, header = {}, None
    for line in report.read_text().splitlines():
        if not line.startswith("|"):
            if header and rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            if cells and cells[0] == "scenario":
                header = cells
            continue
        if set(cells[0]) <= set("-:"):
            continue
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--partitions", required=True)
    parser.add_argument("--runs", type=int, required=True)
    args = parser.parse_args()

    # (scenario, partitions, side) -> list of (gap seconds or None, kept verdict)
    figures: dict = {}
    missing = []
    for partitions in args.partitions.split():
        for side in ("before", "after"):
            for run in range(1, args.runs + 1):
                report = args.out / f"{side}-p{partitions}-{run}" / "results.md"
                if not report.exists():
                    missing.append(str(report))
                    continue
                for scenario, row in summary_rows(report).items():
                    gap = row.get("longest healthy gap (s)", "")
                    try:
                        seconds = float(gap)
                    except ValueError:
                        seconds = None
                    kept = row.get("lost") == "0" and row.get("raw reorders") == "0"
                    figures.setdefault((scenario, partitions, side), []).append((seconds, kept))

    print("# Rolling restart of three delivery replicas under load: longest healthy gap\n")
    print(f"- before: `{args.before}`; after: `{args.after}`; {args.profile} binaries; "
          f"seed {args.seed}; {args.runs} run(s) per side, alternating")
    print("- command: `make bench-rolling` (scripts/bench-rolling-restart.sh)")
    print("- gap: the longest time between two arrivals at `healthy-1` or `healthy-2` (answering at "
          "once) from the fault's start on; median of the runs, every run in brackets\n")
    print("| scenario | partitions | before (s) | after (s) | after / before | verdict kept (before, after) |")
    print("|---|---:|---:|---:|---:|---|")

    def cell(values):
        gaps = [gap for gap, _ in values if gap is not None]
        if not gaps:
            return "–", None
        median = statistics.median(gaps)
        runs = ", ".join(f"{gap:.1f}" for gap in gaps)
        return f"{median:.1f} ({runs})", median

    scenarios = sorted({scenario for scenario, _, _ in figures})
    for scenario in scenarios:
        for partitions in args.partitions.split():
            before = figures.get((scenario, partitions, "before"), [])
            after = figures.get((scenario, partitions, "after"), [])
            before_text, before_median = cell(before)
            after_text, after_median = cell(after)
            ratio = (f"{after_median / before_median:.2f}"
                     if before_median and after_median is not None else "–")
            kept = "{}, {}".format(
                "yes" if before and all(ok for _, ok in before) else "**no**",
                "yes" if after and all(ok for _, ok in after) else "**no**",
            )
            print(f"| {scenario} | {partitions} | {before_text} | {after_text} | {ratio} | {kept} |")
    if missing:
        print("\nMissing reports (the run failed before writing one; see its .log):")
        for report in missing:
            print(f"- {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
