//! The `pinion` binary: parse the command line, then hand over to the library.

use clap::Parser;
use pinion::cli::{Cli, Command};
use pinion::server::{self, RunMode};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONF: &str = "conf/pinion.yaml";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Pin(args)) => pin(args),
        Some(Command::Demo(args)) => match pinion::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pinion demo: {e}");
                ExitCode::from(1)
            }
        },
        Some(Command::Reload) => reload(&cli),
        None => gateway(&cli),
    }
}

fn load(cli: &Cli) -> Result<(PathBuf, pinion::config::Config), ExitCode> {
    let file = cli
        .conf
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF));
    match pinion::config::load(&file) {
        Ok(c) => Ok((file, c)),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: configuration invalid", file.display());
            Err(ExitCode::from(1))
        }
    }
}

fn reload(cli: &Cli) -> ExitCode {
    let (file, config) = match load(cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match pinion::cli::reload::run(&file, &config) {
        Ok((old, new)) => {
            println!(
                "reloaded {}: pid {old} handed over to pid {new}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pinion reload: {e}");
            ExitCode::from(1)
        }
    }
}

fn pin(args: &pinion::cli::pin::PinArgs) -> ExitCode {
    match pinion::cli::pin::run(args, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinion pin: {e}");
            ExitCode::from(1)
        }
    }
}

fn gateway(cli: &Cli) -> ExitCode {
    let file = cli
        .conf
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF));
    let config = match pinion::config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: configuration invalid", file.display());
            return ExitCode::from(1);
        }
    };
    if cli.test {
        println!("{}: configuration ok", file.display());
        return ExitCode::SUCCESS;
    }
    let mode = RunMode {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
    };
    match server::run(&config, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinion: {e}");
            ExitCode::from(1)
        }
    }
}
