//! Reload in place: load and validate a file, check that the running process can apply all of
//! it, build the next generation beside the current one and swap. SIGHUP, the control socket
//! (`pinion reload`) and the file watcher all come through here, one reload at a time.

use crate::config::{self, absolute};
use crate::gateway::Gateway;
use log::{error, info, warn};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// What became of a reload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration serves every request that starts from now on.
    Applied {
        /// Its generation number.
        generation: u64,
        /// Hex SHA-256 of the file.
        sha256: String,
    },
    /// The file is invalid: every problem, as `pinion -t` prints them. Nothing changed.
    Invalid(String),
    /// The file changes what only a new process can change (named). Nothing changed.
    NeedsHandover(String),
    /// The configuration is valid but could not be put to work (named). Nothing changed.
    Failed(String),
}

/// Serializes reloads of one gateway and remembers which file it runs on.
pub struct Reloader {
    gw: Arc<Gateway>,
    file: Mutex<PathBuf>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for the gateway started from `file`.
    pub fn new(gw: Arc<Gateway>, file: &Path) -> Reloader {
        Reloader {
            gw,
            file: Mutex::new(absolute(file)),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The gateway it reloads.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// The file the gateway runs on: the one it started with or last reloaded from.
    pub fn file(&self) -> PathBuf {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads from `file` (by default the file the gateway runs on). A request that would
    /// need a new process is refused, counted and logged.
    pub async fn reload(&self, file: Option<PathBuf>) -> Outcome {
        let outcome = self.try_reload(file, false).await;
        if let Outcome::NeedsHandover(what) = &outcome {
            self.gw.refused();
            warn!(
                "configuration reload refused, nothing changed: it changes {what}, which needs a \
                 new process (`pinion upgrade -c FILE`)"
            );
        }
        outcome
    }

    /// Reloads from `file` for `pinion reload`, which hands over to a new process itself when
    /// the outcome is [`Outcome::NeedsHandover`]; that outcome is therefore not counted as a
    /// failed reload.
    pub async fn reload_or_handover(&self, file: PathBuf) -> Outcome {
        self.try_reload(Some(file), true).await
    }

    async fn try_reload(&self, file: Option<PathBuf>, caller_hands_over: bool) -> Outcome {
        let _one = self.one_at_a_time.lock().await;
        let file = file.map_or_else(|| self.file(), |f| absolute(&f));
        let to_load = file.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&to_load)).await;
        let config = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(e)) => {
                self.gw.refused();
                error!(
                    "configuration reload from {} failed, nothing changed:\n{e}",
                    file.display()
                );
                return Outcome::Invalid(e.to_string());
            }
            Err(e) => return self.failed(&file, format!("the loader stopped: {e}")),
        };
        if let Some(what) = self.gw.current().needs_handover(&config) {
            if caller_hands_over {
                info!(
                    "{} changes {what}: a new process takes over",
                    file.display()
                );
            }
            return Outcome::NeedsHandover(what);
        }
        let prepared = match self.gw.prepare(&config) {
            Ok(p) => p,
            Err(e) => return self.failed(&file, e.to_string()),
        };
        let (kept, servers) = (prepared.kept_servers, prepared.servers);
        let gen = self.gw.install(prepared);
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        info!(
            "configuration reloaded in place from {}: generation {}, sha256 {}, {} pool(s), {} \
             route(s); {kept} of {servers} server(s) kept their health and connections",
            gen.file.display(),
            gen.number,
            gen.sha256,
            gen.pools.len(),
            gen.routes.routes().len(),
        );
        Outcome::Applied {
            generation: gen.number,
            sha256: gen.sha256.clone(),
        }
    }

    fn failed(&self, file: &Path, reason: String) -> Outcome {
        self.gw.refused();
        error!(
            "configuration reload from {} failed, nothing changed: {reason}",
            file.display()
        );
        Outcome::Failed(reason)
    }
}
