"""The benchmark corpora: the memory-token paper's CSV files (column ``chunk``).

The files are not part of this repository. Set ``LLMZIP_PAPER_DATA`` to the directory
that holds them (BENCHMARKS.md, "Corpora"):

    raschka_chunks_100.csv    100-character chunks of an English article (Tables 2, engine)
    raschka_chunks_1000.csv   1000-character chunks of the same article (Table 3, 64-token rows)
    chunks.csv                Spanish university web pages (Table 4)

A script's corpus argument may be one of these names (looked up there) or a path to any
CSV file with a ``chunk`` column. Run as a script, this writes rows of a corpus joined by
newlines, which is how BENCHMARKS.md's English and Spanish test texts were made:

    python bench/corpus.py raschka_chunks_1000.csv 10-12 > en.txt
    python bench/corpus.py chunks.csv 0-3 > es.txt
"""

import os
import sys
from pathlib import Path

from llmzip.bench import read_corpus

ENV = "LLMZIP_PAPER_DATA"
CORPORA = ("raschka_chunks_100.csv", "raschka_chunks_1000.csv", "chunks.csv")
CSV_100 = CORPORA[0]  # the default corpus: the paper's Table 2 rows


def corpus_path(name: str) -> Path:
    """The CSV file ``name``: a path as given when it exists, else the file of that name in
    ``$LLMZIP_PAPER_DATA``. Exits with a message saying what to set when neither is there."""
    given = Path(name)
    if given.is_file():
        return given
    directory = os.environ.get(ENV)
    if not directory:
        sys.exit(f"bench: {name} needs the memory-token paper's corpora: set {ENV} to the directory "
                 f"that holds {', '.join(CORPORA)} (BENCHMARKS.md, \"Corpora\")")
    path = Path(directory) / given.name
    if not path.is_file():
        sys.exit(f"bench: {path} does not exist ({ENV}={directory}; expected {', '.join(CORPORA)})")
    return path


def read_rows(n_rows: int, name: str = CSV_100, start: int = 0) -> list[str]:
    """Rows ``start`` to ``start + n_rows - 1`` of corpus ``name``, in file order."""
    return read_corpus(corpus_path(name), rows=n_rows, start=start)


def span(text: str) -> list[int]:
    """Row numbers from "3", "0-19" or "3,4,11-13"."""
    rows = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        rows += list(range(int(first), int(last or first) + 1))
    return rows


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    rows = span(sys.argv[2])
    texts = read_rows(max(rows) + 1, sys.argv[1])
    sys.stdout.buffer.write("\n".join(texts[r] for r in rows).encode())


if __name__ == "__main__":
    main()
