"""Scratch (attempt 20): replay the corrections stop schedule on a coded-default trace
(coded_trace.py). A chunk may stop at a full-vocabulary check once its short positions
(gap under the margin) number at most min(CORRECTIONS, steps // CORRECTION_STEPS); the
training path does not depend on that allowance, so for any schedule at least as
permissive as the traced one (16 per 50 steps) the stop step and the number of
corrections it stores are exact, verification aside.

    python replay_corrections.py coded_trace.jsonl.gz
"""
import collections
import gzip
import json
import sys

checks = collections.defaultdict(list)  # row -> [(step, short)]
for line in (gzip.open if sys.argv[1].endswith(".gz") else open)(sys.argv[1], "rt"):
    record = json.loads(line)
    if record["checked"]:
        checks[record["row"]].append((record["step"], record["short"]))
ended = {row: steps[-1][0] for row, steps in checks.items()}

for most, per in ((16, 50), (16, 25), (16, 1), (24, 25), (32, 25), (32, 10), (32, 1), (48, 1), (63, 1)):
    stops = []
    for row, steps in checks.items():
        stop = next(((s, n) for s, n in steps if s and n <= min(most, s // per)), None)
        stops.append(stop if stop else (None, None))
    done = [s for s in stops if s[0] is not None]
    print(f"corrections {most:2d}, one per {per:2d} steps: stops {[s[0] for s in stops]}, corrections {[s[1] for s in stops]}; "
          f"mean steps {sum(s for s, _ in done) / len(done):.0f}, mean corrections {sum(n for _, n in done) / len(done):.1f} "
          f"over {len(done)} chunks")
