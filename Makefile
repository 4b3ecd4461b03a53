# The README's two commands: `make demo` (the main job end to end) and `make test` (ruff + pytest);
# `make test-fast` skips the tests marked slow (they train or convert large models), for everyday work.
# Both create .venv, install the package and get Fashion-MNIST first, so they work on a fresh machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?= -n 2  # pytest-xdist: two workers for the two cores; PYTEST_ARGS= runs serially

.PHONY: demo test test-fast lint data sshd venv clean report baselines

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST: Debian's package when we are root on Debian, else tensorflow-datasets (needs the network).
data: $(STAMP)
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		$(BIN)/python -m tfcompress.data fashion_mnist; \
	fi

# OpenSSH's server, for the ssh:// device tests (tests/sshd.py runs one on 127.0.0.1): Debian's package when we
# are root on Debian; without it those tests are skipped and say why.
sshd:
	@if [ -x /usr/sbin/sshd ]; then \
		echo "sshd: /usr/sbin/sshd"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; \
	else \
		echo "sshd: not installed (apt-get install openssh-server); the ssh:// device tests will be skipped"; \
	fi

demo: data
	$(BIN)/python scripts/demo.py

# tfcompress vs tensorflow-model-optimization (benchmarks/baselines.py). tfmot and tf-keras are installed without
# their dependencies: tfmot 0.8 pins absl-py~=1.2 (tfcompress needs >= 2; tfmot works with it) and tf-keras requires
# the `tensorflow` wheel, which would be written over tensorflow-cpu's files; then tfmot's other dependencies.
baselines: data
	$(BIN)/pip install --quiet --no-deps 'tensorflow-model-optimization>=0.8' 'tf-keras==2.21.*'
	$(BIN)/pip install --quiet 'dm-tree~=0.1.1' mock six
	$(BIN)/python benchmarks/baselines.py

lint: $(STAMP)
	$(BIN)/ruff check .

# pytest exits 5 when it collects no test; say so instead of failing the build on it.
test: lint data sshd
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-fast: lint data sshd
	$(BIN)/pytest $(PYTEST_ARGS) -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# benchmarks/README.md, one page of every committed result (benchmarks/results/); measures nothing.
report: $(STAMP)
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
