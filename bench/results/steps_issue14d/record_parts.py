"""Scratch (attempt 23): where a memory-int-lm record's bytes go, read from archives
without the model. Per archive: the mean over its memory-int-lm records of the
coefficients left at 0, the bytes the coefficients alone code to, the corrected positions,
and the rest of the record's code (the position flags and the corrected tokens).

    python record_parts.py ARCHIVE...
"""
import statistics
import sys
from pathlib import Path

from llmzip import container
from llmzip.kinds.memory_int_coded import encode_coefficients
from llmzip.kinds.memory_int_lm import LmCorrectedVectorChunk

for path in sys.argv[1:]:
    records = [c for c in container.unpack(Path(path).read_bytes()).chunks if isinstance(c, LmCorrectedVectorChunk)]
    zeros, magnitudes, coefficients, corrections, rest = [], [], [], [], []
    for record in records:
        q = record.integers()  # (rank,)
        coded = len(encode_coefficients(q, record.bits))
        zeros.append(int((q == 0).sum()))
        magnitudes.append(float(abs(q).mean()))
        coefficients.append(coded)
        corrections.append(len(record.positions))
        rest.append(len(record.code) - coded)
    print(f"{Path(path).name}: {len(records)} records; zeros {statistics.mean(zeros):.0f} of {records[0].rank}, "
          f"|q| mean {statistics.mean(magnitudes):.2f}; "
          f"coefficients {statistics.mean(coefficients):.0f} B; corrections {statistics.mean(corrections):.1f}, "
          f"flags and tokens {statistics.mean(rest):.0f} B (per record, means)")
