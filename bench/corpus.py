"""The benchmark corpus: the memory-token paper's 100-character chunks of a Raschka article."""

import csv

CSV_PATH = "/work/shared/data/memory-token-paper/raschka_chunks_100.csv"


def read_rows(n_rows: int) -> list[str]:
    """The first ``n_rows`` chunks (column ``chunk``), in file order."""
    with open(CSV_PATH, newline="") as f:
        return [row["chunk"] for _, row in zip(range(n_rows), csv.DictReader(f))]
