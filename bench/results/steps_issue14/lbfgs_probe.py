"""Scratch probe: evaluations to margin 0.5 with torch.optim.LBFGS (strong Wolfe) on single chunks."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # the checkout this file lies in (bench/results/steps_issue14/)
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, str(REPO / "bench"))
from corpus import read_rows
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig, fitted_start
from llmzip.decode import prompt_embeddings, decode
torch.set_num_threads(1)
rows = [int(r) for r in sys.argv[1].split(",")]
history = int(sys.argv[2]) if len(sys.argv) > 2 else 20
scale_lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
loaded = load_model("default"); model = loaded.model
texts = read_rows(max(rows) + 1)
trainer = MemoryTrainer(model, TrainConfig(train_dtype="float32"), start=fitted_start(loaded.identity.weights_fingerprint))
for r in rows:
    ids = loaded.tokenizer(texts[r], add_special_tokens=False).input_ids
    chunk = trainer._start(0, ids, 0.5)
    v = chunk.params.clone().requires_grad_()
    t = torch.tensor(ids); text = model.get_input_embeddings()(t[None, :-1])
    evals = [0]; done = [False]; began = time.perf_counter()
    def closure():
        evals[0] += 1
        h = model.base_model(inputs_embeds=torch.cat([prompt_embeddings(model, v[None]), text], 1)).last_hidden_state[0, 1:]
        logits = trainer._logits(h)
        loss = F.cross_entropy(logits, t)
        with torch.no_grad():
            top = logits.topk(2, -1); hit = top.indices[:, 0] == t
            gap = logits.gather(1, t[:, None])[:, 0] - torch.where(hit, top.values[:, 1], top.values[:, 0])
            if gap.min() >= 0.5: done[0] = True
        print(f"  row {r} eval {evals[0]} loss {loss.item():.3f} acc {hit.float().mean():.2f} margin {gap.min():.2f}", flush=True)
        if done[0]:
            return loss.detach()  # no backward needed
        v.grad = None; loss.backward(); return loss
    opt = torch.optim.LBFGS([v], lr=scale_lr, max_iter=1, history_size=history, line_search_fn="strong_wolfe")
    while not done[0] and evals[0] < 400:
        opt.step(closure)
    d = decode(model, v.detach().half(), len(ids))
    print(f"row {r}: evals {evals[0]} done {done[0]} exact {d.token_ids == ids} decode margin {d.min_margin:.2f} {time.perf_counter()-began:.0f}s", flush=True)
