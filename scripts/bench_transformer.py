"""Time our Transformer train step at the PyTorch reference's shapes, beside the reference.

One measurement (one JSON line, the fields of ../shared/bench/peer_transformer_bench.py plus
ours):

  python scripts/bench_transformer.py --batch 32 --src-len 128 --tgt-len 128 --d-model 256 \
      --layers 3 --heads 4 --ffn 1024 --src-vocab 4000 --tgt-vocab 4000 [--attention l2]
      [--dtype bfloat16] [--roof]

The step is the trainer's own (`metricattn.train.make_train_step`, jitted with donated state)
with the paper's optimizer (`configs/multi30k_transformer.py`, schedule paper: L2 weight
decay 5e-4, Adam lr 1e-5, eps 5e-9, gradient clip 1.0) and dropout 0.1, on random token ids
as the reference's script draws them: source `src-len` tokens, decoder input and target
`tgt-len - 1` tokens (the reference feeds trg[:, :-1] and scores trg[:, 1:]), no padding.
It prints the median/min/max step time (warm-up steps excluded), tokens per second (batch *
(src_len + tgt_len), as the reference's script counts them), CPU seconds per wall second, XLA's
FLOPs of the step and the FLOP/s reached; `--roof` also times a plain 4096x4096 matmul in
float32 and bfloat16 in the same process (the roof of this CPU) and prints the step's
fraction of the float32 one.

Side by side with the reference, alternating (the way the README's numbers were made):

  python scripts/bench_transformer.py --shape c --rounds 3 \
      --reference-python /path/to/torch-venv/bin/python --reference-dir /path/to/export

`--shape a|b|c` sets the issue's three shapes, `--shape d` one between (a) and (c). Each
round runs the reference's script, then ours, each in its own process (torch is never
imported here); the table gives each round's times, the median ratio reference / ours, and
the machine's load before each round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = ROOT.parent / "shared" / "bench" / "peer_transformer_bench.py"

# The shapes: batch, length (source and target), d_model, layers, heads, ffn, vocab;
# and "d", ours, between (a) and (c): the same 4,096 tokens a batch as both, with every size
# between theirs (issue #24).
SHAPES = {"a": (128, 32, 512, 6, 8, 2048, 8000), "b": (32, 32, 128, 2, 4, 512, 2000),
          "c": (32, 128, 256, 3, 4, 1024, 4000), "d": (64, 64, 384, 4, 6, 1536, 6000)}
SHAPE_FLAGS = ("batch", "src_len", "d_model", "layers", "heads", "ffn", "src_vocab")
INT_FLAGS = [("batch", 128), ("src-len", 32), ("tgt-len", 32), ("d-model", 512), ("heads", 8),
             ("layers", 6), ("ffn", 2048), ("src-vocab", 8000), ("tgt-vocab", 8000),
             ("steps", 10), ("warmup", 3), ("seed", 0)]


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name, default in INT_FLAGS:
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--dropout", type=float, default=0.1)
  p.add_argument("--attention", default="softmax", help="softmax | l2 | metric")
  p.add_argument("--dtype", default="float32", help="model.dtype: float32 | bfloat16")
  p.add_argument("--roof", action="store_true", help="also time plain matmuls (the roof)")
  p.add_argument("--shape", choices=sorted(SHAPES),
                 help="a, b, c: the issue's shapes; d: between a and c")
  p.add_argument("--rounds", type=int, default=0, help="alternate with the reference")
  p.add_argument("--reference-python", help="python of a virtual environment with torch")
  p.add_argument("--reference-dir", help="an exported copy of hyunwoongko/transformer")
  a = p.parse_args()
  if a.shape:
    values = SHAPES[a.shape]
    for name, v in zip(SHAPE_FLAGS, values):
      setattr(a, name, v)
    a.tgt_len, a.tgt_vocab = a.src_len, a.src_vocab
  return a


def shape_flags(a) -> list[str]:
  return [f"--{n}={getattr(a, n.replace('-', '_'))}" for n, _ in INT_FLAGS] + [
      f"--dropout={a.dropout}"]


# ---------------------------------------------------------------- one measurement (ours)

def config_for(a):
  from metricattn.config_utils import load_config_file
  c = load_config_file(str(ROOT / "configs" / "multi30k_transformer.py"),
                       f"attention={a.attention},schedule=paper,batch={a.batch}")
  m = c.model
  m.num_layers, m.num_heads, m.d_model, m.qk_dim, m.d_mlp = (
      a.layers, a.heads, a.d_model, a.d_model, a.d_model)
  m.d_ff, m.dropout, m.max_len = a.ffn, a.dropout, max(256, a.src_len, a.tgt_len)
  m.dtype = a.dtype
  return c


def matmul_roof(dtype: str, n: int = 4096, reps: int = 5) -> float:
  """FLOP/s of a plain n x n matmul in `dtype` (median of `reps`)."""
  import jax
  import jax.numpy as jnp
  x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(x, x).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(x, x).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times)


def measure(a) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from metricattn.cli import enable_compilation_cache
  from metricattn.models import num_params
  from translation_cost import compile_step, flops as step_flops

  enable_compilation_cache()
  rng = np.random.default_rng(a.seed)
  trg = rng.integers(4, a.tgt_vocab, size=(a.batch, a.tgt_len), dtype=np.int32)
  batch = {"src": rng.integers(4, a.src_vocab, size=(a.batch, a.src_len), dtype=np.int32),
           "tgt_in": trg[:, :-1], "tgt_out": trg[:, 1:]}
  info = {"src_vocab_size": a.src_vocab, "tgt_vocab_size": a.tgt_vocab}
  compiled, (params, opt, _, _, key, lr_scale) = compile_step(config_for(a), batch, info, a.seed)
  flops = step_flops(compiled)
  n_params = num_params(params)
  times, losses = [], []
  for i in range(a.warmup + a.steps):
    if i == a.warmup:
      cpu0, wall0 = time.process_time(), time.perf_counter()
    t = time.perf_counter()
    params, opt, metrics = compiled(params, opt, batch, jnp.int32(i), key, lr_scale)
    losses.append(float(metrics["loss"]))  # like the reference's loss.item()
    times.append(time.perf_counter() - t)
  cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
  med = statistics.median(times[a.warmup:])
  out = {"impl": "metricattn", "attention": a.attention, "dtype": a.dtype,
         **{n.replace("-", "_"): getattr(a, n.replace("-", "_")) for n, _ in INT_FLAGS},
         "dropout": a.dropout, "median_ms": round(1e3 * med, 2),
         "min_ms": round(1e3 * min(times[a.warmup:]), 2),
         "max_ms": round(1e3 * max(times[a.warmup:]), 2),
         "tokens_per_s": round(a.batch * (a.src_len + a.tgt_len) / med, 1),
         "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
         "params": n_params, "cpu_per_wall": round(cpu / wall, 2),
         "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
         "gflop_per_step": float(f"{flops / 1e9:.4g}"),
         "gflops": float(f"{flops / med / 1e9:.4g}"),
         "jax": jax.__version__}
  if a.roof:
    out["roof_f32_gflops"] = round(matmul_roof("float32") / 1e9, 1)
    out["roof_bf16_gflops"] = round(matmul_roof("bfloat16") / 1e9, 1)
    out["fraction_of_f32_roof"] = round(out["gflops"] / out["roof_f32_gflops"], 3)
  return out


# ---------------------------------------------------------------- side by side

def load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_json(cmd: list[str], env: dict | None = None) -> dict:
  done = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if done.returncode:
    sys.exit(f"error: {' '.join(cmd[:2])} ... exited {done.returncode}:\n{done.stderr[-2000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def side_by_side(a) -> None:
  if not (a.reference_python and a.reference_dir):
    sys.exit("error: --rounds needs --reference-python (a venv with torch) and "
             "--reference-dir (an exported copy of hyunwoongko/transformer)")
  if not (Path(a.reference_dir) / "models" / "model" / "transformer.py").is_file():
    sys.exit(f"error: --reference-dir {a.reference_dir} holds no models/model/transformer.py; "
             "export hyunwoongko/transformer there")
  env = dict(os.environ, PEER_TRANSFORMER_DIR=a.reference_dir)
  flags = shape_flags(a)
  ours_cmd = [sys.executable, __file__, *flags, f"--attention={a.attention}",
              f"--dtype={a.dtype}", *(["--roof"] if a.roof else [])]
  rows = []
  for r in range(a.rounds):
    before = load()
    ref = run_json([a.reference_python, str(PEER_SCRIPT), *flags, "--threads=2"], env)
    ours = run_json(ours_cmd)
    ratio = ref["median_ms"] / ours["median_ms"]
    rows.append(ratio)
    print(json.dumps({"round": r, "load_before": before, "reference": ref, "ours": ours}),
          flush=True)
    print(f"round {r}: reference {ref['median_ms']:.1f} ms (cpu/wall {ref['cpu_per_wall']}), "
          f"ours {ours['median_ms']:.1f} ms (cpu/wall {ours['cpu_per_wall']}), reference/ours "
          f"{ratio:.3f}, load {before}", flush=True)
  print(f"median reference/ours over {a.rounds} rounds: {statistics.median(rows):.3f} "
        f"({a.attention}, {a.dtype}; load now {load()})")


def main() -> None:
  a = parse_args()
  if a.rounds:
    side_by_side(a)
  else:
    print(json.dumps(measure(a)), flush=True)


if __name__ == "__main__":
  main()
