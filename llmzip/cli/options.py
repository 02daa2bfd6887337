"""Options that several commands take, each declared once, with its choices and defaults
read from the code that uses them (llmzip.config, the kinds); and the torch set-up every
model command runs first (--device, --threads).

Torch-free at import, like the whole CLI until a command needs a model.
"""

import click

from llmzip.config import DEFAULT_MODEL, DEFAULT_THREADS, OPTIMIZERS, TrainConfig
from llmzip.errors import LmzError

TRAIN = TrainConfig()  # the defaults the help texts show


def options(*decorators):
    """One decorator applying ``decorators`` in the order written (the first is listed first in --help)."""

    def apply(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


# ---------------------------------------------------------------------------------------
# Files, messages


def files_argument(metavar: str, *, recursive: bool = True):
    """FILE... (- for stdin), with -r/--recursive where a directory may stand for its files."""
    argument = click.argument("files", nargs=-1, required=True, metavar=metavar, type=click.Path(allow_dash=True))
    if not recursive:
        return argument
    return options(argument, click.option(
        "-r", "--recursive", is_flag=True, help="Operate on every file below each directory given, as gzip -r does."))


def output_options(default: str):
    """-o/-c/-f of the commands that write one output per input."""
    return options(
        click.option("-o", "--output", type=click.Path(allow_dash=True), help=f"Output path (default {default}; - for stdout; one FILE only)."),
        click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to stdout (not with -o; one FILE only)."),
        force_option,
        click.option("-k", "--keep", is_flag=True, help="Keep the input (llmzip always does; accepted for gzip users)."),
    )


force_option = click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
verbosity = options(  # the commands that talk while they work
    quiet_option,
    click.option("-v", "--verbose", is_flag=True, help="More detail on stderr."),
    click.option("--no-progress", is_flag=True, help="No progress bar (it is hidden anyway when stderr is not a terminal)."),
)


# ---------------------------------------------------------------------------------------
# The model and torch


def model_option(*, from_archive: bool):
    """--model: the model to train with (compress, bench), or the archive's (extract, verify)."""
    if from_archive:
        return click.option("--model", default=None, help="Model spec [default: the one each archive names].")
    return click.option("--model", default=DEFAULT_MODEL, show_default=True,
                        help=f"{DEFAULT_MODEL}, org/name@<commit>, a model directory or a .gguf file.")


THREADS_HELP = (
    "Torch CPU threads [default: "
    + (f"{DEFAULT_THREADS}" if DEFAULT_THREADS else "the cores other processes leave free (the load average), "
       "at most torch's choice: the physical cores, or $OMP_NUM_THREADS")
    + "]. Threads that share busy cores wait for each other: on a busy 2-core machine two "
    "threads ran 7-13x slower than one (idle, 1.7x faster)."
)
torch_options = options(
    click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ..."),
    click.option("--threads", type=click.IntRange(1), default=DEFAULT_THREADS, help=THREADS_HELP),
)


def use_torch(device: str, threads: int | None) -> None:
    """What every model command does before its work: refuse a --device this torch cannot
    use, then run the rest of the command with --threads CPU threads (restored when the
    command ends, however it ends); without --threads, the cores other processes leave
    free (:func:`llmzip.model.free_cores`)."""
    from llmzip.model import free_cores, torch_threads

    check_device(device)
    click.get_current_context().with_resource(torch_threads(threads if threads is not None else free_cores()))


def workers_option(work: str):
    """--workers N: ``work`` ("Train, verify and LM-code", "Decode") on Ray workers."""
    return click.option("--workers", type=click.IntRange(1),
                        help=f"{work} on N Ray workers, each with its own model (one GPU each with --device cuda); a "
                             f"local Ray instance, or the cluster $RAY_ADDRESS names. Needs pip install "
                             f"\"llmzip[ray]\". --threads defaults to 1.")


def use_workers(workers: int | None, device: str, threads: int | None) -> int | None:
    """use_torch for a command with --workers: with workers, refuse a missing Ray before
    any model loads and default --threads to 1 (each worker is one process). Returns the
    thread count the command runs with (None: use_torch's default)."""
    threads = 1 if threads is None and workers is not None else threads
    use_torch(device, threads)
    if workers is not None:
        from llmzip.distributed import import_ray

        import_ray()
    return threads


def worker_pool(workers: int, model: str, device: str, load: dict | None = None):
    """A Ray worker pool of ``workers`` actors holding ``model``, with this process's torch
    thread count in each (archives as a single process writes them)."""
    import torch

    from llmzip import distributed

    return distributed.WorkerPool(workers, model=model, device=device, threads=torch.get_num_threads(), load=load)


def check_device(device: str) -> None:
    """Refuse, in one line and before any work, a --device this torch build cannot use
    (torch itself would fail later with an AssertionError or a RuntimeError)."""
    import torch

    from llmzip.cli.messages import plural

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise LmzError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise LmzError(
                f"--device {device}: this torch ({torch.__version__}) is a CPU-only build; install the "
                f"CUDA build that matches your driver (PyTorch's Get Started page gives the "
                f"command; README, 'Set up and run')"
            )
        if not torch.cuda.is_available():
            raise LmzError(f"--device {device}: torch sees no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise LmzError(f"--device {device}: there {'is' if count == 1 else 'are'} only {plural(count, 'CUDA device')}")
        return
    try:
        if parsed.type == "meta":
            raise RuntimeError("it holds no data")
        torch.empty(1, device=parsed)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, it says the device is unusable
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LmzError(f"--device {device}: not usable with this torch ({reason})") from None


# ---------------------------------------------------------------------------------------
# Training (compress, bench): each option is a TrainConfig field, its default shown from there


def train_option(name: str, kind, text: str, *, default=None):
    """``--name`` for TrainConfig field ``name`` (dashes for underscores); its help ends
    with the field's default (or ``default``, said in words)."""
    field = name.replace("-", "_")
    shown = default if default is not None else getattr(TRAIN, field)
    return click.option(f"--{name}", field, type=kind, help=f"{text} [default: {shown}].")


def training_options(unit: str, *, steps_text: str = ""):
    """The options compress and bench share; ``unit`` is what one vector holds ("chunk", "row")."""
    return options(
        train_option("max-steps", click.IntRange(1), f"Optimiser steps per {unit}{steps_text}"),
        train_option("margin", click.FloatRange(0, min_open=True), "Training margin: a vector stops training once "
                     f"every position's token beats the runner-up by this many logits. It is kept only if the "
                     f"extract decode of its stored form still wins by {TRAIN.verify_margin} everywhere; the archive "
                     f"records the smallest gap that decode measured (info: min margin)"),
        train_option("batch-size", click.IntRange(1), f"{unit.capitalize()}s trained together"),
    )


optimizer_option = train_option("optimizer", click.Choice(OPTIMIZERS), "How vectors are optimised",
                                default="rprop for coded vectors with --corrections above 0; adam for the others")


def train_config(device: str, **given):
    """A TrainConfig with the options the user gave (None = the documented default)."""
    return TrainConfig(**{name: value for name, value in given.items() if value is not None}, device=device)
