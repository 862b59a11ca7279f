"""Theory probes of issue 6: `python experiments/theory_diffusion.py --out DIR [--quick]`.

The same as `python -m metricattn.theory`; see `metricattn/theory/report.py`.
"""

from metricattn.theory.report import main

if __name__ == "__main__":
  main(prog="python experiments/theory_diffusion.py")
