"""Run the reliability suite (tests/test_reliability_*.py) and print the counts table
of RELIABILITY.md: every case family, how many cases ran, and their outcomes.

    python bench/reliability.py           # the CI profile, a few minutes on two cores
    python bench/reliability.py --long    # LLMZIP_RELIABILITY_PROFILE=long: every count
                                          # scaled up (an hour or more on two cores)

The tests append their counts to a JSON-lines file named by
``LLMZIP_RELIABILITY_REPORT`` (``tests/reliability_helpers.Tally.publish``); this script
only runs them and renders that file. The exit status is pytest's.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from reliability_helpers import OUTCOMES  # noqa: E402


def run_suite(profile: str, pytest_args: list[str]) -> tuple[int, list[dict], float]:
    """pytest over the suite with a report file; (exit status, report rows, seconds)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.jsonl"
        env = dict(os.environ, LLMZIP_RELIABILITY_REPORT=str(report), LLMZIP_RELIABILITY_PROFILE=profile)
        files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_reliability_*.py"))
        started = time.monotonic()
        status = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, *pytest_args],
                                cwd=REPO, env=env).returncode
        seconds = time.monotonic() - started
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return status, rows, seconds


def render(rows: list[dict]) -> str:
    """The Markdown table (rows with the same suite, family and command summed), a
    totals row, and each suite's notes."""
    counts: dict[tuple[str, str, str], Counter] = {}
    notes: dict[str, dict] = {}
    for row in rows:
        if "notes" in row:
            notes.setdefault(row["suite"], {}).update(row["notes"])
        else:
            counts.setdefault((row["suite"], row["family"], row["command"]), Counter()).update(row["counts"])
    lines = ["| suite | case family | command | cases | " + " | ".join(OUTCOMES) + " |",
             "|---" * (4 + len(OUTCOMES)) + "|"]
    total = Counter()
    for (suite, family, command), c in counts.items():
        total.update(c)
        lines.append(f"| {suite} | {family} | {command} | {sum(c.values()):,} | "
                     + " | ".join(f"{c[o]:,}" for o in OUTCOMES) + " |")
    lines.append(f"| **all** | | | **{sum(total.values()):,}** | "
                 + " | ".join(f"**{total[o]:,}**" for o in OUTCOMES) + " |")
    for suite, values in notes.items():
        lines.append("")
        lines.append(f"{suite}: " + "; ".join(f"{key}: {value}" for key, value in values.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the long profile")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    status, rows, seconds = run_suite("long" if args.long else "ci", args.pytest_args)
    print(render(rows))
    print(f"\npytest exit status {status}, {seconds:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
