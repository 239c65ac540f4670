//! The `pinion` binary: parse the command line, then hand over to the library.

use clap::Parser;
use pinion::cli::Cli;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    pinion::cli::run(&Cli::parse())
}
