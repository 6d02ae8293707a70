# iotdtls: two commands. `make demo` runs the main job, `make test` the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test peers lint typecheck requirements bench bench-pubkey bench-coap bench-load bench-server-instructions bench-memory bench-coap-memory bench-resumption bench-session-store bench-flood fuzz mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,coap,fast,fuzz]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m iotdtls demo

# The Debian peers (as root), then tinydtls: PyPI's DTLSSocket bundles it and builds here (the
# script installs the build tools). A failed build fails under root; otherwise its tests skip.
# Then the Node.js peer, node-dtls-client (tests/node_peer).
peers: $(STAMP)
	@PYTHON=$(PYTHON) sh scripts/install-peers.sh
	@$(PY) -c "import DTLSSocket.dtls" 2>/dev/null || $(PY) -m pip install -q DTLSSocket==0.2.3 \
	  || { echo "DTLSSocket==0.2.3 (tinydtls) did not build: it needs autoconf, automake, gcc" \
	       "and the Python headers (make peers installs them as root)" >&2; [ "$$(id -u)" != 0 ]; }
	@sh scripts/install-node-peer.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools benchmarks stubs fuzz

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src

test: $(STAMP) peers lint typecheck
	$(VENV)/bin/pytest -q

requirements: $(STAMP)
	$(PY) tools/requirements_report.py

bench: $(STAMP)
	$(PY) benchmarks/bench_psk.py

bench-pubkey: $(STAMP)
	cd benchmarks && ../$(PY) bench_pubkey.py

bench-coap: $(STAMP) peers
	$(PY) benchmarks/bench_coap.py

# Load over UDP loopback: the curve for 1/10/100/1000 in flight with 1 and 2 workers, echo,
# and the same load generator against openssl s_server and gnutls-serv (a few minutes).
bench-load: $(STAMP) peers
	$(PY) benchmarks/bench_load.py

# Instructions per full PSK handshake in the server process, counted by callgrind: a
# deterministic figure for changes too small for the timed ones (needs valgrind; ~2 minutes).
bench-server-instructions: $(STAMP)
	$(PY) benchmarks/bench_server_instructions.py

# Server heap per association (tracemalloc, 10,000) and resident memory of 100,000.
bench-memory: $(STAMP)
	$(PY) benchmarks/bench_memory.py

# What an ended coaps association leaves in memory, server and client (tracemalloc).
bench-coap-memory: $(STAMP)
	$(PY) benchmarks/bench_coap_memory.py

bench-resumption: $(STAMP)
	$(PY) benchmarks/bench_resumption.py

# What a get and a put of a session store cost: in memory, in a directory on disk and on tmpfs.
bench-session-store: $(STAMP)
	$(PY) benchmarks/bench_session_store.py
bench-flood: $(STAMP)
	$(PY) benchmarks/bench_flood.py

# Coverage-guided fuzzing (atheris), every target; FUZZ_RUNS inputs each (docs/fuzzing.md).
FUZZ_RUNS ?= 1000000
fuzz: $(STAMP)
	$(PY) -m fuzz.campaign --runs $(FUZZ_RUNS)

# Mutation testing (mutmut) of the record layer, the connection, crypto/, handshake/, the
# endpoint, messages/ with its byte cursors, heartbeats, the session store, the chain cache, the
# configuration and credentials, the certificate-URL fetcher, the UDP transport, the coaps
# credentials, remotes and errors, the asyncio and blocking adapters, the trace lines, the
# lossy test proxy, the load generator, the server counters and the multi-process server
# against the fast tests ([tool.mutmut] in pyproject.toml); then the kill rate and every mutant
# that is neither killed nor explained in docs/mutation.md.
MUTATION_STAMP := $(VENV)/.mutation-installed
$(MUTATION_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,coap,fast,fuzz,mutation]'
	touch $@

mutation: $(MUTATION_STAMP)
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 > mutation.log 2>&1 || (tail -40 mutation.log; false)
	$(PY) tools/mutation_report.py

clean:
	rm -rf $(VENV) .fuzz mutants mutation.log build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
