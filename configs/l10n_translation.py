"""Real-language translation offline: English -> German from Debian's message catalogues.

  python -m metricattn.main --config=configs/l10n_translation.py:attention=metric \
      --workdir=runs/l10n-metric

Data (metricattn/data/l10n.py): the singular messages of every German gettext catalogue
installed in /usr/share/locale/de/LC_MESSAGES (`make l10n` installs the packages of
configs/l10n_packages.txt), 3-30 English words, gettext markup normalised on both sides,
split train / val / test by a hash of the English text's normalised key (about 3% each for
val and test), pairs that share an English or German key with another split's kept in the
earlier split, so no near-duplicate crosses splits (rule "normalised-v2", issue 27). Building
the config reads the catalogues and splits them (about 3 s) and records their fingerprint in
`data.corpus` (pairs, the split rule, a hash of the rule and the pairs, the Debian packages
and versions); a run refuses catalogues that no longer match it or a config split by an
earlier rule, and reports print it: compare results only when their fingerprints' sha256
match.

Config arguments (after `:`):
  attention  softmax | l2 | metric                                      (default metric)
  model      paper | small                                              (default paper)
    paper  the paper's Transformer, as configs/multi30k_transformer.py: 6+6 layers, 8 heads,
           d_model 512, FFN 2048, dropout 0.1, max length 256
    small  OURS, sized for a 2-core CPU: 2+2 layers, 4 heads, d_model 128, qk_dim 128,
           d_mlp 64, FFN 256, no dropout, sentences cut at 48 tokens
  schedule   paper | fast: the optimizers of configs/multi30k_transformer.py (default paper)
  epochs     training length; 0 = the schedule's (1000 paper, 40 fast)  (default 0)
  batch      training sentence pairs per step                           (default 128)
  evals      evaluations per run (val and test; greedy decoding is costly) (default 10)
  lang       target language (any code with catalogues)                 (default de)
  train_pairs  training pairs kept, a fixed sample (0 = all; val and test stay whole): for
             smoke tests of the real corpus (the experiment's `test` budget) (default 0)
  locale_dir where the catalogues are: $METRICATTN_LOCALE_DIR, else /usr/share/locale
             (the tests point it at catalogues they compile)
Tokenizer: SentencePiece, one vocabulary for both languages (8,000 pieces for `paper`, 2,000
for `small`), trained on the training split and saved in the workdir. Evaluation on val and
test: loss, perplexity, token accuracy, corpus BLEU and chrF (sacrebleu) of greedy decodes
against the normalised references; `evals` evaluations per run, checkpoints at each.

Fields (every one is read by the trainer, the data, the task or the model):
  seed, task
  data.name, .lang, .locale_dir, .min_words, .max_words, .val_permille, .test_permille,
  .train_pairs, .corpus (.lang, .pairs, .split, .sha256, .catalogues, .unreadable,
  .packages), .tokenizer, .vocab_size, .min_freq, .shared_vocab, .max_len, .tokenizer_dir,
  .batch_size, .buckets (length buckets, 0 = off) (metricattn/data/l10n.py,
  data/translation.py)
  eval.batch_size, .beam_size, .length_penalty, .max_decode_len   (metricattn/tasks.py)
  model.*                                  (metricattn/models/transformer.py; see
                                           configs/multi30k_transformer.py)
  optimizer.*                              (metricattn/optim.py)
    (derived, schedule=paper: .plateau.start_step = 100 epochs at data.batch_size, + 1)
  train.steps, .log_every, .eval_every, .checkpoint_every, .keep_checkpoints
    (derived: .steps = `epochs` epochs of the training split (data.train_pairs of it, when
     set) at data.batch_size)
    (derived: .eval_every, .checkpoint_every = train.steps // `evals`, at least 1)
  wandb.mode, wandb.project

A derived field follows an override of the fields it derives from (`--config.train.steps=50`
moves the evaluations with it; `--config.data.batch_size=64` or `--config.data.train_pairs`
the steps, the evaluations and the plateau's start) until it is set itself.
"""

import os
from pathlib import Path

import ml_collections

from metricattn.config_utils import derived, load_module, parse_arg, steps_from_epochs
from metricattn.data import l10n
from metricattn.errors import UserError

common = load_module(Path(__file__).with_name("common.py"))

MODELS = ("paper", "small")
MIN_WORDS, MAX_WORDS, VAL_PERMILLE, TEST_PERMILLE = 3, 30, 30, 30


def get_config(arg=None):
  arg = parse_arg(arg, attention="metric", model="paper", schedule="paper", epochs=0.0,
                  batch=128, evals=10, lang="de", train_pairs=0,
                  locale_dir=os.environ.get("METRICATTN_LOCALE_DIR", "/usr/share/locale"))
  if arg.model not in MODELS:
    raise UserError(f"unknown model {arg.model!r}; allowed: {', '.join(MODELS)}")
  corpus = l10n.fingerprint(arg.lang, arg.locale_dir, MIN_WORDS, MAX_WORDS)
  splits = l10n.corpus_splits(arg.locale_dir, arg.lang, MIN_WORDS, MAX_WORDS, VAL_PERMILLE,
                              TEST_PERMILLE, arg.batch, arg.train_pairs)  # bad ones fail here
  all_train = len(l10n.corpus_splits(arg.locale_dir, arg.lang, MIN_WORDS, MAX_WORDS,
                                     VAL_PERMILLE, TEST_PERMILLE, 1)["train"][0])

  def num_train(pairs: int) -> int:  # the training pairs data.train_pairs keeps
    return min(pairs, all_train) if pairs > 0 else all_train

  epochs = arg.epochs or common.DEFAULT_EPOCHS[arg.schedule]
  steps_from_epochs(epochs, len(splits["train"][0]), arg.batch)  # bad arguments fail here
  # Settings derived from others follow an override of their source (see the docstring).
  batch = ml_collections.FieldReference(arg.batch)
  train_pairs = ml_collections.FieldReference(arg.train_pairs)
  per_epoch = derived(lambda b, n: steps_from_epochs(1.0, num_train(n), b),  # not a key
                      batch, train_pairs)
  optimizer = common.translation_optimizer(arg.schedule, per_epoch)
  steps = derived(lambda b, n: steps_from_epochs(epochs, num_train(n), b), batch, train_pairs)
  evals = max(1, arg.evals)
  small = arg.model == "small"
  max_len = 48 if small else 256
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "translation"
  c.data = dict(name="debian_l10n", lang=arg.lang, locale_dir=arg.locale_dir,
                min_words=MIN_WORDS, max_words=MAX_WORDS, val_permille=VAL_PERMILLE,
                test_permille=TEST_PERMILLE, train_pairs=train_pairs, corpus=corpus,
                tokenizer="sentencepiece",
                vocab_size=2000 if small else 8000, min_freq=2, shared_vocab=True,
                max_len=max_len, tokenizer_dir="", batch_size=batch, buckets=0)
  c.eval = dict(batch_size=128, beam_size=1, length_penalty=0.6, max_decode_len=0)
  c.model = (common.transformer(arg.attention, num_layers=2, num_heads=4, d_model=128,
                                qk_dim=128, d_mlp=64, d_ff=256, dropout=0.0, max_len=max_len)
             if small else common.transformer(arg.attention))
  c.optimizer = optimizer
  c.train = dict(steps=steps, log_every=50,
                 eval_every=derived(lambda s: max(1, s // evals), steps),
                 checkpoint_every=derived(lambda s: max(1, s // evals), steps),
                 keep_checkpoints=2)
  c.wandb = dict(mode="disabled", project="metricattn")
  return c
