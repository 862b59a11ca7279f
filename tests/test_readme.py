"""Every command the README (and docs/) shows names something that exists and flags it accepts.

scripts/run_readme.py runs them all as written (minutes: `make demo`, a quick experiment);
this test checks in seconds that none would fail on a missing target, module or flag.
"""

import functools
import re
import sys

import pytest

from tests.helpers import ROOT, cli

sys.path.insert(0, str(ROOT / "scripts"))
from run_readme import commands  # noqa: E402

COMMANDS = commands()


@functools.cache
def help_text(module: str):
  return cli(module, "--help")


DOC_COMMANDS = [c for page in sorted((ROOT / "docs").glob("*.md")) for c in commands(page)]


def test_the_readme_has_its_commands():
  assert COMMANDS[:2] == ["make demo", "make test"]
  assert any(c.startswith("python -m metricattn.main ") for c in COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS + DOC_COMMANDS)
def test_readme_command_exists_and_its_flags_are_known(cmd):
  words = cmd.split()
  if words[0] == "rm":  # clearing the XLA cache
    return
  if words[0] == "make":
    targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert words[1] in targets
    return
  assert words[:2] == ["python", "-m"], f"not written with the README's convention: {cmd}"
  out = help_text(words[2])
  assert out.returncode == 0, out.stderr  # every command's --help exits 0 (main too)
  for flag in re.findall(r"(?:^|\s)(--[a-z_-]+)", cmd):
    if not flag.startswith("--config."):
      assert flag in out.stdout, f"{words[2]} does not know {flag}"


def test_docs_tables_are_made_from_the_committed_reports():
  """Every `<!-- table results/NAME -->` block equals what scripts/docs_tables.py makes from
  results/NAME/report.json: no result table in docs/ is typed by hand or out of date."""
  from docs_tables import BLOCK, table
  blocks = [m for page in sorted((ROOT / "docs").glob("*.md"))
            for m in BLOCK.finditer(page.read_text())]
  assert len(blocks) >= 3
  for m in blocks:
    assert m.group(3) == table(m.group(2)), f"stale table of {m.group(2)}: run scripts/docs_tables.py"


def test_usage_experiment_table_matches_the_registry():
  """docs/usage.md's table names every experiment, with its quick budget's seed count."""
  from metricattn import registry
  text = (ROOT / "docs" / "usage.md").read_text()
  rows = {}
  for line in text.splitlines():
    if line.startswith("| `"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      for name in re.findall(r"`(\w+)`", cells[0]):
        rows.setdefault(name, cells)  # the experiment table comes first
  for name, exp in registry.EXPERIMENTS.items():
    assert name in rows, f"docs/usage.md's experiment table lacks {name}"
    assert f"python -m metricattn.experiment {name} " in text, name
    seeds = [int(n) for n in re.findall(r"(\d+) seeds", rows[name][3])]
    if "quick" in exp.budgets and len(rows[name][0].split(",")) == 1:
      assert seeds and seeds[-1] == exp.budget("quick").seeds, (name, rows[name][3])
