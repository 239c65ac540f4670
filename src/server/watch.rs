//! `server.watch: true`: reload in place when the configuration file or any file it names
//! changes, as a Kubernetes ConfigMap or Secret update or a certificate renewal does it.
//!
//! Files are polled once a second by what their path resolves to now (device, inode, size,
//! modification time), which sees a Kubernetes `..data` symlink switch as well as an edit in
//! place. A change is applied once the files have stayed the same for one more poll, so a
//! half-written set is not loaded; a set that fails to load is logged once and left until the
//! files change again.

use super::reload::{Outcome, Reloader};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// What a file's path resolves to now; `None` while it is missing.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

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
        let mut files: Vec<PathBuf> = Vec::new();
        // What is applied (or was tried and refused), and what the last poll saw.
        let (mut settled, mut last): (Vec<Stamp>, Vec<Stamp>) = (Vec::new(), Vec::new());
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let gen = gw.current();
            if !gen.server.watch {
                generation = 0;
                continue;
            }
            if gen.number != generation {
                generation = gen.number;
                files = std::iter::once(gen.file.clone())
                    .chain(gen.files.iter().cloned())
                    .collect();
                settled = stamps(&files);
                last = settled.clone();
                continue;
            }
            let now = stamps(&files);
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
            if let Outcome::Applied { .. } = self.reloader.reload(None).await {
                // The new generation may name other files: start over from it.
                generation = 0;
            }
        }
    }
}
