"""Runs every command of README.md's bash blocks, as written and in order.

  python scripts/run_readme.py [--list] [--from N] [--skip make]

The README states one convention: commands run with the project's virtual environment
active. This script activates it (puts .venv/bin first on PATH) and runs each command with
bash from the repository root, printing its exit code and wall time; it stops at the first
failure. `--list` prints the commands only. tests/test_readme.py checks that every command
names a Makefile target, a project module or script that exists, and that the module's own
argument parser accepts its flags.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(path: Path = ROOT / "README.md") -> list[str]:
  """The commands of the ```bash blocks: comments dropped, backslash continuations joined."""
  out = []
  for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
    text = re.sub(r"\\\n\s*", "", block)
    for line in text.splitlines():
      line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
      if line:
        out.append(line)
  return out


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--list", action="store_true", help="print the commands only")
  p.add_argument("--from", dest="first", type=int, default=1, help="start at command N")
  p.add_argument("--skip", nargs="*", default=[], help="skip commands starting with these")
  a = p.parse_args()
  cmds = commands()
  env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
             VIRTUAL_ENV=str(ROOT / ".venv"))
  for i, cmd in enumerate(cmds, 1):
    if a.list:
      print(f"{i}. {cmd}")
      continue
    if i < a.first or any(cmd.startswith(s) for s in a.skip):
      continue
    print(f"[{i}/{len(cmds)}] $ {cmd}", flush=True)
    t = time.perf_counter()
    rc = subprocess.call(["bash", "-c", cmd], cwd=ROOT, env=env)
    print(f"[{i}/{len(cmds)}] exit {rc} in {time.perf_counter() - t:.0f} s", flush=True)
    if rc:
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())
