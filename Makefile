# Set-up and entry points. `make demo` runs the main job, `make test` the tests; both set up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install data demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) data

# Fashion-MNIST from Debian's package (the IDX files go to /usr/share/datasets/fashion-mnist).
data:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null && { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "note: install Debian's dataset-fashion-mnist or set SENET_DATA for Fashion-MNIST"; }

demo: install
	$(BIN)/senet models
	$(BIN)/senet flops se_resnet50

test: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
