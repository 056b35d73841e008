# Set-up and entry points. `make demo` runs the main job, `make test` the tests; both set up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install data demo reference results test test-slow lint bench clean

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

# The main job: the gate ablation (Table 12 and the softmax gate) at the quick preset in runs/demo,
# run until its comparisons are decided: every gate gets 3 seeds, then only the gates still open
# (and the sigmoid reference) get more, up to the quick design's cap of 4; each gate against
# sigmoid ends better / worse / alike / different within ±δ or unresolved, with its anytime-valid
# interval. Then its report and the excitation analysis of its best SE model. Run again, it trains
# only what is not recorded yet.
RESULTS ?= results
DEMO ?= runs/demo
DEMO_ARMS ?= tanh,relu,softmax
demo: install
	$(BIN)/senet sweep gate --preset quick --arms $(DEMO_ARMS) --until-resolved --results $(DEMO)
	$(BIN)/senet report gate --results $(DEMO) --preset quick
	$(BIN)/senet analyze --best gate --results $(DEMO) --preset quick --max-images 2000 --no-singles \
	  --no-progress --out $(DEMO)/gate/analysis
	@echo "results: $(DEMO)/gate/runs.parquet, $(DEMO)/gate/report.md, $(DEMO)/gate/analysis/summary.md"

# The published studies: every ablation at the standard preset, in `senet sweep all`'s order, each
# run until its comparisons are decided (`--until-resolved`: the report's against the reference and
# the findings' claims, up to the cap declared in its study.json) and reported, with its wall time.
# Resumable by construction: a sweep trains only the (configuration, seed) pairs that no committed
# results/*/runs.parquet records, so after an interruption, or from a fresh clone, run it again.
# A trial another study already trained (gate's sigmoid = reduction's r=16 = ...) is reused.
# Then the gate study's kept weights (its best run per arm and the 12 lowest sigmoid seeds whose
# network is here: 1.1 MB each keeps results/ under 30 MB), the excitation findings over those
# networks, the gates figure and the findings table.
STUDIES ?= gate reduction squeeze placement stages
results: install
	@for s in $(STUDIES); do \
	  t0=$$(date +%s); \
	  $(BIN)/senet sweep $$s --preset standard --until-resolved --results $(RESULTS) || exit $$?; \
	  $(BIN)/senet report $$s --results $(RESULTS) --preset standard || exit $$?; \
	  echo "[$$s] done in $$(( $$(date +%s) - t0 )) s (sweep, report)"; \
	done
	$(BIN)/senet weights gate --results $(RESULTS) --preset standard --best all --every sigmoid --every-first 12
	$(BIN)/senet analyze-seeds gate --results $(RESULTS) --preset standard --no-progress
	$(BIN)/senet gates $(RESULTS)/gate --preset standard
	$(BIN)/senet findings --results $(RESULTS) --preset standard

# The training engine's reference pair: SE-ResNet-20 and ResNet-20 on the full Fashion-MNIST training
# set, 15 epochs, seed 0, run side by side with one CPU thread each (28 min on two cores with bf16),
# then their curves and summary. results/reference holds the pair as it was last run.
REF ?= $(RESULTS)/reference
REF_ARGS := --data.name fashion-mnist --data.val_fraction 0 --epochs 15 --seed 0 --run.threads 1 \
  --run.eval_test every --run.progress false --overwrite
reference: install
	mkdir -p $(REF)
	$(BIN)/senet train --model se_resnet20 $(REF_ARGS) --out $(REF)/se_resnet20 > $(REF)/se_resnet20.log 2>&1 & \
	pid=$$!; $(BIN)/senet train --model resnet20 $(REF_ARGS) --out $(REF)/resnet20 > $(REF)/resnet20.log 2>&1; \
	rc=$$?; wait $$pid && exit $$rc
	$(BIN)/senet curves $(REF)/se_resnet20 $(REF)/resnet20 --labels SE-ResNet-20,ResNet-20 \
	  --title "Fashion-MNIST, 15 epochs, seed 0" --out $(REF)

test: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
