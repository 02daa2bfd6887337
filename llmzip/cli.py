"""The ``llmzip`` command line.

Exit status: 0 success, 1 an llmzip error (message on stderr, one line), 2 usage error
(click's), 130 interrupted. Heavy modules (torch, transformers) are imported inside the
commands that need them, so ``llmzip --help`` and ``llmzip info`` start in well under a
second.
"""

import sys

import click

from llmzip import __version__
from llmzip.errors import LmzError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="llmzip")
def cli():
    """Archive text as memory tokens: one trained LM input vector per chunk.

    Every archive restores its input byte for byte: chunks the model cannot regenerate
    exactly are stored with zstd instead.
    """


def main(argv=None):
    """Console entry point: run the click group and map errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="llmzip", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("llmzip: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LmzError as exc:
        click.echo(f"llmzip: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("llmzip: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
