"""``python -m llmzip`` is the ``llmzip`` command."""

from llmzip.cli import main

main()
