//! The command line (SPEC "Command line"); exit codes 0 ok, 1 invalid or failed, 2 usage.

pub mod pin;
pub mod reload;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Validate the configuration, then hand the running instance's sockets to a new process
    /// on it; refuses, changing nothing, if the file is invalid.
    Reload,
}
