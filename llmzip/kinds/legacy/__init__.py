"""Read-only kinds and schemes: what archives written by earlier llmzip versions hold and
this llmzip still reads (format/SPEC.md, "Chunk kinds"), but never writes.

* :mod:`~llmzip.kinds.legacy.memory_int_coded`: kind 5, ``memory-int-coded`` (format 2.3),
  superseded by ``memory-int-lm`` (kind 6), which codes its corrections under the model;
* :mod:`~llmzip.kinds.legacy.lm_scheme1`: scheme 1 of kind ``lm`` (format 2.1 as first
  written), superseded by scheme 2;
* :mod:`~llmzip.kinds.legacy.format1`: the format 1.0 layout of ``memory`` records
  (llmzip 0.1.0).

Their kinds say ``written = False``. Nothing here may be dropped while an archive that
needs it exists (tests/test_compat.py, docs/DESIGN.md, invariant 7); their writers live in the
fixture tooling (``fixtures/legacy_writers.py``), which made the archives their tests read.
This package imports only the wire, the errors and the current kinds it builds on.
"""
