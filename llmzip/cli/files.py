"""Inputs and outputs: which files a command works on (-r), what each writes, and writing
it safely: refused before any work where the arguments show a problem, atomic, with the
input's permissions and times, never archive bytes to a terminal."""

import os
import stat
import sys
import tempfile

import click

from llmzip.cli.messages import FileError, each, show
from llmzip.errors import InputError

SUFFIX = ".lmz"
JOURNAL_SUFFIX = SUFFIX + ".journal"  # what an interrupted compress leaves beside its output


def expand(files, recursive: bool, *, archives: bool) -> list[str]:
    """``files`` with each directory replaced, under -r, by the regular files below it
    (sorted; symbolic links are not followed): with ``archives`` those ending in .lmz
    (extract, verify, info), else those that do not (compress; nor its journals).
    Without -r a directory stays, and its command says it is one."""
    if not recursive:
        return list(files)
    found = []
    for path in files:
        if path == "-" or not os.path.isdir(path):
            found.append(path)
            continue
        for root, directories, names in os.walk(path):
            directories.sort()
            for name in sorted(names):
                candidate = os.path.join(root, name)
                if os.path.islink(candidate) or not os.path.isfile(candidate):
                    continue
                if name.endswith(SUFFIX) == archives and not name.endswith(JOURNAL_SUFFIX):
                    found.append(candidate)
    return found


def one_file_only(files, output, to_stdout) -> None:
    if len(files) > 1 and (output is not None or to_stdout or "-" in files):
        raise click.UsageError("-o, -c and - (stdin) take one FILE only", click.get_current_context())


def add_suffix(force: bool):
    """compress's output name for FILE: FILE.lmz; FILE.lmz itself is refused, as gzip
    refuses x.gz, unless -f."""

    def derive(name: str) -> str:
        if name.endswith(SUFFIX) and not force:
            raise FileError(name, f"already has {SUFFIX} suffix (unchanged; -f compresses it again)")
        return name + SUFFIX

    return derive


def strip_suffix(name: str) -> str:
    """extract's output name for FILE.lmz: FILE."""
    if not name.endswith(SUFFIX) or name == SUFFIX:
        raise FileError(name, f"does not end in {SUFFIX}; name the output with -o")
    return name[: -len(SUFFIX)]


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise FileError(path, "no such file") from None
    except IsADirectoryError:
        raise FileError(path, "is a directory") from None
    except OSError as exc:
        raise FileError(path, f"cannot read: {exc.strerror}") from None


def source_stat(path: str) -> os.stat_result | None:
    """The input whose permissions and times an output takes, as gzip and zstd do: a
    regular file (not stdin, a pipe or a device), stat'ed before it is read."""
    if path == "-":
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # read_input says why
    return status if stat.S_ISREG(status.st_mode) else None


def in_place(output: str) -> bool:
    """An existing output that is not a regular file (/dev/null, a FIFO, a device) is
    written in place, as gzip and zstd do: no -f needed, no temporary file, no rename."""
    return os.path.exists(output) and not os.path.isfile(output) and not os.path.isdir(output)


def probe_directory(directory: str) -> None:
    """Raise OSError unless a file can be created in ``directory`` (os.access cannot
    tell: it says yes to root on a read-only mount and in /proc)."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".llmzip-probe.", suffix=".tmp")
    os.close(handle)
    os.unlink(name)


def output_path(file: str, output: str | None, to_stdout: bool, derive) -> str | None:
    """None means stdout. ``derive(file)`` gives the default output name."""
    if to_stdout and output is not None:
        raise click.UsageError("-c/--stdout and -o/--output cannot be used together", click.get_current_context())
    if to_stdout or output == "-" or (output is None and file == "-"):
        return None
    return output if output is not None else derive(file)


def check_output(output: str | None, force: bool, *, source: str, binary: str | None) -> None:
    """Refuse before any work (before a model loads): an existing output without -f, the
    input as output, ``binary`` output ("archive bytes"; None: text) to a terminal, or a
    directory llmzip cannot write in."""
    if output is None:
        if binary and sys.stdout.isatty():
            raise InputError(f"refusing to write {binary} to a terminal; use -o FILE or redirect stdout")
        return
    if source != "-" and os.path.exists(source) and os.path.exists(output) and os.path.samefile(source, output):
        raise FileError(output, "output would overwrite the input")
    if os.path.isdir(output):
        raise FileError(output, "is a directory")
    if in_place(output):
        return
    if os.path.exists(output) and not force:
        raise FileError(output, "already exists; use -f to overwrite")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise FileError(output, f"{show(directory)} is not a directory")
        raise FileError(output, f"directory {show(directory)} does not exist")
    try:
        probe_directory(directory)
    except OSError as exc:
        raise FileError(output, f"cannot write in {show(directory)}: {exc.strerror}") from None


def jobs(files, output, to_stdout: bool, force: bool, derive, *, binary: str | None):
    """(file, target, input stat, input bytes) for each file whose output can be written,
    refused before any model loads, and how many were refused (each with its line on
    stderr). Exits 1 if none is left."""
    found = []

    def job(file):
        target = output_path(file, output, to_stdout, derive)
        check_output(target, force, source=file, binary=binary)
        found.append((file, target, source_stat(file), read_input(file)))

    failed = each(files, job)
    if not found:
        sys.exit(1)
    return found, failed


def write_output(output: str | None, data: bytes, force: bool, *, like: os.stat_result | None = None) -> None:
    """Write to stdout (output None) or atomically to a file: a temporary file in the
    target directory, fsync, rename. A failure leaves no file under the final name.

    A new file gets the permission bits and times of ``like`` (the input, as gzip and
    zstd do), else 0666 minus the umask, as any newly created file.
    """
    if output is None:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:  # a full disk or closed pipe behind stdout
            raise InputError(f"stdout: cannot write: {exc.strerror}") from None
        return
    if in_place(output):
        # A device or pipe (/dev/null, /dev/full, a FIFO) is written in place: renaming a
        # temporary file over it would replace the device node itself.
        try:
            with open(output, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise FileError(output, f"cannot write: {exc.strerror}") from None
        return
    directory = os.path.dirname(os.path.abspath(output))
    try:
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix="." + os.path.basename(output) + ".", suffix=".tmp", delete=False)
    except OSError as exc:
        raise FileError(output, f"cannot write in {show(directory)}: {exc.strerror}") from None
    try:
        with handle:
            handle.write(data)
            handle.flush()
            # tempfile creates 0600; the output is an ordinary file (see the docstring).
            os.fchmod(handle.fileno(), stat.S_IMODE(like.st_mode) & 0o777 if like else 0o666 & ~_umask())
            os.fsync(handle.fileno())
        if like is not None:
            os.utime(handle.name, ns=(like.st_atime_ns, like.st_mtime_ns))
        if os.path.exists(output) and not force:  # appeared while we worked
            raise FileError(output, "already exists; use -f to overwrite")
        os.replace(handle.name, output)
    except OSError as exc:
        raise FileError(output, f"cannot write: {exc.strerror}") from None
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    _fsync_directory(directory)


def _umask() -> int:
    """The process umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
