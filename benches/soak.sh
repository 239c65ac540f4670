#!/usr/bin/env bash
# The long soak (issue 7): CONNECTIONS concurrent keep-alive TLS clients at RATE requests per
# second through a release build of pinion for SECONDS, sampling its RSS and open descriptors.
#
#   benches/soak.sh [SECONDS] [CONNECTIONS] [RATE]     (defaults: 600 s, 5000, 1000 req/s)
#
# It runs the soak test of the end-to-end suite (tests/e2e/soak.rs; `make test` runs it for
# 60 s on a debug build) and passes with zero errors, every client connected, RSS growth under
# 10 % from the end of the warm-up to the end, and open descriptors back to the idle baseline
# once the clients are gone. Everything listens on 127.0.0.1. Needs only cargo.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PINION_SOAK_SECONDS=${1:-600} PINION_SOAK_CONNECTIONS=${2:-5000} PINION_SOAK_RATE=${3:-1000} \
  cargo test --release --locked --test e2e soak -- --ignored --nocapture
