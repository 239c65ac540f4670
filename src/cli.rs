//! The command line (SPEC "Command line"); exit codes 0 ok, 1 invalid or failed, 2 usage.

pub mod import;
pub mod pin;
pub mod preflight;
pub mod propose;
pub mod reload;
pub mod status;
pub mod upgrade;

use crate::server::{self, RunMode};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_CONF: &str = "conf/pinion.yaml";

/// pinion: an application gateway with end-to-end TLS and backend public-key pinning.
#[derive(Debug, Parser)]
#[command(name = "pinion", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long = "conf", value_name = "FILE", global = true)]
    pub conf: Option<PathBuf>,
    /// Validate the configuration, print every error, exit 0 (valid) or 1 (invalid).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Graceful upgrade: take over the listening sockets of the running instance.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// A tool instead of the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the pin (base64 SHA-256 of the DER SubjectPublicKeyInfo) of certificates or keys.
    Pin(pin::PinArgs),
    /// A self-contained demo on loopback: generated certificates, a whitelisted and a
    /// non-whitelisted backend; prints what to curl.
    Demo(crate::demo::DemoArgs),
    /// Validate the configuration, then apply it inside the running gateway (or hand over to a
    /// new process when it changes listening sockets or process settings); an invalid file
    /// changes nothing.
    Reload,
    /// Validate the configuration, then hand the running gateway's sockets to a new process
    /// (of this binary) on it: for a new binary, or any change.
    Upgrade,
    /// Connect to every backend of the configuration and print what each presents and whether
    /// it would be accepted; exit 1 if any would be rejected.
    Preflight(PreflightArgs),
    /// The running gateway's pools and servers as a table; exit 1 if a pool has no healthy server.
    Status(status::StatusArgs),
    /// Tools for the audit log (`audit_log:`).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Turn another gateway's definition into a pinion configuration and a migration report.
    #[command(subcommand)]
    Import(import::ImportCommand),
}

/// `pinion preflight` options.
#[derive(Debug, clap::Args)]
pub struct PreflightArgs {
    /// Also write, per pool, the pins its servers would need (leaf and chain keys, marked when
    /// already whitelisted) to this YAML file, ready to review and paste.
    #[arg(long, value_name = "OUT.yaml")]
    pub propose: Option<PathBuf>,
}

/// `pinion audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log: exit 0 when intact, 1 naming the first broken line.
    Verify {
        /// The audit log file.
        file: PathBuf,
    },
}

/// Runs what the command line asks for; the process exit code.
pub fn run(cli: &Cli) -> ExitCode {
    match &cli.command {
        Some(Command::Pin(args)) => pin_files(args),
        Some(Command::Demo(args)) => match crate::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pinion demo: {e}");
                ExitCode::from(1)
            }
        },
        Some(Command::Reload) => match load(cli.conf.as_deref()) {
            Ok((file, config)) => reload::run(&file, &config),
            Err(code) => code,
        },
        Some(Command::Upgrade) => upgrade_gateway(cli),
        Some(Command::Preflight(args)) => match load(cli.conf.as_deref()) {
            Ok((_, config)) => preflight_run(&config, args),
            Err(code) => code,
        },
        Some(Command::Status(args)) => status::run(cli.conf.as_deref(), args),
        Some(Command::Audit(AuditCommand::Verify { file })) => {
            match crate::audit::verify_file(file) {
                Ok(lines) => {
                    println!("{}: {lines} lines, hash chain intact", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Import(command)) => import::run(command),
        None => gateway(cli),
    }
}

fn preflight_run(config: &crate::config::Config, args: &PreflightArgs) -> ExitCode {
    let rows = match preflight::check(config, args.propose.is_some()) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("pinion preflight: {e}");
            return ExitCode::from(1);
        }
    };
    let all_ok = preflight::print(&rows, &mut std::io::stdout());
    if let Some(out) = &args.propose {
        let text = propose::render(config, &rows, crate::upstream::unix_now());
        if let Err(e) = std::fs::write(out, text) {
            eprintln!("pinion preflight: cannot write {}: {e}", out.display());
            return ExitCode::from(1);
        }
        println!("proposed pins written to {}", out.display());
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Loads the configuration named by `-c` (or the default file); on errors prints them and
/// gives exit code 1.
fn load(conf: Option<&Path>) -> Result<(PathBuf, crate::config::Config), ExitCode> {
    let file = conf.map_or_else(|| PathBuf::from(DEFAULT_CONF), ToOwned::to_owned);
    match crate::config::load(&file) {
        Ok(c) => Ok((file, c)),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: configuration invalid", file.display());
            Err(ExitCode::from(1))
        }
    }
}

fn upgrade_gateway(cli: &Cli) -> ExitCode {
    let (file, config) = match load(cli.conf.as_deref()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match upgrade::run(&file, &config) {
        Ok((old, new)) => {
            println!("upgraded: pid {old} handed over to pid {new}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pinion upgrade: {e}");
            ExitCode::from(1)
        }
    }
}

fn pin_files(args: &pin::PinArgs) -> ExitCode {
    match pin::run(args, &mut std::io::stdout()) {
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
    let config = match crate::config::load_to_start(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: configuration invalid", file.display());
            return ExitCode::from(1);
        }
    };
    if cli.test {
        for line in unresolved(&config)
            .into_iter()
            .chain(crate::admin::exposed(&config))
        {
            eprintln!("{}: warning: {line}", file.display());
        }
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

/// A line for every server name that did not resolve while loading: pinion starts anyway and
/// that name's servers join once it resolves (pools with `resolve_on_start: required` make it
/// an error instead, so they never get here).
fn unresolved(config: &crate::config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for pool in &config.pools {
        for entry in &pool.servers {
            let Some(host) = entry.host() else { continue };
            if let Some(Err(e)) = config.answers.get(host) {
                out.push(format!(
                    "pool {}: {} does not resolve ({e}); pinion would start and answer 502 for \
                     the pool while it has no server, until the name resolves",
                    pool.name, entry.label
                ));
            }
        }
    }
    out
}
