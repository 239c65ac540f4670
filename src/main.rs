//! The `pinion` binary: parse the command line, then hand over to the library.

use clap::Parser;
use pinion::cli::Cli;
use std::process::ExitCode;

/// mimalloc in release builds: about 13 % fewer instructions per proxied request than glibc's
/// malloc, at the same memory per connection (docs/benchmarks.md). Debug builds, which the
/// tests run, keep the system allocator so that valgrind sees and counts every allocation
/// (tests/e2e/allocations.rs).
#[cfg(not(debug_assertions))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    pinion::cli::run(&Cli::parse())
}
