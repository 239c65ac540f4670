//! `access_log:` and `audit_log:`: where logs are written.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::RawAccessLog;
use crate::config::{AccessLogConfig, AccessLogFormat};
use std::path::PathBuf;

impl Validator<'_> {
    /// A log file path: resolved against the configuration's directory, which must exist.
    pub(super) fn log_file(&mut self, rel: &str, path: &KeyPath) -> Option<PathBuf> {
        let full = self.resolve(rel);
        let dir_ok = full
            .parent()
            .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir());
        if !dir_ok {
            self.err(
                path.clone(),
                Problem::BadFile {
                    path: full,
                    reason: "its directory does not exist".into(),
                },
            );
            return None;
        }
        Some(full)
    }

    pub(super) fn access_log(&mut self, raw: &RawAccessLog, path: &KeyPath) -> AccessLogConfig {
        let format = self.choice(
            path.key("format"),
            raw.format.as_deref(),
            &[
                ("json", AccessLogFormat::Json),
                ("combined", AccessLogFormat::Combined),
            ],
            AccessLogFormat::Json,
            "json or combined",
        );
        let file = match raw.path.as_deref() {
            None | Some("stdout") => None,
            Some(p) => self.log_file(p, &path.key("path")),
        };
        AccessLogConfig { file, format }
    }
}
