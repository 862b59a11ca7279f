"""`python -m metricattn.theory --out DIR [--quick]`: see `metricattn.theory.report`."""

from metricattn.theory.report import main

if __name__ == "__main__":
  main()
