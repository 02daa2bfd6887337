"""The ``llmzip`` command line, one module per concern:

- :mod:`~llmzip.cli.group`: the click group, gzip's spellings (``-d``, ``-t``, ``-l``,
  ``decompress``), ``main`` and its exit statuses, Ctrl-C and SIGTERM;
- :mod:`~llmzip.cli.options`: the options several commands share, each declared once with
  its defaults read from the code, and the torch set-up (``--device``, ``--threads``);
- :mod:`~llmzip.cli.files`: which files a command works on (``-r``) and writing outputs
  safely; :mod:`~llmzip.cli.messages`: summary and error lines, progress bars;
- the commands: :mod:`~llmzip.cli.compress`, :mod:`~llmzip.cli.extract` (extract, verify),
  :mod:`~llmzip.cli.info` (info, export), :mod:`~llmzip.cli.bench`.

Exit status: 0 success, 1 an llmzip error (message on stderr, one line), 2 usage error
(click's), 130 interrupted (143 for SIGTERM). Heavy modules (torch, transformers) are
imported inside the commands that need them, so ``llmzip --help`` and ``llmzip info``
start in well under a second.
"""

from llmzip.cli import bench, compress, extract, info  # noqa: F401  (each registers its commands)
from llmzip.cli.group import cli, main

__all__ = ["cli", "main"]
