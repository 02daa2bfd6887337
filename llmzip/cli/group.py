"""The ``llmzip`` command group, gzip's spellings of its commands, and ``main``: exit
statuses for errors and for Ctrl-C and SIGTERM."""

import signal
import sys
import threading

import click

from llmzip import __version__
from llmzip.errors import LmzError

# gzip's operation options and the commands they stand for, the first found winning as in
# gzip (-dl lists, -dt tests): `llmzip -d FILE.lmz` is `llmzip extract FILE.lmz`.
MODES = {"-l": "info", "--list": "info", "-t": "verify", "--test": "verify",
         "-d": "extract", "--decompress": "extract", "--uncompress": "extract"}
ALIASES = {"decompress": "extract", "test": "verify", "list": "info"}
GROUP_OPTIONS = ("-h", "--help", "-V", "--version")
FLAGS = set("cdfhklnqrtv")  # letters of the value-less short options: -dc is -d -c, -odir is no cluster


def gzip_style(args: list[str]) -> list[str]:
    """Arguments in gzip's style as a command line of commands: an operation option
    (-d, -t, -l, alone or in a cluster such as -dc) picks the command, and without one
    the command is compress (`llmzip -k FILE`). Applies when the first argument is
    `compress` or an option other than the group's own; anything else is left as it is."""
    if not args or not (args[0] == "compress" or args[0].startswith("-") and args[0] not in GROUP_OPTIONS):
        return args
    found, kept = set(), []
    rest = args[1:] if args[0] == "compress" else args
    for index, arg in enumerate(rest):
        if arg == "--":
            kept.extend(rest[index:])
            break
        if arg in MODES:
            found.add(MODES[arg])
        elif len(arg) > 2 and arg[0] == "-" and set(arg[1:]) <= FLAGS and any(f"-{c}" in MODES for c in arg[1:]):
            found.update(MODES[f"-{c}"] for c in arg[1:] if f"-{c}" in MODES)
            others = "".join(c for c in arg[1:] if f"-{c}" not in MODES)
            kept.extend([f"-{others}"] if others else [])
        else:
            kept.append(arg)
    command = next((command for command in MODES.values() if command in found), "compress")
    return [command, *kept]


class _Interrupt(BaseException):
    """Ctrl-C or SIGTERM on its way out of a command (``args[0]``: True for SIGTERM).

    Not a KeyboardInterrupt: click's ``main()`` answers one by printing a blank line to
    stderr before re-raising, and llmzip reports an interrupt in exactly one line.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks remove temporary files."""


class Group(click.Group):
    """click's group, with gzip's spellings (:func:`gzip_style`, :data:`ALIASES`) and
    interrupts that end in one line."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, gzip_style(args))

    def get_command(self, ctx, name):
        return super().get_command(ctx, ALIASES.get(name, name))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupt(isinstance(exc, Terminated)) from exc


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="llmzip")
def cli():
    """Archive text as memory tokens: one trained LM input vector per chunk.

    Every archive restores its input byte for byte: chunks the model cannot regenerate
    exactly are stored with zstd instead.

    \b
    gzip's spellings work too: -d (or decompress) is extract, -t (or test)
    verify, -l (or list) info, and any other option first means compress
    (llmzip -k FILE); -k keeps the input (always), -n stores no name (none
    is stored), -r recurses into directories, -c writes to stdout, -f forces.
    Shell completion (bash; zsh and fish likewise):
    eval "$(_LLMZIP_COMPLETE=bash_source llmzip)"
    """


def _raise_terminated(signum, frame):
    raise Terminated


def main(argv=None):
    """Console entry point: run the click group and map errors to exit codes.

    SIGTERM is handled like SIGINT while a command runs (Python's default would end the
    process without cleanup, leaving a temporary output file behind); it exits 143.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        _run(argv)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(argv):
    try:
        # standalone_mode=False: errors come here to be mapped; ctx.exit(n) comes back as n.
        status = cli.main(args=argv, prog_name="llmzip", standalone_mode=False)
    except (_Interrupt, click.exceptions.Abort, KeyboardInterrupt) as exc:  # click wraps Ctrl-C in Abort
        terminated = exc.args[0] if isinstance(exc, _Interrupt) else isinstance(exc.__cause__ or exc, Terminated)
        # On a terminal, \r puts the message over the ^C the terminal echoed.
        click.echo(("\r" if sys.stderr.isatty() else "") + ("llmzip: terminated" if terminated else "llmzip: interrupted"),
                   err=True)
        sys.exit(128 + signal.SIGTERM if terminated else 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LmzError as exc:
        click.echo(f"llmzip: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
