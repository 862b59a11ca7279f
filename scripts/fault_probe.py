"""Fault probe (issue #23): each fault and bad-input case run as a user would, from the
command line, with what it printed and whether that is what the project promises.

  python scripts/fault_probe.py [--dir DIR] [--only WORD]

Cases: kill -9 during a run and the metrics log after the rerun; a torn last line; SIGTERM
and SIGKILL to `sweep`, `experiment` and a study's launcher (are the runs gone?); a rerun
while the runs live; two-process runs with a missing, duplicated or killed peer; corrupted
data caches, tokenizer files and XLA cache entries; a full disk (a small tmpfs: root only);
bad config values and command-line arguments. Each case prints one table row: the case, the
exit code, the last line it printed to stderr, and `ok` or what is wrong (a traceback, more
than one error line, a lost row, a run left training). Exit code 1 when any case is wrong.

Everything is written below DIR (default: a new temporary directory), with $METRICATTN_DATA
and $METRICATTN_XLA_CACHE pointed there; data sets are generated small and offline. Takes
about 45 minutes on the 2-core CPU at load 5-9 (the groups one by one); the tests cover the
same faults with fault hooks (tests/test_nothing_lost.py, test_runs.py, test_multihost.py,
test_caches.py, test_validation.py)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MOONS = ["--config=configs/moons_ipn.py:attention=l2", "--config.train.steps=100",
         "--config.train.checkpoint_every=40", "--config.train.eval_every=20",
         "--config.train.log_every=10"]
LONG = ["--set", "train.steps=1000000", "train.log_every=10", "train.eval_every=100000",
        "train.checkpoint_every=100000"]
SWEEP = ["-m", "metricattn.sweep", "--config=configs/moons_ipn.py", "--grid",
         "attention=softmax,l2", "--jobs", "2", "--progress-every", "0", *LONG]
LISTOPS = ["--config=configs/lra_listops.py:size=cpu,steps=2", "--config.data.num_train=64",
           "--config.data.num_val=16", "--config.data.num_test=16",
           "--config.data.min_length=8", "--config.data.max_length=40",
           "--config.data.bucket=8", "--config.model.num_layers=1"]
MESH = ["--config=configs/mesh_seg.py:steps=2", "--config.data.num_train=4",
        "--config.data.num_test=2", "--config.data.batch_size=2"]
# The l10n test budget (registry): a sentencepiece tokenizer saved in the workdir.
TRANSLATION = ["--config=configs/l10n_translation.py:model=small,schedule=fast,epochs=0.1,"
               "batch=16,evals=1,train_pairs=1000", "--config.model.num_layers=1",
               "--config.model.d_model=32", "--config.model.qk_dim=32", "--config.model.d_mlp=16",
               "--config.model.d_ff=64", "--config.model.num_heads=2",
               "--config.data.vocab_size=256", "--config.data.max_len=16",
               "--config.model.max_len=16", "--config.optimizer.warmup_steps=2"]
ROWS: list[tuple[str, int | None, str, str]] = []


def env(d: Path) -> dict:
  e = dict(os.environ, METRICATTN_DATA=str(d / "data"), METRICATTN_XLA_CACHE=str(d / "xla"))
  e.pop("XLA_FLAGS", None)
  return e


def start(args, d: Path, **kw) -> subprocess.Popen:
  return subprocess.Popen([PY, *args], cwd=ROOT, env=env(d), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True, **kw)


def run(args, d: Path, timeout=900) -> subprocess.CompletedProcess:
  return subprocess.run([PY, *args], cwd=ROOT, env=env(d), text=True, capture_output=True,
                        timeout=timeout)


def last_line(text: str) -> str:
  lines = [x for x in text.strip().splitlines() if x.strip()]
  return lines[-1][:200] if lines else ""


def error_lines(text: str) -> list[str]:
  return [x for x in text.splitlines() if x.startswith("error:")]


def record(case: str, rc, stderr: str, problems: list[str]) -> None:
  if "Traceback" in stderr or "Fatal Python error" in stderr:
    problems = ["traceback", *problems]
  verdict = "ok" if not problems else "WRONG: " + "; ".join(problems)
  ROWS.append((case, rc, last_line(stderr), verdict))
  print(f"| {case} | {rc} | `{last_line(stderr)}` | {verdict} |", flush=True)


def one_error(case, p: subprocess.CompletedProcess, code=2, pattern="") -> None:
  """A bad input: exit `code`, exactly one `error:` line matching `pattern`."""
  problems = []
  if p.returncode != code:
    problems.append(f"exit {p.returncode}, expected {code}")
  errs = error_lines(p.stderr)
  if len(errs) != 1:
    problems.append(f"{len(errs)} error lines")
  elif pattern and not re.search(pattern, errs[0]):
    problems.append(f"message does not match {pattern!r}")
  record(case, p.returncode, p.stderr, problems)


def rows(workdir: Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      out.append({"torn": line})
  return out


def key(rs):
  return [(r.get("step"), r.get("split"), r.get("loss", r.get("accuracy"))) for r in rs]


def wait_for(cond, timeout=600.0) -> bool:
  t0 = time.time()
  while time.time() - t0 < timeout:
    if cond():
      return True
    time.sleep(0.5)
  return False


def training_pids(marker: str) -> list[int]:
  """Processes still alive whose command line contains `marker` (a workdir or root)."""
  out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
  return [int(p) for p in out.split() if int(p) != os.getpid()]


# ---------------------------------------------------------------- the metrics log

def metrics_cases(d: Path) -> None:
  full = d / "full"
  run(["-m", "metricattn.main", f"--workdir={full}", *MOONS], d)
  want = key(rows(full))

  w = d / "kill9"
  p = start(["-m", "metricattn.main", f"--workdir={w}", *MOONS], d)
  wait_for(lambda: any(r.get("step", 0) >= 70 for r in rows(w)) or p.poll() is not None)
  p.kill()
  p.communicate()
  again = run(["-m", "metricattn.main", f"--workdir={w}", *MOONS], d)
  record("kill -9 at step 70, rerun", again.returncode, again.stderr,
         [] if key(rows(w)) == want else ["rows differ from the uninterrupted run"])

  w = d / "cutback"
  p = start(["-m", "metricattn.main", f"--workdir={w}", *MOONS], d)
  wait_for(lambda: any(r.get("step", 0) >= 70 for r in rows(w)) or p.poll() is not None)
  p.kill()
  p.communicate()
  strace = subprocess.run(
      ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(w / "metrics.jsonl"), "-e",
       "trace=openat,write,ftruncate,truncate,rename", "-e",
       "inject=write,ftruncate,truncate,rename:signal=KILL:when=1", PY, "-m",
       "metricattn.main", f"--workdir={w}", *MOONS], cwd=ROOT, env=env(d), text=True,
      capture_output=True)
  kept = len(rows(w))
  again = run(["-m", "metricattn.main", f"--workdir={w}", *MOONS], d)
  record(f"kill at the first write to metrics.jsonl on resume ({kept} rows left), rerun",
         again.returncode, again.stderr,
         ([] if key(rows(w)) == want else ["rows differ from the uninterrupted run"])
         + ([] if strace.returncode != 0 else ["strace did not kill the resume"]))

  w = d / "torn"
  p = start(["-m", "metricattn.main", f"--workdir={w}", *MOONS], d)
  wait_for(lambda: any(r.get("step", 0) >= 70 for r in rows(w)) or p.poll() is not None)
  p.kill()
  p.communicate()
  with open(w / "metrics.jsonl", "a") as f:
    f.write('{"step": 327, "split": "trai')
  again = run(["-m", "metricattn.main", f"--workdir={w}", *MOONS], d)
  record("torn last line, rerun", again.returncode, again.stderr,
         ([] if key(rows(w)) == want else ["rows differ from the uninterrupted run"])
         + ([] if "torn" in again.stderr.lower() or "incomplete" in again.stderr.lower()
            else ["no warning about the torn line"]))


# ---------------------------------------------------------------- launchers and children

def launcher_case(d: Path, name: str, args: list[str], marker: Path, sig, code) -> None:
  p = start(args, d)
  ok = wait_for(lambda: len(training_pids(str(marker))) >= 2 and any(
      rows(w) for w in marker.glob("**/seed=*")) or p.poll() is not None, timeout=600)
  time.sleep(3)
  if not ok or p.poll() is not None:
    p.kill()
    _, err = p.communicate()
    record(f"{name}: {signal.Signals(sig).name} to the launcher", p.returncode, err,
           ["never started training"])
    return
  problems = []
  if name.startswith("sweep") and sig == signal.SIGTERM:
    again = run(args, d)
    one_error(f"{name}: rerun while its runs train", again, 2, "still training")
  os.kill(p.pid, sig)
  try:
    _, err = p.communicate(timeout=300)
  except subprocess.TimeoutExpired:
    p.kill()
    _, err = p.communicate()
    problems.append("did not stop within 300 s")
  gone = wait_for(lambda: not training_pids(str(marker)), timeout=180)
  if not gone:
    problems.append(f"runs left training: {training_pids(str(marker))}")
    for pid in training_pids(str(marker)):
      os.kill(pid, signal.SIGKILL)
  if code is not None and p.returncode != code:
    problems.append(f"exit {p.returncode}, expected {code}")
  record(f"{name}: {signal.Signals(sig).name} to the launcher", p.returncode, err, problems)


def launcher_cases(d: Path) -> None:
  for sig, code in ((signal.SIGTERM, 143), (signal.SIGKILL, None)):
    root = d / f"sweep-{sig.name}"
    launcher_case(d, "sweep --jobs 2", [*SWEEP, "--root", str(root)], root, sig, code)
    root = d / f"study-{sig.name}"
    launcher_case(d, "study --workers 2",
                  ["-m", "metricattn.sweep", "--config=configs/moons_ipn.py",
                   "--space", "optimizer.lr=loguniform(1e-3,1e-1)", "--trials", "4",
                   "--workers", "2", "--root", str(root), "--progress-every", "0", *LONG],
                  root, sig, code)
    root = d / f"experiment-{sig.name}"
    launcher_case(d, "experiment moons --budget full",
                  ["-m", "metricattn.experiment", "moons", "--budget", "full", "--root",
                   str(root), "--jobs", "2"], root, sig, code)


# ---------------------------------------------------------------- peers

def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def peer(d: Path, w: Path, port: int, i: int, extra=()) -> subprocess.Popen:
  return start(["-m", "metricattn.main", f"--workdir={w}", *MOONS[:1],
                "--config.train.steps=100000", "--config.train.log_every=10",
                f"--coordinator_address=localhost:{port}", "--num_processes=2",
                f"--process_id={i}", *extra], d)


def peer_cases(d: Path) -> None:
  w, port = d / "peers-kill", free_port()
  procs = [peer(d, w, port, i) for i in (0, 1)]
  wait_for(lambda: len(rows(w)) >= 2 or any(p.poll() is not None for p in procs), 300)
  t0 = time.time()
  procs[1].kill()
  procs[1].communicate()
  try:
    _, err = procs[0].communicate(timeout=300)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    _, err = procs[0].communicate()
  p0 = procs[0]
  problems = [] if p0.returncode not in (0, None) and len(error_lines(err)) == 1 else [
      "not one error line and a non-zero exit"]
  record(f"2 processes, kill -9 of process 1 (process 0 ended after {time.time() - t0:.0f} s)",
         p0.returncode, err, problems)

  p = peer(d, d / "peers-alone", free_port(), 0, ["--init_timeout=10"])
  _, err = p.communicate(timeout=300)
  one_error("process 0 of 2 alone, --init_timeout=10", subprocess.CompletedProcess(
      [], p.returncode, "", err), 2, "not all 2 processes joined")

  port = free_port()
  first = peer(d, d / "peers-dup-a", port, 0, ["--init_timeout=60"])
  wait_for(lambda: _listening(port) or first.poll() is not None, 60)
  second = peer(d, d / "peers-dup-b", port, 0)
  _, err = second.communicate(timeout=300)
  first.kill()
  first.communicate()
  one_error("a second --process_id=0", subprocess.CompletedProcess([], second.returncode, "",
                                                                   err), 2, "already in use")


def _listening(port: int) -> bool:
  try:
    socket.create_connection(("localhost", port), timeout=1).close()
    return True
  except OSError:
    return False


# ---------------------------------------------------------------- caches

def corrupt(path: Path, how: str) -> None:
  data = path.read_bytes()
  if how == "truncated":
    path.write_bytes(data[:len(data) // 2])
  elif how == "zeroed":
    path.write_bytes(bytes(len(data)))
  else:  # garbled: flip bytes in the middle
    mid = len(data) // 2
    path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])


def cache_cases(d: Path) -> None:
  for name, args, pattern in (("ListOps", LISTOPS, "listops/*.npz"),
                              ("mesh", MESH, "meshes/**/*.npz")):
    first = run(["-m", "metricattn.main", f"--workdir={d / name}-0", *args], d)
    files = sorted((d / "data").glob(pattern))
    if first.returncode or not files:
      record(f"{name} cache: first run", first.returncode, first.stderr, ["no cache written"])
      continue
    for i, how in enumerate(("truncated", "zeroed", "garbled"), 1):
      corrupt(files[0], how)
      p = run(["-m", "metricattn.main", f"--workdir={d / name}-{i}", *args], d)
      record(f"{name} cache {files[0].name} {how}, run", p.returncode, p.stderr,
             [] if p.returncode == 0 and "warning" in p.stderr.lower() else
             ["no warning or not healed"])
  w = d / "translation"
  first = run(["-m", "metricattn.main", f"--workdir={w}", *TRANSLATION], d)
  tokenizers = [p for p in w.glob("*") if p.suffix in (".json", ".model") and
                p.name not in ("config.json", "summary.json")]
  for path in tokenizers:
    corrupt(path, "truncated")
    p = run(["-m", "metricattn.evaluate", f"--workdir={w}"], d)
    record(f"l10n {path.name} truncated, evaluate the run", p.returncode, p.stderr,
           [] if p.returncode == 0 and "warning" in p.stderr.lower() else ["not healed"])
  if first.returncode or not tokenizers:
    record("l10n tokenizer files", first.returncode, first.stderr,
           ["no tokenizer file found in the workdir"])
  entries = [p for p in (d / "xla").glob("**/*") if p.is_file()]
  if entries:
    entries[0].write_bytes(b"")
    p = run(["-m", "metricattn.main", f"--workdir={d / 'xla-run'}", *MOONS], d)
    record("a 0-byte XLA cache entry, run", p.returncode, p.stderr,
           [] if p.returncode == 0 else ["failed"])


# ---------------------------------------------------------------- full disk

def disk_cases(d: Path) -> None:
  disk = d / "disk"
  disk.mkdir()
  if os.geteuid() or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs",
                                     str(disk)], capture_output=True).returncode:
    record("full disk", None, "", ["skipped: needs root and tmpfs"])
    return
  try:
    p = run(["-m", "metricattn.main", f"--workdir={disk / 'w'}", *MOONS[:1],
             "--config.train.steps=400", "--config.train.checkpoint_every=20",
             "--config.train.keep_checkpoints=100", "--config.train.log_every=50"], d)
    one_error("full disk during checkpoints", p, 2, "no space left on device")
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=1000"],
                   capture_output=True)
    p = run(["-m", "metricattn.main", f"--workdir={disk / 'w2'}", *MOONS], d)
    one_error("full disk before config.json", p, 2, "no space left on device")
  finally:
    subprocess.run(["umount", str(disk)], capture_output=True)


# ---------------------------------------------------------------- bad values

def bad_value_cases(d: Path) -> None:
  raises = d / "raises.py"
  raises.write_text("def get_config(arg=None):\n  raise ValueError('boom')\n")
  main = lambda *a: ["-m", "metricattn.main", f"--workdir={d / 'bad'}", *MOONS, *a]
  for flag in ("--config.data.noise=-1", "--config.seed=-1", "--config.eval.batch_size=0",
               "--config.model.width=0", "--config.model.qk_dim=0", "--config.data.num_test=0",
               "--config.model.depth=-1", "--config.optimizer.weight_decay=-1",
               "--config.optimizer.grad_clip=-1", "--config.data.seed=-5",
               "--config.optimizer.lr=nan", "--config.optimizer.lr=inf",
               "--config.model.attention=cosine", "--config.train.steps=-3"):
    one_error(f"main {flag}", run(main(flag), d))
    if (d / "bad").exists():
      ROWS.append((f"main {flag}: workdir made", None, "", "WRONG"))
  one_error("main --config=raises.py", run(["-m", "metricattn.main", f"--config={raises}",
                                            f"--workdir={d / 'bad'}"], d))
  one_error("sweep --config=raises.py", run(["-m", "metricattn.sweep", f"--config={raises}",
                                             "--root", str(d / "bad")], d))
  a_file = d / "a_file"
  a_file.write_text("")
  one_error("experiment --root FILE", run(["-m", "metricattn.experiment", "moons", "--root",
                                           str(a_file)], d))
  t0 = time.time()
  p = run(["-m", "metricattn.experiment", "moons", "--budget", "test", "--results",
           "/proc/nope", "--root", str(d / "exp")], d)
  one_error(f"experiment --results /proc/nope ({time.time() - t0:.0f} s)", p)
  full = d / "full"
  if not (full / "metrics.jsonl").exists():
    run(["-m", "metricattn.main", f"--workdir={full}", *MOONS], d)
  for flag in ("--max-examples=-5", "--eps=-1", "--sigmas=-1"):
    one_error(f"robustness {flag}", run(["-m", "metricattn.robustness", f"--workdir={full}",
                                         flag], d))
  one_error("experiment nosuch", run(["-m", "metricattn.experiment", "nosuch"], d))
  h = run(["-m", "metricattn.main", "--help"], d)
  record("main --help", h.returncode, h.stderr,
         [] if h.returncode == 0 and "--workdir" in h.stdout + h.stderr else ["no help"])


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dir", type=Path, default=None)
  p.add_argument("--only", default=None, help="metrics, launchers, peers, caches, disk, values")
  a = p.parse_args()
  d = a.dir or Path(tempfile.mkdtemp(prefix="fault-probe-"))
  d.mkdir(parents=True, exist_ok=True)
  print(f"fault probe in {d}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
        f"load {os.getloadavg()[0]:.1f}\n\n| case | exit | last line on stderr | verdict |\n"
        "|---|---|---|---|", flush=True)
  groups = {"metrics": metrics_cases, "values": bad_value_cases, "caches": cache_cases,
            "disk": disk_cases, "peers": peer_cases, "launchers": launcher_cases}
  if a.only and a.only not in groups:
    p.error(f"--only {a.only!r}: allowed {', '.join(groups)}")
  for name, fn in groups.items():
    if a.only in (None, name):
      fn(d)
  wrong = [r for r in ROWS if r[3] != "ok"]
  print(f"\n{len(ROWS) - len(wrong)} of {len(ROWS)} cases ok", flush=True)
  return 1 if wrong else 0


if __name__ == "__main__":
  sys.exit(main())
