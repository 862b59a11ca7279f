"""`python -m metricattn.theory --out DIR [--quick]`: see `metricattn.theory.report`;
`python -m metricattn.theory trained [--runs ROOT] [--budget quick] [--out DIR]`: see
`metricattn.theory.trained_report`."""

import sys

from metricattn.theory.report import main

if __name__ == "__main__":
  if sys.argv[1:2] == ["trained"]:
    from metricattn.theory.trained_report import main as trained_main
    trained_main(sys.argv[2:])
  else:
    main()
