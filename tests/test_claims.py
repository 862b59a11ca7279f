"""docs/claims.md is made from the committed reports by scripts/claims.py, by a stated rule."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import claims  # noqa: E402


def test_claims_page_is_made_from_the_committed_reports():
  page, readme = claims.render()
  assert (ROOT / "docs" / "claims.md").read_text() == page, (
      "docs/claims.md is stale: run python scripts/claims.py")
  assert "<!-- claims -->" in readme
  assert (ROOT / "README.md").read_text() == readme, (
      "README.md's claims block is stale: run python scripts/claims.py")


def test_verdict_rule():
  assert claims.verdict(+0.1, +1, 10, 0.001, (0.05, 0.15)) == "supported"
  assert claims.verdict(-0.1, +1, 10, 0.001, (-0.15, -0.05)) == "contradicted"
  assert claims.verdict(-0.1, -1, 10, 0.001, None) == "supported"   # lower is better
  assert claims.verdict(+0.1, +1, 10, 0.2, (0.05, 0.15)) == "undecided (p = 0.200)"
  assert claims.verdict(+0.1, +1, 10, 0.01, (-0.01, 0.15)) == "undecided (interval includes 0)"
  assert claims.verdict(+0.1, +1, 3, 1e-6, None) == "undecided (3 < 5 seeds)"


def test_claim_rows_on_known_values():
  seeds = list(range(6))
  better = [0.9, 0.91, 0.92, 0.9, 0.93, 0.91]
  worse = [0.6, 0.7, 0.65, 0.62, 0.68, 0.66]
  row = claims.claim("t", "accuracy", "acc", "softmax", better, worse, seeds, seeds,
                     better=+1, digits=4, level="not levelled off")
  assert row["verdict"] == "supported at this budget (not levelled off)"
  assert claims.brief(row["verdict"]) == "supported*"
  steps = claims.claim("t", "steps", "steps", "softmax", [100, 200, 100, 100, 200, 100],
                       [None] * 6, seeds, seeds, better=-1, digits=4, kind="ranks")
  assert steps["verdict"] == "supported" and "reached 6/6 vs 0/6" in steps["shown"]
  narrow, wide = [0.74, 0.76, 0.75, 0.75, 0.76, 0.74], [0.5, 0.9, 0.6, 1.0, 0.55, 0.95]
  spread = lambda a, b: claims.claim("t", "spread", "spread", "softmax", a, b, seeds, seeds,
                                     better=-1, digits=4, kind="spread")["verdict"]
  assert spread(narrow, wide) == "supported" and spread(wide, narrow) == "contradicted"
  assert spread(better, [v - 0.3 for v in better]) == "undecided (p = 1.000)"  # same spread


def test_compare_reports_seed_by_seed():
  import compare_reports
  group = lambda finals, losses: {"seeds": [0, 1], "final_values": finals,
                                  "per_run": [{"final_loss": l} for l in losses]}
  old = {"metric": "test/accuracy", "groups": {"attention=metric": group([0.9, 0.8], [0.1, 0.2]),
                                                "attention=l2": group([0.7, 0.6], [0.3, 0.3])}}
  new = {"metric": "test/accuracy", "groups": {"attention=metric": group([0.9, 0.8], [0.1, 0.25])}}
  assert compare_reports.compare(old, new) == [
      "attention=metric: 2 seeds, test/accuracy bitwise equal, final train loss max "
      "|difference| 0.05",
      "attention=l2: missing in the second report"]
