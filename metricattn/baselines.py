"""Trivial baselines on the data split an experiment's runs use (issue 28), for its report.

  python -m metricattn.baselines NAME [--budget quick] [--set KEY=VALUE ...]
      [--out results/NAME/baselines.json]

The data is loaded by the project's own loaders from the config the experiment's runs train
with (`registry.get(NAME).config_arg(budget)` and the budget's overrides, as
`metricattn.experiment` builds it, then the `--set` overrides, e.g. `data.features=xyz` for
another mesh feature variant), with the inputs the model sees. Where the data depends on
the run seed (`data.seed` -1: moons, translation_synthetic) every run seed of the budget has
its own split and the baselines are computed on each and given as mean ± std.

Classification (test accuracy, and val where the experiment has a val split), trained on the
train split with scikit-learn: logistic regression, kNN (k = 15) and a point-wise MLP
(hidden 64, 64, Adam, random_state 0, at most `MLP_MAX_ITER` epochs on at most
`MLP_MAX_ROWS` training rows, a fixed random subsample above that; logistic regression and
kNN on at most `MAX_ROWS`; BLAS on one thread, which the shared 2-core CPU runs fastest).
Inputs: the flattened images as the loader normalises them; mesh_seg: each face's feature is the mean of its three
vertices' features (the model's per-face read-out is the same mean); lra_listops: the
token counts of each sequence (a bag of tokens: the order is lost).

Translation (BLEU and chrF on val and test, scored by the translation task's own scoring,
`metricattn.tasks.Translation.host_eval`, against the references the runs are scored on):
copy the source (the hypothesis is the source sentence) and nearest-neighbour retrieval (the
target of the training pair whose source has the largest TF-IDF cosine, character 1-4-grams
with sublinear term frequency, to the test source; ties to the first pair).

`compute(name, budget)` gives the JSON-able result, `markdown_lines(result)` its report
section ("## Trivial baselines").
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from metricattn import registry
from metricattn.cli import error
from metricattn.errors import UserError
from metricattn.fileio import write_atomic
from metricattn.reporting import fmt, machine_description, markdown_table, mean_std

REPO = Path(__file__).resolve().parents[1]
KNN_K = 15
KD_TREE_MAX_FEATURES = 32
KNN_PROBE = 500  # queries timed per search by knn_search
MAX_ROWS = 200_000      # training rows of logistic regression and kNN (mesh_seg has 1.1M faces)
MLP_MAX_ROWS = 20_000
MLP_MAX_ITER = 200
LR_MAX_ITER = 300
BLAS_THREADS = 1  # the fits' BLAS threads: more spin and slow down on the shared 2-core CPU
TRANSLATION_DATA = ("synthetic_translation", "debian_l10n", "multi30k")


def experiment_config(name: str, budget: str, seed: int = 0, overrides: tuple[str, ...] = ()):
  """The config the experiment's runs of `budget` train with (run seed `seed`), with the
  extra `overrides` (KEY=VALUE) after the budget's."""
  from metricattn.grid import point_config
  exp = registry.get(name)
  path = REPO / exp.config
  if not path.is_file():
    raise UserError(f"experiment {name} needs {exp.config}, which does not exist")
  config = point_config(f"{path}{exp.config_arg(budget)[len(exp.config):]}", {},
                        [*exp.budget(budget).overrides, *overrides])
  config.seed = seed
  if "download" in config.data:
    config.data.download = False  # offline: missing data is a one-line error
  return config


def run_seeds(name: str, budget: str, config) -> list[int]:
  """The run seeds whose data differ (data.seed -1: each run seed), else [0] (one split)."""
  if int(config.data.get("seed", 0)) < 0:
    return list(range(registry.get(name).budget(budget).seeds))
  return [0]


# ---------------------------------------------------------------- classification

