"""What range coding saves on trained memory-int coefficients, measured on real archives.

For every ``memory-int`` (fixed-width) and ``memory-int-coded`` vector in the given
archives, report the coefficients' empirical entropy (pooled over all vectors: a lower
bound no per-vector code reaches), the bytes of the fixed-width bit stream, and the bytes of
kind memory-int-coded's adaptive range code (:func:`encode_coefficients`, the writer's own
code). No model is needed.

    python bench/coefficient_code.py fixtures/compat/default-model-memory-int.lmz
"""

import argparse
import collections
import math

from llmzip import container, kinds
from llmzip.kinds.memory_int import coefficient_bytes
from llmzip.kinds.memory_int_coded import BITS, encode_coefficients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archives", nargs="+")
    args = parser.parse_args()
    by_bits = collections.defaultdict(list)  # bits -> [(k,) int coefficients per vector]
    for path in args.archives:
        for chunk in container.unpack(open(path, "rb").read()).chunks:
            if isinstance(kinds.of(chunk), kinds.memory_int.IntVectorKind):
                by_bits[chunk.bits].append(chunk.integers())
    print("| bits | vectors | coefficients | entropy, bits each | fixed width, B/vector | range coded, B/vector | saved |")
    print("|---|---|---|---|---|---|---|")
    for bits, vectors in sorted(by_bits.items()):
        values = collections.Counter(v for q in vectors for v in q.tolist())
        n = sum(values.values())
        entropy = -sum(c / n * math.log2(c / n) for c in values.values())
        fixed = sum(coefficient_bytes(len(q), bits) for q in vectors) / len(vectors)
        coded = (sum(len(encode_coefficients(q, bits)) for q in vectors) / len(vectors)) if bits in BITS else float("nan")
        print(f"| {bits} | {len(vectors)} | {n} | {entropy:.3f} | {fixed:.1f} | {coded:.1f} | {1 - coded / fixed:.1%} |")


if __name__ == "__main__":
    main()
