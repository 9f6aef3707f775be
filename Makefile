# Every target works from a fresh clone: it builds the venv it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
DATA   ?= ../shared/data/twitter_entity
RUN    ?= runs/binary
BUNDLE ?= models/sentiment-binary
DATA_ROOT     ?= ../shared/data
SOURCES       ?= default
RUN_3CLASS    ?= runs/3class
BUNDLE_3CLASS ?= models/sentiment-3class
# The default model (`make serve`, the image, /predict without "model", the benchmarks) and the
# run it was exported from (the benchmarks' fp32 graph and TF peer).
MODEL     ?= $(BUNDLE_3CLASS)
MODEL_RUN ?= $(RUN_3CLASS)
# Every bundle under models/ (a folder with a manifest.json), MODEL first: the default model.
comma  := ,
empty  :=
space  := $(empty) $(empty)
FOUND  := $(sort $(patsubst %/manifest.json,%,$(wildcard models/*/manifest.json)))
SERVED := $(filter $(MODEL),$(FOUND)) $(filter-out $(MODEL),$(FOUND))
BUNDLES ?= $(subst $(space),$(comma),$(strip $(SERVED)))
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install install-serve test test-fast lint serve train export accuracy train-3class teacher-3class export-3class accuracy-sources bench reliability load docker wheels image-test clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.all: $(VENV)/.base setup.cfg constraints.txt
	$(PIP) -e '.[train,export,bench,test,ray]'
	# tf-keras declares the 570 MB `tensorflow` wheel; tensorflow-cpu already provides it.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps tf-keras==2.21.0
	touch $@

$(VENV)/.peers: $(VENV)/.all
	$(PIP) -e '.[peers]'
	touch $@

install-serve: $(VENV)/.base   ## serving runtime only
install: $(VENV)/.all          ## everything: train, export, bench, test

test: $(VENV)/.all
	$(PY) -m pytest -q

# The edit loop: everything but the tests marked slow (training, export, server processes).
test-fast: $(VENV)/.all
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.all
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy service export

serve: $(VENV)/.base
	SENTIMENT_BUNDLES=$(BUNDLES) SENTIMENT_HOST=$(HOST) SENTIMENT_PORT=$(PORT) $(PY) -m service

train: $(VENV)/.all
	$(PY) -m training --data $(DATA) --out $(RUN) $(TRAIN_ARGS)

# The fp32 stages are kept beside the run: `make bench` compares fp32 with int8 and feeds the
# optimum peer the un-fused graph.
export: $(VENV)/.all
	$(PY) -m export --checkpoint $(RUN)/model --data $(DATA) --out $(BUNDLE) --keep-intermediate $(RUN)/onnx $(EXPORT_ARGS)

# The bundle as served (service.engine.Engine, one text per run) on the clean dev and test tweets.
accuracy: $(VENV)/.all
	$(PY) -m benchmarks.accuracy --bundle $(BUNDLE) --data $(DATA) --out reports/binary/served-accuracy.json

# The general model: every source whose terms allow an Apache-2.0 release (training.sources), the
# multi-source protocol (training.corpus), tweet-1 normalisation, the entity where a source has one;
# a soup of two 1-epoch runs; the prior correction's tau chosen on a held-out SemEval year
# (reports/experiments.md, twelfth and thirteenth sessions), the temperature on dev.
train-3class: $(VENV)/.all
	$(PY) -m training --data $(DATA_ROOT) --sources $(SOURCES) --out $(RUN_3CLASS) --epochs 1 --soup 2 --entity-pair --prior-correction 0.25 $(TRAIN_ARGS)

# A distillation teacher on the same split (training/teacher.py; --dev-only: it reads no test split).
TEACHER_RUN ?= runs/teacher-mpnet
teacher-3class: $(VENV)/.all
	$(PY) -m training --data $(DATA_ROOT) --sources $(SOURCES) --out $(TEACHER_RUN) --epochs 1 --soup 1 --entity-pair --base-model mpnet --lr 4e-5 --prior-correction off --dev-only --write-soft-labels $(TRAIN_ARGS)

export-3class: $(VENV)/.all
	$(PY) -m export --checkpoint $(RUN_3CLASS)/model --data $(DATA_ROOT) --sources $(SOURCES) --out $(BUNDLE_3CLASS) --keep-intermediate $(RUN_3CLASS)/onnx $(EXPORT_ARGS)

# Every shipped bundle x every source's test split, as served, with the TF-IDF baselines beside.
accuracy-sources: $(VENV)/.all
	$(PY) -m benchmarks.sources_table --data $(DATA_ROOT) --sources $(SOURCES) \
	  $(foreach b,$(SERVED),--bundle $(b)) \
	  --metrics reports/3class/metrics.json --metrics reports/binary/metrics.json --out reports/sources/accuracy

bench: $(VENV)/.peers
	$(PY) -m benchmarks --bundle $(MODEL) --data $(DATA) --data-root $(DATA_ROOT) \
	  --fp32-model $(MODEL_RUN)/onnx/model.fp32.fused.onnx --checkpoint $(MODEL_RUN)/model $(BENCH_ARGS)

# Overload goodput, slow clients, bad inputs, SIGTERM and kill -9 under load, an RSS soak, then
# HAProxy in front of two replicas (rollout, reload, kill -9, SIGTERM; skipped without haproxy):
# bounded (about 5 min + 2), loopback only, service defaults (benchmarks/reliability.py).
# RELIABILITY_ARGS="--skip-balancer" leaves the last out, "--only balancer" runs it alone.
reliability: $(VENV)/.all
	$(PY) -m benchmarks.reliability --bundle $(MODEL) --data $(DATA) $(RELIABILITY_ARGS)

load: $(VENV)/.all
	$(PY) -m benchmarks.load --bundle $(MODEL) --data $(DATA) $(LOAD_ARGS)

# Offline scoring of a CSV/TSV/JSONL/Parquet input (service/score.py), rows out with their predictions
# (SCORE_ARGS="--engine ray" needs the ray extra: make install, or pip install .[ray]):
#   make score IN=tweets.csv OUT=scored.csv SCORE_ARGS="--text-col text --entity-col entity"
.PHONY: score
score: $(VENV)/.base
	@test -n "$(IN)" || { echo "usage: make score IN=file.csv [OUT=out.csv] [SCORE_ARGS=...]" >&2; exit 2; }
	$(PY) -m service.score $(IN) --model $(MODEL) $(if $(OUT),--output $(OUT)) $(SCORE_ARGS)

docker: wheels
	@test -n "$(FOUND)" || { echo "no bundle under models/: run 'make export' first" >&2; exit 1; }
	docker build -t tweet-sentiment:latest \
	  --build-arg BUNDLES=$(subst $(space),$(comma),$(strip $(addprefix /app/,$(SERVED)))) \
	  --build-arg VERSION=$$(sed -n 's/^version = //p' setup.cfg) \
	  --build-arg REVISION=$$(git rev-parse --short HEAD) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) .

# The serving closure as binary wheels for the image (cp311 manylinux x86_64), into wheels/.
wheels: $(VENV)/.base
	deploy/image/wheels.sh $(PY) wheels

# The image built offline (wheelhouse + a Debian base from debootstrap, no registry) and checked
# running: readiness, health, answers, error paths, uid, contents, stop under load. Root.
image-test: $(VENV)/.base
	@test -n "$(FOUND)" || { echo "no bundle under models/: run 'make export' first" >&2; exit 1; }
	deploy/image/test.sh $(PY) $(subst $(space),$(comma),$(strip $(addprefix /app/,$(SERVED))))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