def classification_splits(config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """split -> (features float [n, d], labels [n]) as the model sees them (module docstring)."""
  if config.data.name == "mesh_seg":
    from metricattn.data.mesh_seg import load
    out = {}
    for split in ("train", "test"):
      s = load(config, split)
      out[split] = (np.concatenate([f[fa].mean(axis=1) for f, fa in zip(s.features, s.faces)]),
                    np.concatenate(s.face_labels))
    return out
  from metricattn.data import get_dataset
  data = get_dataset(config)
  out = {k: data.splits[k] for k in ("train", *data.eval_splits)}
  if config.data.name == "listops":
    vocab = data.info["vocab_size"]
    return {k: (np.stack([np.bincount(r, minlength=vocab)[1:] for r in x]).astype(np.float32), y)
            for k, (x, y) in out.items()}
  return {k: (x.reshape(len(x), -1), y) for k, (x, y) in out.items()}


def knn_search(x: np.ndarray, queries: np.ndarray) -> str:
  """The kNN's neighbour search for training rows `x`: where scikit-learn's "auto" takes
  brute force although a k-d tree may be faster (16 to KD_TREE_MAX_FEATURES features), the
  faster of the two for the `queries` (the fit plus KNN_PROBE of them, scaled); else "auto".
  Both are exact (the same neighbours). On mesh_seg's 16 HKS features (200,000 rows, 57,000
  queries) the kNN took 3.2-3.7 s with the tree against 15.9-17.2 s by brute force, with
  identical predictions (docs/graph.md); on the noisy HKS (`hks_noisy`) brute force wins."""
  from sklearn.neighbors import NearestNeighbors
  if not 15 < x.shape[1] <= KD_TREE_MAX_FEATURES:
    return "auto"
  probe = queries[np.random.default_rng(0).choice(len(queries), min(KNN_PROBE, len(queries)),
                                                  replace=False)]
  seconds = {}  # estimated for all the queries: the fit, then the probe's time scaled
  for search in ("brute", "kd_tree"):
    start = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=KNN_K, algorithm=search).fit(x)
    fitted = time.perf_counter()
    nn.kneighbors(probe)
    seconds[search] = (fitted - start
                       + (time.perf_counter() - fitted) * len(queries) / len(probe))
  return min(seconds, key=seconds.get)


def classifiers(num_train: int) -> list[tuple[str, object, np.ndarray | None, str]]:
  """(name, estimator, training rows or None for all, note) of the three baselines."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.neighbors import KNeighborsClassifier
  from sklearn.neural_network import MLPClassifier
  def subsample(cap: int) -> tuple[np.ndarray | None, str]:
    if num_train <= cap:
      return None, ""
    rows = np.sort(np.random.default_rng(0).choice(num_train, cap, replace=False))
    return rows, f", on a fixed random {cap:,} of the {num_train:,} training rows"
  (rows, sub), (mlp_rows, mlp_sub) = subsample(MAX_ROWS), subsample(MLP_MAX_ROWS)
  return [
      ("logistic regression", LogisticRegression(max_iter=LR_MAX_ITER), rows,
       f"multinomial logistic regression (L2, C = 1, lbfgs, at most {LR_MAX_ITER} "
       f"iterations){sub}"),
      (f"kNN (k = {KNN_K})", KNeighborsClassifier(KNN_K), rows,
       f"{KNN_K} nearest training points (Euclidean), majority vote{sub}"),
      ("point-wise MLP", MLPClassifier((64, 64), random_state=0, max_iter=MLP_MAX_ITER),
       mlp_rows, f"MLP with hidden layers 64, 64 (ReLU, Adam, at most {MLP_MAX_ITER} "
       f"epochs){mlp_sub}")]


def classification_runs(splits) -> list[tuple[str, dict[str, float], str, float, bool]]:
  """(name, {split: accuracy}, note, seconds, whether it stopped at its iteration limit
  before converging) of each baseline on one set of splits."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.neighbors import KNeighborsClassifier
  from threadpoolctl import threadpool_limits
  x, y = splits["train"]
  out = []
  queries = next(xs for split, (xs, _) in splits.items() if split != "train")
  for name, model, rows, note in classifiers(len(x)):
    start = time.perf_counter()
    fit_x, fit_y = (x, y) if rows is None else (x[rows], y[rows])
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(BLAS_THREADS):
      warnings.simplefilter("always", ConvergenceWarning)
      if isinstance(model, KNeighborsClassifier):
        model.set_params(algorithm=knn_search(fit_x, queries))
      model.fit(fit_x, fit_y)
    stopped = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    acc = {split: float(np.mean(model.predict(xs) == ys))
           for split, (xs, ys) in splits.items() if split != "train"}
    out.append((name, acc, note, time.perf_counter() - start, stopped))
  return out


# ---------------------------------------------------------------- translation

