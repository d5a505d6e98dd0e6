# compose-ckpt developer entry points. Run as root (the engine and CRIU need it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: cli-doc engine engine-28 engine-status engine-stop engine-28-stop registry registry-stop bench-registry install test test-28 lint unit plugin demo bench bench-28

engine:  ## install and start Docker 26 + CRIU 4.2, build the local test images
	scripts/engine up

engine-28: engine  ## Docker 28.5.2 beside it (own netns, socket unix:///run/docker28/docker.sock); see docs/engine.md
	scripts/engine-28 up

engine-status:  ## both engines
	scripts/engine status
	@echo "--- engine-28"
	@scripts/engine-28 status

engine-stop:  ## stop the dockerd that `make engine` started
	scripts/engine stop

engine-28-stop:  ## stop the dockerd 28 that `make engine-28` started
	scripts/engine-28 stop

registry:  ## a local OCI registry (distribution 2.8) at 127.0.0.1:5000 for push/pull tests
	scripts/registry up

registry-stop:  ## stop the registry that `make registry` started
	scripts/registry stop

$(BIN)/compose-ckpt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/compose-ckpt  ## .venv with compose-ckpt (editable) and the test tools

# The core integration tests again, against Docker 28.5.2, on adopted stacks (see docs/engine.md).
CORE_TESTS := tests/integration/test_stack_snapshot_restore.py tests/integration/test_migrate.py \
	tests/integration/test_recorded_addresses.py tests/integration/test_sidecar.py::test_scheduled_runs_every_3s

test: engine engine-28 registry install lint  ## lint, the whole suite, then the core integration tests again on Docker 28
	COMPOSE_CKPT_TEST_RESTART_ENGINE=1 $(BIN)/python -m pytest
	COMPOSE_CKPT_TEST_RESTART_ENGINE=1 COMPOSE_CKPT_TEST_ENGINE=28 $(BIN)/python -m pytest $(CORE_TESTS)

test-28: engine-28 install  ## only the core integration tests against engine-28 (round trip, recreate, migrate, sidecar)
	COMPOSE_CKPT_TEST_RESTART_ENGINE=1 COMPOSE_CKPT_TEST_ENGINE=28 $(BIN)/python -m pytest $(CORE_TESTS)

lint: install  ## ruff and mypy over the package, the tests and the benchmarks
	$(BIN)/ruff check compose_ckpt tests bench
	$(BIN)/mypy compose_ckpt tests bench

cli-doc: install  ## rewrite docs/cli.md's generated half (every command's --help); a unit test checks it
	$(BIN)/python scripts/cli_doc.py

unit: install
	$(BIN)/python -m pytest tests/unit

plugin: install  ## make `docker ckpt ...` work for this user
	mkdir -p $(HOME)/.docker/cli-plugins
	ln -sf $(CURDIR)/$(BIN)/docker-ckpt $(HOME)/.docker/cli-plugins/docker-ckpt
	docker ckpt --help >/dev/null && echo "docker ckpt is ready"

demo: engine install  ## the main job on examples/counter: snapshot, "reboot", restore, state goes on
	scripts/demo

# The 8-service rows (snapshot --stop, restore, leave running) on Docker 28.5.2, every stack adopted first:
# the only form that engine restores (docs/engine.md).
BENCH_28 := $(BIN)/python bench/run.py --docker-host unix:///run/docker28/docker.sock --adopt \
	--sizes 8 --repeat 3 --out bench/results-28.json
# The 2 GiB service, its dump and restore rows (bench/bigservice.py), adopted, on Docker 28.5.2.
BENCH_BIG_28 := $(BIN)/python bench/bigservice.py --docker-host unix:///run/docker28/docker.sock --adopt \
	--out bench/bigservice-results-28.json

# Engine-28 runs even when a Docker 26 round failed (exit 1); make fails then all the same.
bench: engine engine-28 registry install  ## benchmarks against the plain docker checkpoint loop, on Docker 26, then 28; see bench/README.md
	$(BIN)/python bench/run.py; status=$$?; $(BIN)/python bench/bigservice.py || status=1; \
	$(BENCH_BIG_28) || status=1; $(BENCH_28) && exit $$status

bench-28: engine-28 install  ## only the engine-28 rows of `make bench` (adopted stacks; bench/results-28.json)
	$(BENCH_BIG_28); status=$$?; $(BENCH_28) && exit $$status

bench-registry: engine registry install  ## push of a 1 GiB snapshot against export of it; see bench/README.md
	$(BIN)/python bench/registry.py

SIDECAR_IMAGE ?= compose-ckpt/sidecar:dev
SIDECAR_BASE ?= local/debian:bookworm

.PHONY: sidecar-image
sidecar-image: install  ## the sidecar image, built offline from wheels made here (see sidecar/README.md)
	rm -rf build/wheels
	$(BIN)/pip wheel --quiet --disable-pip-version-check . -w build/wheels
	docker build --network none --build-arg BASE=$(SIDECAR_BASE) -t $(SIDECAR_IMAGE) .  # offline: nothing to fetch

.PHONY: soak
soak: engine install sidecar-image  ## the sidecar image for 10 min against 10 labelled containers; see bench/README.md
	$(BIN)/python bench/soak.py
