#!/usr/bin/env bash
# The release build, target/release/pinion (`make release`, `make run`, the benchmarks, the
# container image): optimized with the profile of a training run (profile-guided optimization,
# PGO). pinion's CPU per request is mostly branches and calls spread over Pingora, tokio, http
# and pinion; laid out and inlined for the paths a gateway really takes, the same code runs in
# about a third less CPU (docs/benchmarks.md, "Fifth round").
#
#   scripts/release.sh            instrumented build, training run, optimized build
#   PGO=0 scripts/release.sh      a plain `cargo build --release` (quicker to build, slower to run)
#
# 1. An instrumented build under target/pgo/ (it counts every branch taken).
# 2. scripts/pgo-train.sh runs it against an nginx TLS backend on loopback (about 40 s), then
#    llvm-profdata (rustup component llvm-tools, added when missing) merges the counts into
#    target/pgo/pinion.profdata. Skipped when the instrumented binary is the one trained last.
# 3. The optimized build with that profile, copied to target/release/pinion.
# Both builds name the host target (--target), so the profile applies to the gateway's code and
# not to build scripts: OpenSSL is not rebuilt when the profile changes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}

if [ "${PGO:-1}" = 0 ]; then
  exec $CARGO build --release --locked --bin pinion
fi
case $ROOT in *" "*) echo "release.sh: the checkout's path has a space (RUSTFLAGS cannot carry it); build with PGO=0" >&2; exit 1 ;; esac

HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  echo "release.sh: adding the rustup component llvm-tools (llvm-profdata)"
  rustup component add llvm-tools >&2 || { echo "release.sh: no llvm-profdata; build without PGO: PGO=0 make release" >&2; exit 1; }
fi

PGO_DIR="$ROOT/target/pgo"
PROFILE="$PGO_DIR/pinion.profdata"
mkdir -p "$PGO_DIR"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PGO_DIR/raw" \
  $CARGO build --release --locked --bin pinion --target "$HOST" --target-dir "$PGO_DIR/build"
INSTRUMENTED="$PGO_DIR/build/$HOST/release/pinion"
SUM=$(sha256sum "$INSTRUMENTED" | cut -d' ' -f1)
if [ "$(cat "$PROFILE.trained" 2>/dev/null)" != "$SUM" ] || [ ! -f "$PROFILE" ]; then
  rm -rf "$PGO_DIR/raw"
  mkdir -p "$PGO_DIR/raw"
  LLVM_PROFILE_FILE="$PGO_DIR/raw/pinion-%p.profraw" "$ROOT/scripts/pgo-train.sh" "$INSTRUMENTED" \
    || { echo "release.sh: the training run failed; build without PGO: PGO=0 make release" >&2; exit 1; }
  compgen -G "$PGO_DIR/raw/*.profraw" >/dev/null || { echo "release.sh: the training run wrote no profile" >&2; exit 1; }
  "$PROFDATA" merge -o "$PROFILE.new" "$PGO_DIR"/raw/*.profraw
  mv "$PROFILE.new" "$PROFILE"
  echo "$SUM" >"$PROFILE.trained"
fi
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PROFILE" \
  $CARGO build --release --locked --bin pinion --target "$HOST"
mkdir -p target/release
# A copy, not a link: cargo's own `cargo build --release` may later write its file there.
cp -f "target/$HOST/release/pinion" target/release/pinion.new
mv -f target/release/pinion.new target/release/pinion
echo "release.sh: target/release/pinion (profile-guided)"
