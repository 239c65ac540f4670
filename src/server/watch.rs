//! `server.watch: true`: reload in place when the configuration file or any file it names
//! changes, as a Kubernetes ConfigMap or Secret update or a certificate renewal does it.
//!
//! Files are polled once a second by what their path resolves to now (`config::stamp`), which
//! sees a Kubernetes `..data` symlink switch as well as an edit in place, and compared with
//! what they were when the serving generation read them. A change is applied once the files
//! have stayed the same for one more poll, so a half-written set is not loaded; a set that
//! fails to load is logged once and left until the files change again.

use super::reload::{Outcome, Reloader};
use crate::config::{stamp, FileStamp};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// The background service that watches the files of the generation serving now.
pub struct Watcher {
    reloader: Arc<Reloader>,
}

impl Watcher {
    /// A watcher feeding `reloader`.
    pub fn new(reloader: Arc<Reloader>) -> Watcher {
        Watcher { reloader }
    }
}

#[async_trait]
impl BackgroundService for Watcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let gw = self.reloader.gateway().clone();
        let mut generation = 0;
        // What was applied or last tried, and what the previous poll saw.
        let (mut settled, mut last): (Vec<FileStamp>, Vec<FileStamp>) = (Vec::new(), Vec::new());
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let gen = gw.current();
            if !gen.server.watch {
                continue;
            }
            if gen.number != generation {
                generation = gen.number;
                settled = gen.files.iter().map(|(_, s)| *s).collect();
                last = settled.clone();
            }
            let now: Vec<FileStamp> = gen.files.iter().map(|(f, _)| stamp(f)).collect();
            let stable = now == last;
            last = now;
            if !stable || last == settled {
                continue;
            }
            settled = last.clone();
            log::info!(
                "watch: {} or a file it names changed; reloading",
                gen.file.display()
            );
            // An applied reload is a new generation, with its own files and stamps.
            let _: Outcome = self.reloader.reload(None).await;
        }
    }
}
