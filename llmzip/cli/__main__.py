"""``python -m llmzip.cli`` is the ``llmzip`` command."""

from llmzip.cli import main

main()
