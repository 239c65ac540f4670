//! `pinion reload -c FILE`: FILE is validated here (every problem printed, exit 1, nothing
//! changed), then the running gateway loads it in place over its control socket and says how
//! that went. When FILE changes what only a new process can change, or the gateway has no
//! control socket, the command says so and hands over to a new process (`pinion upgrade`).

use super::upgrade::{self, UpgradeError};
use crate::config::Config;
use crate::server::control::{Client, ControlError, Reply};
use std::path::Path;
use std::process::ExitCode;

/// Why `pinion reload` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Finding or signalling the running gateway, or the hand-over, failed.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    /// The control socket answered wrongly or broke off.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Reloads the running gateway from `file` (already validated as `config`); prints what
/// happened and returns the exit code.
pub fn run(file: &Path, config: &Config) -> ExitCode {
    match reload(file, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pinion reload: {e}");
            ExitCode::from(1)
        }
    }
}

fn reload(file: &Path, config: &Config) -> Result<ExitCode, ReloadError> {
    let shown = file.display();
    let pid = upgrade::running_pid(&config.server.pid_file)?;
    let reply = match Client::new(&config.server.control_sock, pid).reload(file) {
        Ok(reply) => reply,
        Err(e @ (ControlError::Connect { .. } | ControlError::WrongProcess { .. })) => {
            println!("pid {pid} cannot reload in place ({e}): handing over to a new process");
            return handover(file, config);
        }
        Err(e) => return Err(e.into()),
    };
    match reply {
        Reply::Applied { generation, sha256 } => {
            println!(
                "reloaded {shown} in place: pid {pid}, generation {generation}, sha256 {sha256}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Reply::Invalid(problems) => {
            eprintln!("{problems}");
            eprintln!("{shown}: configuration invalid, nothing changed");
            Ok(ExitCode::from(1))
        }
        Reply::Failed(reason) => {
            eprintln!("pinion reload: pid {pid} did not apply {shown}: {reason}; nothing changed");
            Ok(ExitCode::from(1))
        }
        Reply::Handover(what) => {
            println!("{shown} changes {what}: handing over to a new process");
            handover(file, config)
        }
    }
}

fn handover(file: &Path, config: &Config) -> Result<ExitCode, ReloadError> {
    let (old, new) = upgrade::run(file, config)?;
    println!("upgraded: pid {old} handed over to pid {new}");
    Ok(ExitCode::SUCCESS)
}
