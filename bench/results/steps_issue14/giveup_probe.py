"""Scratch: GPL chunks (fit at the defaults) and a random-text chunk (cannot fit) at the codec's defaults,
with per-step settled loss and give-up."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # the checkout this file lies in (bench/results/steps_issue14/)
import sys, json, random, string, torch
sys.path.insert(0, str(REPO / "bench"))
from llmzip.codec import LmzCompressor
from llmzip.chunking import split
from llmzip.config import TrainConfig
torch.set_num_threads(1)
out, n_gpl = sys.argv[1], int(sys.argv[2])
comp = LmzCompressor(train=TrainConfig())
tok = comp.loaded.tokenizer
gpl = [c.token_ids for c in split((REPO / "fixtures/compat/default-model-memory-int.txt").read_bytes(), tok, max_tokens=64) if c.eligible][:n_gpl]
rng = random.Random(0)
noise = " ".join("".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(2, 9))) for _ in range(200))
lost = [tok(noise, add_special_tokens=False).input_ids[:64]]
ids = gpl + lost
rows = [f"gpl{i}" for i in range(len(gpl))] + ["random"]
trainer = comp.trainer
evaluate = trainer._evaluate
f = open(out, "w")
def traced(vectors, active):
    e = evaluate(vectors, active)
    for i, c in enumerate(active):
        f.write(json.dumps({"row": rows[c.index], "step": c.steps, "loss": round(e.loss[i].item(), 4), "settled": round(e.settled_loss[i].item(), 4),
                            "checked": bool(e.checked[i]), "short": len(c.short()) if bool(e.checked[i]) else None, "gave_up": c.gave_up}) + "\n")
    f.flush()
    return e
trainer._evaluate = traced
res = trainer.train(ids, on_chunk_done=lambda i, r: print(rows[i], r.steps, "accepted", r.accepted, "gave_up", r.gave_up, len(r.corrections), len(r.payload), flush=True))
print("steps", [r.steps for r in res], "accepted", sum(r.accepted for r in res), flush=True)
