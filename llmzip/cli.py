"""The ``llmzip`` command line.

Exit status: 0 success, 1 an llmzip error (message on stderr, one line), 2 usage error
(click's), 130 interrupted. Heavy modules (torch, transformers) are imported inside the
commands that need them, so ``llmzip --help`` and ``llmzip info`` start in well under a
second.
"""

import json
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


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file (stable keys).")
def info(files, as_json):
    """Describe archives without loading a model.

    Shows the format version, model identity, archive and input sizes, the ratio (archive
    size / input size, as xz --list reports it), where the stored bytes go, chunks by kind,
    the smallest logit margin and the creation metadata. Every container check runs
    (trailer, header, records, fallback checksums); only `verify` checks that the memory
    vectors regenerate their chunks. A file that fails gets one line on stderr, the
    others are still described, and the exit status is 1.
    """
    from llmzip.container import read_header  # torch-free, like this command

    described = []
    for path in files:
        try:
            described.append((path, read_header(path)))
        except LmzError as exc:
            click.echo(f"llmzip: error: {_show(path)}: {exc}", err=True)
            continue
        if not as_json:
            click.echo(("\n" if len(described) > 1 else "") + _describe(*described[-1]))
    if as_json:
        objects = [{"file": path, **archive.to_dict()} for path, archive in described]
        click.echo(json.dumps(objects, indent=2, sort_keys=True))
    elif len(described) > 1:
        archive_size = sum(archive.archive_size for _, archive in described)
        input_size = sum(archive.header.input_size for _, archive in described)
        click.echo(
            f"\ntotal: {len(described)} files, archive {archive_size:,} B, input {input_size:,} B, "
            f"ratio {_ratio(archive_size / input_size if input_size else None)}"
        )
    if len(described) < len(files):
        sys.exit(1)


def _describe(path, archive) -> str:
    """The human-readable block `llmzip info` prints for one archive."""
    counts, input_bytes = archive.chunk_counts, archive.input_bytes
    chunks = ", ".join(f"{counts[kind]} {kind} ({input_bytes[kind]:,} B of input)" for kind in counts)
    min_margin = "-" if archive.min_margin is None else f"{archive.min_margin:.6g}"
    lines = [
        _show(path),
        f"  format version  {archive.version[0]}.{archive.version[1]}",
        f"  archive size    {archive.archive_size:,} B",
        f"  input size      {archive.header.input_size:,} B, xxh64 {archive.header.input_xxh64:016x}",
        f"  ratio           {_ratio(archive.ratio)}",
        f"  stored bytes    vectors {archive.vector_bytes:,} B, fallback {archive.fallback_bytes:,} B, "
        f"overhead {archive.overhead_bytes:,} B",
        f"  chunks          {sum(counts.values())}: {chunks}",
        f"  min margin      {min_margin}",
        f"  vector dim      {archive.header.vector_dim}",
    ]
    for title, fields in (("model", archive.header.model), ("settings", archive.header.settings),
                          ("metadata", archive.header.metadata)):
        lines.append(f"  {title}")
        width = max((len(_show(key)) for key in fields), default=0)
        lines.extend(f"    {_show(key):<{width}}  {_show(value)}" for key, value in fields.items())
    return "\n".join(lines)


def _show(value) -> str:
    """Printable strings as they are, anything else as JSON: a hostile archive's strings
    cannot put control characters (terminal escapes, newlines) on the user's terminal."""
    return value if isinstance(value, str) and value.isprintable() else json.dumps(value)


def _ratio(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.3f} (archive / input)"


def main(argv=None):
    """Console entry point: run the click group and map errors to exit codes."""
    try:
        # standalone_mode=False: errors come here to be mapped; ctx.exit(n) comes back as n.
        status = cli.main(args=argv, prog_name="llmzip", standalone_mode=False)
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
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
