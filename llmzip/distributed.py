"""Model work on Ray workers: many processes, GPUs or nodes (``--workers N``).

A :class:`WorkerPool` starts ``N`` Ray actors, each holding one loaded copy of the model
(``num_gpus=1`` each when the device is CUDA). It serves two protocols:

* a *group runner* for :class:`llmzip.codec.LmzCompressor`: the compressor hands it the
  groups it has to train, the pool sends each group to the next idle actor and yields
  ``(group number, entries)`` as results arrive; the compressor journals each as it
  comes, so a rerun resumes;
* a *call runner* for the kinds (:func:`llmzip.kinds.base.map_calls`): ``map(function,
  calls, units, on_done)`` runs ``function(model, *call)`` on the actors and yields the
  results in call order. Compress runs its verification decodes and its lm coding through
  it, extract and verify the archive's decode groups.

One pool serves any number of compressions at once (the CLI compresses several files
through one pool), so the work of all inputs shares the workers.

Archives are byte-identical to a single-process run on the same kind of device: a group's
result depends only on its chunks and the training settings (train.py: fixed groups,
per-chunk seeds), a call's only on its arguments (the kinds cut their work at the same
places with or without workers), every actor runs with the same torch thread count as the
parent, and the results merge by index, whatever order they finish in.

Faults: an actor that dies (killed, out of memory, node lost) is restarted by Ray
(``max_restarts``) and its task in flight is retried there (``max_task_retries``); only
that task's work is lost. If the retries run out the command fails with an LmzError, and
a compression's journal keeps every group that had finished.

Ray: a local instance (``num_cpus=N``, no dashboard, quiet logs) unless ``RAY_ADDRESS``
names an existing cluster, or the caller has already called ``ray.init()``. Nothing imports
this module, hence Ray, unless workers are asked for.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from pathlib import Path

from llmzip.errors import LmzError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "llmzip[ray]"'


def import_ray():
    """Ray, or one clear LmzError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LmzError(f"--workers needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class _Worker:
    """One Ray actor: a loaded model that trains groups (LmzCompressor.train_group) and
    runs the kinds' calls (:func:`llmzip.kinds.base.map_calls`)."""

    def __init__(self, model: str, device: str, threads: int, load: dict):
        import torch

        from llmzip.model import load_model

        self.threads = threads
        torch.set_num_threads(threads)
        self.compressors = {}
        try:
            self.loaded, self.error = load_model(model, device=device, **load), None
        except Exception as exc:  # noqa: BLE001 - raised again by describe(), as itself
            self.loaded, self.error = None, exc

    def describe(self) -> tuple[dict, int]:
        """(the model identity this actor loaded, its process id), or the load's error."""
        if self.error is not None:
            raise self.error
        return self.loaded.identity.to_dict(), os.getpid()

    def train_group(self, config, chunks: dict, group: list[int], budgets: list[int]):
        """The driver's group, with the step budgets its compressor gave (this actor's
        compressor knows the training settings, not the cutting ones)."""
        import torch

        from llmzip.codec import LmzCompressor

        torch.set_num_threads(self.threads)  # per call: Ray may run calls on another thread
        key = repr(config)
        if key not in self.compressors:
            self.compressors[key] = LmzCompressor(loaded=self.loaded, train=config)
        return self.compressors[key].train_group(chunks, group, budgets, None)

    def call(self, function, call: tuple):
        import torch

        torch.set_num_threads(self.threads)
        return function(self.loaded, *call)


class WorkerPool:
    """``workers`` Ray actors holding ``model`` on ``device``: a group runner for
    :class:`llmzip.codec.LmzCompressor` (``group_runner=pool``) and a call runner for
    :class:`llmzip.codec.LmzDecompressor` (``runner=pool``). Close it (or use it as a
    context manager) to end the actors, and the local Ray instance if it started one.

    ``threads``: torch CPU threads in each actor (default 1); use the parent's count for
    archives byte-identical to a single-process run. ``max_retries``: restarts of a dead
    actor, and retries of the task it was running. ``load``: more keyword arguments of
    :func:`llmzip.model.load_model` (extract passes the dtype and attention an archive
    records).
    """

    def __init__(self, workers: int, *, model: str, device: str = "cpu", threads: int = 1, max_retries: int = 3,
                 load: dict | None = None):
        if workers < 1:
            raise LmzError(f"workers must be at least 1, got {workers}")
        ray = self._ray = import_ray()
        self.workers = workers
        self._started_ray = False
        self._closed = False
        if not ray.is_initialized():
            sigterm = _sigterm_handler()
            options = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False,
                           runtime_env=_runtime_env())
            if os.environ.get("RAY_ADDRESS"):
                ray.init(**options)  # an existing cluster; its resources are its own
            else:
                ray.init(num_cpus=workers, object_store_memory=128 << 20, **options)  # GPUs: Ray counts them
            self._started_ray = True
            _restore_sigterm_handler(sigterm)
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        if _is_cuda(device) and gpus < workers:
            self.close()
            raise LmzError(f"--workers {workers} with --device {device} needs one GPU per worker; Ray sees {gpus:g}")
        if cpus < workers:  # each worker takes one CPU: more would wait forever
            self.close()
            raise LmzError(f"--workers {workers} needs one CPU per worker; the Ray cluster has {cpus:g}")
        spec = str(Path(model).resolve()) if os.path.exists(model) else model  # actors may run elsewhere
        actor = ray.remote(num_cpus=1, num_gpus=1 if _is_cuda(device) else 0,
                           max_restarts=max_retries, max_task_retries=max_retries)(_Worker)
        # Each actor sees its own GPU as cuda:0 (Ray sets CUDA_VISIBLE_DEVICES).
        self.actors = [actor.remote(spec, "cuda" if _is_cuda(device) else device, threads, load or {})
                       for _ in range(workers)]
        try:
            described = ray.get([a.describe.remote() for a in self.actors])
        except Exception as exc:  # noqa: BLE001 - e.g. the model does not load on a worker
            self.close()
            raise _as_lmz_error(ray, exc, "starting the Ray workers") from None
        self.identity = described[0][0]
        self.pids = [pid for _, pid in described]
        if any(identity != self.identity for identity, _ in described):
            self.close()
            raise LmzError("the Ray workers loaded different models (check that every node has the same model files)")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: deque = deque()  # (submit(actor) -> task ref, what it is, tag, result queue)
        self._idle = list(self.actors)
        self._running: dict = {}  # task ref -> (actor, what it is, tag, result queue)
        self._broken = None  # the error that stopped the dispatcher, if one did
        self._thread = threading.Thread(target=self._dispatch, name="llmzip-workers", daemon=True)
        self._thread.start()

    def __call__(self, compressor, chunks, todo, on_step=None):
        """The group-runner protocol (llmzip.groups.train_groups_here): yield ``(number,
        entries)`` for each ``(number, group, budgets)`` in ``todo``, in the order they finish."""
        self.check_model(compressor.loaded)
        if not todo:
            return
        needed = {index: chunks[index] for _, group, _ in todo for index in group}
        shared = self._ray.put(needed)
        config = compressor.train_config
        tasks = [(lambda actor, group=group, budgets=budgets: actor.train_group.remote(config, shared, group, budgets),
                  f"training group {number}", number) for number, group, budgets in todo]
        yield from self._run(tasks)

    def map(self, function, calls: list, units: list, on_done=None):
        """The call-runner protocol (:func:`llmzip.kinds.base.map_calls`): yield
        ``function(model, *call)`` for each call, in call order, run on the workers;
        ``on_done(units[i])`` as call ``i`` finishes."""
        if not calls:
            return
        name = getattr(function, "__qualname__", "a call")
        tasks = [(lambda actor, call=call: actor.call.remote(function, call), f"{name} ({number + 1} of {len(calls)})",
                  number) for number, call in enumerate(calls)]
        finished, following = {}, 0
        for number, result in self._run(tasks):
            if on_done is not None:
                on_done(units[number])
            finished[number] = result
            while following in finished:
                yield finished.pop(following)
                following += 1

    def check_model(self, loaded) -> None:
        """Refuse to run ``loaded``'s work on workers that hold another model."""
        if loaded.identity.to_dict() != self.identity:
            raise LmzError("the Ray workers hold another model than the driver")

    def _run(self, tasks: list):
        """Queue ``tasks`` ((submit, what, tag) each) for the idle actors; yield ``(tag,
        result)`` in the order they finish."""
        results: queue.Queue = queue.Queue()
        with self._lock:
            if self._broken is not None:
                raise self._broken
            self._pending.extend((submit, what, tag, results) for submit, what, tag in tasks)
        self._wake.set()
        for _ in tasks:
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def _dispatch(self) -> None:
        try:
            self._dispatch_until_closed()
        except Exception as exc:  # noqa: BLE001 - Ray itself failed: nobody may wait forever
            error = _as_lmz_error(self._ray, exc, "the Ray worker pool")
            with self._lock:
                waiting = [item[-1] for item in self._pending] + [item[-1] for item in self._running.values()]
                self._pending.clear()
                self._running.clear()
                self._broken = error
            for results in waiting:
                results.put(error)

    def _dispatch_until_closed(self) -> None:
        ray = self._ray
        while not self._closed:
            with self._lock:
                while self._pending and self._idle:
                    submit, what, tag, results = self._pending.popleft()
                    actor = self._idle.pop(0)
                    self._running[submit(actor)] = (actor, what, tag, results)
                running = list(self._running)
            if not running:
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            ready, _ = ray.wait(running, num_returns=1, timeout=0.2)
            for task in ready:
                actor, what, tag, results = self._running.pop(task)
                try:
                    results.put((tag, ray.get(task)))
                except Exception as exc:  # noqa: BLE001 - handed to the work that asked
                    results.put(_as_lmz_error(ray, exc, what))
                with self._lock:
                    self._idle.append(actor)

    def close(self) -> None:
        """End the actors (and the local Ray instance this pool started); a compression
        still waiting for groups gets an LmzError instead of waiting forever."""
        if self._closed:
            return
        self._closed = True
        if getattr(self, "_thread", None) is not None:
            self._thread.join()
            with self._lock:
                waiting = [item[-1] for item in self._pending] + [item[-1] for item in self._running.values()]
                self._pending.clear()
                self._running.clear()
            for results in waiting:
                results.put(LmzError("the Ray workers were closed before this work finished"))
        if not self._started_ray:  # a cluster that outlives this pool: end its actors only
            for actor in getattr(self, "actors", []):
                try:
                    self._ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
        else:
            self._ray.shutdown()
            self._started_ray = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _sigterm_handler():
    import signal

    return signal.getsignal(signal.SIGTERM)


def _restore_sigterm_handler(handler) -> None:
    """ray.init replaces the SIGTERM handler (its own: sys.exit(15), and a C-level stack
    trace) over the one the CLI set (cleanup, "llmzip: terminated", 143): put it back."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _runtime_env() -> dict:
    """Ship this llmzip package to the workers (the same code as the driver, also on
    nodes that have another version or none), unless the user set a runtime env."""
    return {"py_modules": [str(Path(__file__).resolve().parent)]}


def _as_lmz_error(ray, exc: BaseException, what: str) -> BaseException:
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, LmzError):
        return cause  # the worker's own LmzError, with its message
    first = (str(cause if isinstance(cause, BaseException) else exc).strip().splitlines() or [type(exc).__name__])[0]
    return LmzError(f"{what} failed on Ray: {first}")
