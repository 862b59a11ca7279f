# Two commands: `make demo` (the Moon comparison) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
JOBS ?= 2

.PHONY: demo test bench clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m metricattn.sweep --config=configs/moons_ipn.py \
	  --grid attention=softmax,l2,metric --seeds 0:5 --root runs/moons --jobs $(JOBS)
	$(PY) -m metricattn.report runs/moons

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) scripts/bench_attention.py

clean-runs:
	rm -rf runs
