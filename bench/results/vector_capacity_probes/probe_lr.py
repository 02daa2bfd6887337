import sys, time, torch
sys.path.insert(0, "/work/main/bench")
from corpus import read_rows
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig, fitted_start
from llmzip.kinds.memory_int import IntVectorForm as LowRankForm, offset_for
import argparse
ap = argparse.ArgumentParser()
ap.add_argument("--rank", type=int); ap.add_argument("--bits", type=int, default=8)
ap.add_argument("--rows", default="0-3"); ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--csv", default="/work/shared/data/memory-token-paper/raschka_chunks_1000.csv")
ap.add_argument("--lr", default="1.0"); ap.add_argument("--max-steps", type=int, default=600)
ap.add_argument("--batch", type=int, default=8); ap.add_argument("--identity", action="store_true")
a = ap.parse_args()
torch.set_num_threads(1)
lo, hi = map(int, a.rows.split("-"))
rows = list(range(lo, hi + 1))
loaded = load_model("default")
texts = read_rows(hi + 1, a.csv)
chunks = [loaded.tokenizer(texts[r], add_special_tokens=False).input_ids[: a.tokens] for r in rows]
fp = loaded.identity.weights_fingerprint
d = loaded.model.config.hidden_size
for lr in [float(x) for x in a.lr.split(",")]:
  form = LowRankForm(a.rank, a.bits, offset_for(fp), d) if a.rank else None

  cfg = TrainConfig(lr=lr, max_steps=a.max_steps, batch_size=a.batch)
  t0 = time.perf_counter()
  def rep(i, r):
      print(f"row {rows[i]} n={len(chunks[i])} steps {r.steps} acc {r.token_accuracy:.3f} exact {r.exact} accepted {r.accepted} margin {r.decode_min_margin:.2f} bytes {len(r.payload)} t {time.perf_counter()-t0:.0f}", flush=True)
  res = MemoryTrainer(loaded.model, cfg, start=fitted_start(fp), form=form).train(chunks, on_chunk_done=rep)
  print("SUMMARY lr", lr, vars(a), "accepted", sum(r.accepted for r in res), "/", len(res), "mean steps", sum(r.steps for r in res)/len(res), "time", round(time.perf_counter()-t0))