def translation_texts(config) -> dict[str, tuple[list[str], list[str]]]:
  """split -> (source texts, reference texts): the texts the runs' BLEU is computed on."""
  d = config.data
  if d.name == "synthetic_translation":
    from metricattn.data.synthetic_translation import FIRST_WORD, synthetic_splits
    splits = synthetic_splits(int(config.seed if d.seed < 0 else d.seed), d.num_words,
                              d.min_words, d.max_words, d.reorder, d.num_train, d.num_eval)
    return {k: ([" ".join(f"a{w - FIRST_WORD}" for w in s) for s in src], refs)
            for k, (src, _, refs) in splits.items()}
  if d.name == "debian_l10n":
    from metricattn.data.l10n import l10n_texts
    return l10n_texts(d)
  if d.name == "multi30k":
    from metricattn.data.translation import multi30k_texts
    return multi30k_texts(d, (d.src_lang, d.tgt_lang))
  raise UserError(f"no translation baselines for data set {d.name!r}")


def retrieve(train_src: list[str], train_tgt: list[str], queries: list[str]) -> list[str]:
  """For each query, the target of the training pair whose source is most similar (TF-IDF
  cosine of character 1-4-grams, sublinear tf; ties to the first pair)."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 4), sublinear_tf=True)
  train = vec.fit_transform(train_src)
  q = vec.transform(queries)
  best = []
  for start in range(0, len(queries), 256):
    sims = (q[start:start + 256] @ train.T).toarray()
    best += list(np.argmax(sims, axis=1))
  return [train_tgt[i] for i in best]


class _References:
  """The part of a parallel data set that `Translation.host_eval` reads."""

  def __init__(self, refs: dict[str, list[str]]):
    self.refs = refs

  def references(self, split: str) -> list[str]:
    return self.refs[split]


def translation_scores(config, hyps: list[str], refs: list[str]) -> dict[str, float]:
  """{"bleu", "chrf"} of `hyps` against `refs`, by the runs' own scoring: the translation
  task's `host_eval` with these hypotheses in place of the decoder's."""
  from metricattn.tasks import Translation
  task = Translation(config)
  task.translate = lambda model, dataset, split: list(hyps)
  return task.host_eval(None, _References({"split": list(refs)}), "split")


def translation_runs(config, texts) -> list[tuple[str, dict[str, float], str, float, bool]]:
  """(name, {"split/metric": value}, note, seconds, False) of copy-the-source and retrieval."""
  train_src, train_tgt = texts["train"]
  evals = [s for s in ("val", "test") if s in texts]
  out = []
  for name, make, note in [
      ("copy the source", lambda src: list(src), "the hypothesis is the source sentence"),
      ("nearest-neighbour retrieval", lambda src: retrieve(train_src, train_tgt, src),
       "the target of the training pair whose source is nearest (TF-IDF cosine of character "
       "1-4-grams)")]:
    start = time.perf_counter()
    values = {}
    for split in evals:
      src, refs = texts[split]
      for metric, v in translation_scores(config, make(src), refs).items():
        values[f"{split}/{metric}"] = float(v)
    out.append((name, values, note, time.perf_counter() - start, False))
  return out


# ---------------------------------------------------------------- the result

def inputs(config) -> str:
  """What the baselines are given, in words."""
  name = config.data.name
  if name in TRANSLATION_DATA:
    return "the source texts and the reference texts the runs' BLEU and chrF are computed on"
  if name == "mesh_seg":
    return (f"per face, the mean of its three vertices' {config.data.features} features (the "
            "model's per-face read-out is the same mean)")
  if name == "listops":
    return "the count of each token in the sequence (a bag of tokens; the order is lost)"
  return "the model's inputs as the loader gives them, flattened"


def compute(name: str, budget: str, overrides: tuple[str, ...] = ()) -> dict:
  """The trivial baselines of experiment `name` on the data of its `budget`'s runs, with the
  extra config `overrides` (KEY=VALUE)."""
  start = time.perf_counter()
  exp = registry.get(name)
  config = experiment_config(name, budget, overrides=overrides)  # built once: l10n's takes a minute
  seeds = run_seeds(name, budget, config)
  per_seed, sizes = [], {}
  for seed in seeds:
    config.seed = seed
    if config.data.name in TRANSLATION_DATA:
      texts = translation_texts(config)
      sizes = {k: len(src) for k, (src, _) in texts.items()}
      per_seed.append(translation_runs(config, texts))
    else:
      splits = classification_splits(config)
      sizes = {k: len(y) for k, (_, y) in splits.items()}
      per_seed.append([(n, {f"{s}/accuracy": v for s, v in acc.items()}, *rest)
                       for n, acc, *rest in classification_runs(splits)])
  baselines = []
  for i, (bname, values, note, _, _) in enumerate(per_seed[0]):
    metrics = {}
    for key in values:
      vals = [runs[i][1][key] for runs in per_seed]
      std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
      metrics[key] = {"mean": float(np.mean(vals)), "std": std, "n": len(vals),
                      "values": vals}
    stopped = sum(runs[i][4] for runs in per_seed)
    if stopped:
      note += ("; stopped at its iteration limit before converging" +
               (f" on {stopped} of the {len(seeds)} seeds" if len(seeds) > 1 else ""))
    baselines.append({"name": bname, "value": metrics[exp.metric]["mean"],
                      "note": note, "metrics": metrics,
                      "seconds": round(sum(runs[i][3] for runs in per_seed), 2)})
  return {"experiment": name, "budget": budget, "metric": exp.metric,
          "split": exp.metric.split("/")[0],
          "splits": sizes, "seeds": seeds if len(seeds) > 1 else [],
          "unit": "faces" if config.data.name == "mesh_seg" else (
              "sentence pairs" if config.data.name in TRANSLATION_DATA else "examples"),
          "inputs": inputs(config),
          **({"corpus": config.data.corpus.to_dict()} if config.data.get("corpus") else {}),
          "baselines": baselines, "seconds": round(time.perf_counter() - start, 2),
          "machine": machine_description(),
          **({"overrides": list(overrides)} if overrides else {}),
          "command": shlex.join(["python", "-m", "metricattn.baselines", name, "--budget",
                                 budget, *(["--set", *overrides] if overrides else [])])}


def markdown_lines(result: dict) -> list[str]:
  """The report section "## Trivial baselines": a table and what each baseline is."""
  keys = list(dict.fromkeys(k for b in result["baselines"] for k in b["metrics"]))
  keys.sort(key=lambda k: (k != result["metric"], k))
  digits = 2 if result["metric"].endswith(("bleu", "chrf")) else 4
  def cell(m):
    return "n/a" if m is None else mean_std(m, digits) if m["n"] > 1 else fmt(m["mean"], digits)
  rows = [[b["name"], *(cell(b["metrics"].get(k)) for k in keys)] for b in result["baselines"]]
  sizes = ", ".join(f"{n:,} {k}" for k, n in result["splits"].items())
  seeds = result["seeds"]
  where = (f"on the data of each of the {len(seeds)} run seeds (mean ± std over them; the "
           "data set depends on the run seed)" if seeds else "on the runs' one data split")
  lines = ["## Trivial baselines", "",
           *markdown_table(["baseline", *keys], rows), "",
           f"Baselines learn from the train split only and are scored on the splits of the "
           f"columns ({sizes} {result['unit']}), {where}; their inputs: {result['inputs']}."]
  lines += [f"- {b['name']}: {b['note']}." for b in result["baselines"]]
  if result.get("corpus"):
    c = result["corpus"]
    lines += ["", f"Corpus: {c.get('pairs', '?'):,} pairs, split rule {c.get('split', '?')}, "
                  f"sha256 {str(c.get('sha256', '?'))[:12]}."]
  lines += ["", f"`{result['command']}`, {fmt(result['seconds'], 1)} s on {result['machine']}."]
  return lines


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m metricattn.baselines",
                              description="Trivial baselines on an experiment's data split.")
  p.add_argument("name", help="experiment of metricattn.registry")
  p.add_argument("--budget", default="quick")
  p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                 help="config overrides after the budget's, e.g. data.features=xyz")
  p.add_argument("--out", type=Path, default=None,
                 help="write the result as JSON here (e.g. results/NAME/baselines.json)")
  a = p.parse_args(argv)
  try:
    result = compute(a.name, a.budget, tuple(a.set))
  except UserError as e:
    return error(str(e))
  print("\n".join(markdown_lines(result)))
  if a.out is not None:
    import json
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(a.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
