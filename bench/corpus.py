"""The benchmark corpora: the memory-token paper's CSV files (column ``chunk``)."""

from llmzip.bench import read_corpus

PAPER_DATA = "/work/shared/data/memory-token-paper/"
CSV_PATH = PAPER_DATA + "raschka_chunks_100.csv"  # 100-character chunks of a Raschka article


def read_rows(n_rows: int, path: str = CSV_PATH) -> list[str]:
    """The first ``n_rows`` chunks, in file order."""
    return read_corpus(path, rows=n_rows)
