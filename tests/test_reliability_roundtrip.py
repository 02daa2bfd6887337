"""Round-trip properties (issue 7, part 1): any bytes, compressed with the fixture model
at any chunk budget and batch size, come back byte for byte.

Two properties share one decompressor. The first is fallback-heavy (random bytes, random
Unicode, line endings, a BOM, corpus sentences mixed in) with a training budget of two
steps, so most chunks go to zstd and hundreds of examples fit in CI. The second uses
only text the fixture model learned and a real training budget, so chunks become memory
vectors and the model path is exercised end to end.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmzip.codec import LmzCompressor, LmzDecompressor
from llmzip.train import TrainConfig
from reliability_helpers import CHUNK_TOKENS, CORPUS_SENTENCES, EXACT, TRAIN, WRONG, scaled, tally_fixture

PROPERTY = dict(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

pieces = st.one_of(
    st.binary(max_size=96),
    st.text(max_size=64).map(str.encode),
    st.sampled_from(CORPUS_SENTENCES).map(str.encode),
    st.sampled_from([b"\n", b"\r\n", b"\r", b" ", b"\t", "\ufeff".encode(), b"\x00"]),
)
documents = st.lists(pieces, max_size=8).map(b"".join)
# The corpus sentences the fixture model holds on their own within TRAIN's budget (as a
# chunk that starts the text): each alone becomes a memory vector. The other two, alone,
# do not (they go to kind lm); after another sentence they may.
HELD_ALONE = (CORPUS_SENTENCES[0], CORPUS_SENTENCES[2])
corpus_documents = st.tuples(st.sampled_from(HELD_ALONE), st.lists(st.sampled_from(CORPUS_SENTENCES), max_size=2)).map(
    lambda sentences: " ".join((sentences[0], *sentences[1])).encode()
)


tally = tally_fixture("round trip")


def round_trip(tally, loaded, family: str, data: bytes, chunk_tokens: int, train: TrainConfig, **options):
    """Compress and decompress ``data``, count the outcome, require it exact; the report."""
    compressor = LmzCompressor(loaded=loaded, chunk_tokens=chunk_tokens, train=train, **options)
    archive, report = compressor.compress_with_report(data)
    exact = LmzDecompressor(loaded=loaded).decompress(archive) == data
    tally.add(family, "compress + decompress", EXACT if exact else WRONG)
    tally.count(f"{family}: memory chunks", report.memory_chunks)
    tally.count(f"{family}: zstd chunks", report.fallback_chunks)
    assert exact
    return report


@settings(max_examples=scaled(500, 5000), **PROPERTY)
@given(data=documents, chunk_tokens=st.integers(4, 64), batch_size=st.integers(1, 8))
def test_any_bytes_round_trip(tally, tiny_model, data, chunk_tokens, batch_size):
    train = TrainConfig(max_steps=2, extra_steps=1, batch_size=batch_size)
    round_trip(tally, tiny_model, "any bytes", data, chunk_tokens, train)


@settings(max_examples=scaled(12, 200), **PROPERTY)
@given(data=corpus_documents, batch_size=st.integers(1, 4))
def test_memory_vectors_round_trip(tally, tiny_model, data, batch_size):
    """Text the fixture model learned, opening with a sentence it holds: at least one
    chunk must come back from a memory vector, or this property would not exercise the
    model path it is here for (so vectors are trained even for texts shorter than the
    fixture's smallest vector record)."""
    report = round_trip(tally, tiny_model, "corpus text", data, CHUNK_TOKENS,
                        TrainConfig(**{**TRAIN, "batch_size": batch_size}), train_small_inputs=True)
    assert report.memory_chunks >= 1, (data, report)
