//! The hash chain of the audit log: every line carries, in `prev`, the SHA-256 of the line
//! before it (64 zeros on the first line), so an edited, removed or inserted line breaks the
//! chain at the line after it.
//!
//! Appends take an exclusive `flock` and read the file's last line under it, so the old and
//! the new process of a hand-over can both append without forking the chain.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// `prev` of a file's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line read back to chain the next one; audit lines are far shorter.
const MAX_LINE: u64 = 4 << 20;

/// Why a log does not verify, or cannot be appended to.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A line is not a JSON object with a `prev` string.
    #[error("line {line}: not an audit record (a JSON object with \"prev\"): {reason}")]
    NotARecord {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A line's `prev` is not the hash of the line before it.
    #[error("line {line}: hash chain broken: its \"prev\" is {found} but {expected_what} hashes to {expected}; {hint}")]
    Broken {
        /// 1-based line number.
        line: usize,
        /// The `prev` the line carries.
        found: String,
        /// The `prev` it should carry.
        expected: String,
        /// "line N-1" or "the start of the file".
        expected_what: String,
        /// What may have happened.
        hint: &'static str,
    },
    /// The file does not end with a newline: its last line was cut short.
    #[error("line {line}: the last line is incomplete (no newline at the end of the file)")]
    Truncated {
        /// 1-based line number.
        line: usize,
    },
}

/// Appends the record that `make` builds from the previous line's hash and the next sequence
/// number, as one line, under an exclusive lock.
pub fn append(path: &Path, make: impl FnOnce(&str, u64) -> String) -> Result<(), ChainError> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from_raw_os_error(e as i32))?;
    let (prev, seq) = match last_line(&mut file)? {
        Some(line) => (crate::config::sha256_hex(&line), next_seq(&line)),
        None => (GENESIS.to_owned(), 1),
    };
    let mut line = make(&prev, seq);
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.flush()?;
    Ok(())
}

fn next_seq(line: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
        .map_or(1, |s| s.saturating_add(1))
}

/// The file's last complete line, without its newline; `None` for an empty file.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let start = len.saturating_sub(MAX_LINE);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let from = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok(Some(body[from..].to_vec()))
}

/// The last line of the file at `path` that has `key` at its top level, parsed; lines within
/// the last [`MAX_LINE`] bytes only.
pub fn last_with(path: &Path, key: &str) -> Option<serde_json::Value> {
    let mut file = File::open(path).ok()?;
    let len = file.seek(SeekFrom::End(0)).ok()?;
    let start = len.saturating_sub(MAX_LINE);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail).ok()?;
    tail.split(|b| *b == b'\n')
        .rev()
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .find(|v| v.get(key).is_some())
}

/// Checks every line's `prev`; the number of lines when the chain is intact.
pub fn verify(bytes: &[u8]) -> Result<usize, ChainError> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let body = match bytes.strip_suffix(b"\n") {
        Some(b) => b,
        None => {
            let line = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            return Err(ChainError::Truncated { line });
        }
    };
    let mut expected = GENESIS.to_owned();
    let mut count = 0;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let record: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| ChainError::NotARecord {
                line: n,
                reason: e.to_string(),
            })?;
        let prev = record
            .get("prev")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ChainError::NotARecord {
                line: n,
                reason: "no \"prev\" string".into(),
            })?;
        if prev != expected {
            return Err(ChainError::Broken {
                line: n,
                found: prev.to_owned(),
                expected,
                expected_what: if n == 1 {
                    "the start of the file".into()
                } else {
                    format!("line {}", n - 1)
                },
                hint: if n == 1 {
                    "lines were removed from the start of the file"
                } else {
                    "the line before it was changed, or lines were removed or inserted here"
                },
            });
        }
        expected = crate::config::sha256_hex(line);
        count = n;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prev: &str, seq: u64, text: &str) -> String {
        serde_json::json!({"seq": seq, "event": text, "prev": prev}).to_string()
    }

    #[test]
    fn appended_lines_chain_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for word in ["a", "b", "c"] {
            append(&path, |prev, seq| record(prev, seq, word)).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(verify(&bytes).unwrap(), 3);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.lines().nth(2).unwrap().contains("\"seq\":3"));
    }

    #[test]
    fn an_edited_line_breaks_the_chain_at_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for word in ["first", "second", "third"] {
            append(&path, |prev, seq| record(prev, seq, word)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("second", "SECOND", 1);
        match verify(edited.as_bytes()) {
            Err(ChainError::Broken { line: 3, .. }) => {}
            other => panic!("expected line 3 broken, got {other:?}"),
        }
        let removed: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert!(matches!(
            verify(removed.as_bytes()),
            Err(ChainError::Broken { line: 2, .. })
        ));
        let cut = &text[..text.len() - 1];
        assert!(matches!(
            verify(cut.as_bytes()),
            Err(ChainError::Truncated { line: 3 })
        ));
        assert!(matches!(
            verify(b"not json\n"),
            Err(ChainError::NotARecord { line: 1, .. })
        ));
    }
}
