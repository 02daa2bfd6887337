"""``llmzip info`` (gzip's -l) and ``llmzip export``: what an archive holds, read without
a model and without importing torch."""

import json
import sys

import click

from llmzip.cli import files as io
from llmzip.cli.group import cli
from llmzip.cli.messages import about, arrow, each, file_name, holds_vector, plural, ratio, show, standalone_line
from llmzip.cli.options import files_argument, force_option, quiet_option


@cli.command()
@files_argument("FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file (stable keys).")
def info(files, recursive, as_json):
    """Describe archives without loading a model (also: llmzip -l).

    Shows the format version, model identity, archive and input sizes, the ratio (archive
    size / input size, as xz --list reports it), where the stored bytes go, chunks by kind,
    the smallest logit margin and the creation metadata. Every container check runs
    (trailer, header, records, fallback checksums); only `verify` checks that the memory
    vectors regenerate their chunks. - reads an archive from stdin. A file that fails gets
    one line on stderr, the others are still described, and the exit status is 1.
    """
    from llmzip.container import read_header  # torch-free, like this command

    described = []

    def describe(path):
        with about(path):
            described.append((path, read_header(io.read_input(path) if path == "-" else path)))
        if not as_json:
            click.echo(("\n" if len(described) > 1 else "") + _describe(*described[-1]))

    failed = each(io.expand(files, recursive, archives=True), describe)
    if as_json:
        objects = [{"file": path, **_info_dict(archive)} for path, archive in described]
        click.echo(json.dumps(objects, indent=2, sort_keys=True))
    elif len(described) > 1:
        archive_size = sum(archive.archive_size for _, archive in described)
        input_size = sum(archive.header.input_size for _, archive in described)
        click.echo(
            f"\ntotal: {len(described)} files, archive {archive_size:,} B, input {input_size:,} B, "
            f"ratio {ratio(archive_size / input_size if input_size else None)}"
        )
    if failed:
        sys.exit(1)


def _describe(path, archive) -> str:
    """The human-readable block `llmzip info` prints for one archive."""
    counts, input_bytes = archive.chunk_counts, archive.input_bytes
    chunks = ", ".join(f"{counts[kind]} {kind} ({input_bytes[kind]:,} B of input)" for kind in counts)
    min_margin = "-" if archive.min_margin is None else f"{archive.min_margin:.6g}"
    vectors = [kind for kind in counts if holds_vector(kind) and counts[kind]]  # mean stored bits
    lines = [
        file_name(path),
        f"  format version  {archive.version[0]}.{archive.version[1]}",
        f"  archive size    {archive.archive_size:,} B",
        f"  input size      {archive.header.input_size:,} B, xxh64 {archive.header.input_xxh64:016x}",
        f"  ratio           {ratio(archive.ratio)}",
        "  stored bytes    " + ", ".join(f"{kind} {size:,} B" for kind, size in archive.stored_bytes.items())
        + f", overhead {archive.overhead_bytes:,} B",
        f"  chunks          {sum(counts.values())}: {chunks}",
        *(["  bits per vector " + ", ".join(f"{kind} {8 * archive.stored_bytes[kind] / counts[kind]:,.0f}" for kind in vectors)]
          if vectors else []),
        *(["  standalone      " + standalone_line(archive.standalone_chunks, sum(counts[kind] for kind in vectors),
                                                      archive.standalone_bytes, archive.header.input_size)]
          if vectors else []),
        f"  min margin      {min_margin}",
        f"  vector dim      {archive.header.vector_dim}",
    ]
    info = _info_dict(archive)
    for title in ("model", "settings", "metadata"):
        fields = info[title]
        lines.append(f"  {title}")
        width = max((len(show(key)) for key in fields), default=0)
        lines.extend(f"    {show(key):<{width}}  {show(value)}" for key, value in fields.items())
    return "\n".join(lines)


def _info_dict(archive) -> dict:
    """``ArchiveInfo.to_dict()`` with the model identity under its full field names (a
    format 2 header stores one-letter keys); the raw map if it is not a valid identity."""
    from llmzip.errors import LmzError
    from llmzip.identity import recorded_identity

    info = archive.to_dict()
    try:
        info["model"] = recorded_identity(archive.version, archive.header).to_dict()
    except LmzError:
        pass
    return info


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(allow_dash=True),
              help="The .safetensors file to write; - for stdout (not a terminal).")
@force_option
@quiet_option
def export(file, output, force, quiet):
    """Write the memory vectors of FILE.lmz as safetensors, for use as soft prompts.

    Tensor "vectors" is (N, d), one row per memory chunk in input order: float16 when
    every row is a `memory` vector (stored so), float32 when any is a memory-int* vector
    (rebuilt exactly; fp16 rows convert exactly). The metadata holds, as JSON strings:
    "llmzip.chunks" (per row: chunk index, byte offset, length, token count, recorded
    margin), "llmzip.model" (the model identity) and "llmzip.settings" (the archive's
    settings). format/CODEC.md says how to decode a row. No model is loaded. A summary
    line goes to stderr unless -q.
    """
    target = io.output_path(file, output, False, None)
    io.check_output(target, force, source=file, binary="safetensors bytes")
    from llmzip import codec

    with about(file):
        exported = codec.export(io.read_input(file))
    io.write_output(target, exported, force)
    if not quiet:
        from safetensors.numpy import load

        vectors = load(exported)["vectors"]
        rows, dim = vectors.shape
        click.echo(f"llmzip: {arrow(file, target)}: {plural(rows, 'vector')} ({rows:,} x {dim:,} {vectors.dtype}), "
                   f"{len(exported):,} B", err=True)
