# Two commands: `make demo` (the Moon comparison) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
JOBS ?= 2

.PHONY: demo test bench clean-runs fashion-mnist l10n vit-demo ipn-demo bench-vit

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
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) scripts/bench_attention.py

# Image track. Fashion-MNIST comes from Debian's dataset-fashion-mnist (IDX files, offline
# once installed); this installs it when it is missing and apt-get is available.
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

fashion-mnist:
	@if [ -d $(FASHION_MNIST) ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get install -y dataset-fashion-mnist || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; }; \
	else echo "error: $(FASHION_MNIST) is missing and apt-get is not available; put the" \
	  "Fashion-MNIST IDX files in a directory and pass --config.data.data_dir=DIR" >&2; exit 1; fi

# Translation track, real language offline: the Debian packages whose German message
# catalogues make the debian_l10n corpus (configs/l10n_packages.txt), then its fingerprint.
# Docker images often drop /usr/share/locale (a path-exclude in /etc/dpkg/dpkg.cfg.d/):
# remove that line and reinstall, or the catalogues stay missing.
L10N_PACKAGES := $(shell grep -v '^\#' configs/l10n_packages.txt)

l10n: $(STAMP)
	@if command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get install -y --no-install-recommends $(L10N_PACKAGES) || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(L10N_PACKAGES); }; \
	else echo "warning: apt-get is not available; using the catalogues installed" >&2; fi
	$(PY) -c "from metricattn.data import l10n; f = l10n.fingerprint('de'); \
	  print(f\"debian_l10n de: {f['pairs']} pairs, sha256 {f['sha256']}, {f['catalogues']} catalogues\")"

# ViT, one epoch of Fashion-MNIST per attention kind (configs/vit_image.py).
vit-demo: $(STAMP) fashion-mnist
	$(PY) -m metricattn.sweep --config=configs/vit_image.py:dataset=fashion_mnist \
	  --grid attention=softmax,l2,metric --seeds 0 --root runs/vit-fmnist --jobs 1
	$(PY) -m metricattn.report runs/vit-fmnist

# The paper's MNIST IPN on Fashion-MNIST, per attention kind (configs/ipn_mnist.py).
ipn-demo: $(STAMP) fashion-mnist
	$(PY) -m metricattn.sweep --config=configs/ipn_mnist.py:dataset=fashion_mnist \
	  --grid attention=softmax,l2,metric --seeds 0 --root runs/ipn-fmnist --jobs 1
	$(PY) -m metricattn.report runs/ipn-fmnist

bench-vit: $(STAMP)
	$(PY) scripts/bench_vit.py --reps 30

clean-runs:
	rm -rf runs
