"""Does each exported vector regenerate its chunk alone? Checked as a user would, with plain
transformers and no llmzip code in the decode.

    python bench/regenerate_alone.py ARCHIVE INPUT [--model default]

Exports ``ARCHIVE``'s vectors (``llmzip export``: safetensors, one row a vector), loads the
archive's model directory with ``AutoModelForCausalLM`` (fp32), and for each row feeds the
BOS embedding and the vector, then decodes greedily for the row's token count; the row
regenerates its chunk if the decoded text is the chunk's bytes of ``INPUT``. Prints one
line a row and the share of ``INPUT``'s bytes that vectors regenerated alone
(issue 29's measure; tests/test_standalone.py runs the same loop on the fixture model).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmzip import codec
from llmzip.model import model_directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("input")
    parser.add_argument("--model", default="default", help="the archive's model spec (default: the default model)")
    args = parser.parse_args()
    data = Path(args.input).read_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "vectors.safetensors"
        path.write_bytes(codec.export(Path(args.archive).read_bytes()))
        with safe_open(str(path), framework="pt") as opened:
            vectors, rows = opened.get_tensor("vectors"), json.loads(opened.metadata()["llmzip.chunks"])
    directory = model_directory(args.model)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    embed = model.get_input_embeddings()
    held = 0
    with torch.no_grad():
        bos = embed(torch.tensor([[model.config.bos_token_id]]))  # (1, 1, d)
        for vector, row in zip(vectors, rows):
            out = model(inputs_embeds=torch.cat([bos, vector.float()[None, None]], dim=1), use_cache=True)  # BOS, vector
            ids = []
            for _ in range(row["n_tokens"]):
                ids.append(int(out.logits[0, -1].argmax()))
                out = model(input_ids=torch.tensor([[ids[-1]]]), cache=out.cache, use_cache=True)
            text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).encode()
            alone = text == data[row["offset"] : row["offset"] + row["length"]]
            held += row["length"] if alone else 0
            print(f"offset {row['offset']:>6}, {row['length']:>4} B, {row['n_tokens']:>3} tokens, "
                  f"standalone {row['standalone']}: {'regenerated' if alone else 'NOT regenerated'}", flush=True)
    print(f"{len(rows)} vectors; regenerated alone: {held:,} of {len(data):,} input bytes ({100 * held / len(data):.1f} %)")
    if held != sum(row["length"] for row in rows if row["standalone"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
