//! `pinion status`: the running gateway's `/status` as a table for a terminal, cron or a shell
//! script; exit 1 when any pool has no healthy server.

use crate::admin::AdminToken;
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `pinion status` options.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The admin listener to ask (default: `admin.bind` of the configuration).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// A file holding the admin token (default: `admin.token` of the configuration, when
    /// `--admin` is not given).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Runs `pinion status`: 0 when every pool has a healthy server, 1 when one has none or the
/// gateway cannot be asked, 2 for a usage error.
pub fn run(conf: Option<&std::path::Path>, args: &StatusArgs) -> ExitCode {
    let (addr, mut token) = match (args.admin, conf) {
        (Some(addr), _) => (addr, None),
        (None, conf) => {
            let (file, config) = match super::load(conf) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let Some(addr) = config.admin else {
                eprintln!(
                    "pinion status: {} has no admin listener (admin.bind); pass --admin ADDR",
                    file.display()
                );
                return ExitCode::from(2);
            };
            (addr, config.admin_token)
        }
    };
    if let Some(f) = &args.token_file {
        match std::fs::read_to_string(f) {
            Ok(t) => token = Some(AdminToken(t.trim().to_owned())),
            Err(e) => {
                eprintln!("pinion status: cannot read {}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    let doc = match fetch(addr, token.as_ref()) {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("pinion status: {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let empty = print(&doc, &mut std::io::stdout());
    for pool in &empty {
        eprintln!("pinion status: pool {pool} has no healthy server");
    }
    if empty.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `GET /status` over plain HTTP/1.1 (the admin listener has no TLS), with a deadline.
fn fetch(addr: SocketAddr, token: Option<&AdminToken>) -> Result<Value, String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or_else(String::new, |t| {
        format!("Authorization: Bearer {}\r\n", t.0)
    });
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default());
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    match status {
        "200" => {}
        "401" => {
            return Err("401: admin.token is set; give it with -c FILE or --token-file".into())
        }
        other => return Err(format!("/status answered {other}")),
    }
    serde_json::from_slice(raw.get(split + 4..).unwrap_or_default())
        .map_err(|e| format!("/status is not JSON: {e}"))
}

/// Prints the table; the pools without a healthy server.
pub fn print(doc: &Value, out: &mut dyn std::io::Write) -> Vec<String> {
    let config = &doc["config"];
    let _ = writeln!(
        out,
        "generation {} loaded {} from {}{}",
        config["generation"],
        config["loaded_at"].as_str().unwrap_or("?"),
        config["file"].as_str().unwrap_or("?"),
        if doc["draining"].as_bool() == Some(true) {
            " (DRAINING)"
        } else {
            ""
        }
    );
    let mut rows = vec![[
        "POOL",
        "SERVER",
        "HEALTH",
        "REASON",
        "PIN",
        "WHITELISTED",
        "EXPIRY",
    ]
    .map(String::from)];
    let mut empty = Vec::new();
    let no_pools = Vec::new();
    for pool in doc["pools"].as_array().unwrap_or(&no_pools) {
        let name = pool["name"].as_str().unwrap_or("?").to_owned();
        if pool["healthy_servers"].as_u64() == Some(0) {
            empty.push(name.clone());
        }
        let servers = pool["servers"].as_array().unwrap_or(&no_pools);
        if servers.is_empty() {
            rows.push([&name, "-", "-", "no server", "-", "-", "-"].map(String::from));
        }
        for s in servers {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            let listed = if pool["tls"].as_bool() != Some(true) {
                "plain"
            } else if !s["pin_match"].is_null() {
                "yes"
            } else if !s["presented_pin"].is_null() {
                "NO"
            } else {
                "-"
            };
            let expiry = s["certificate_expiry_days"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |d| format!("{d:.0}d"));
            let mut reason = text(&s["reason"]);
            if let Some(w) = s["pin_warnings"].as_array().filter(|w| !w.is_empty()) {
                let msgs: Vec<String> = w.iter().map(|w| text(&w["message"])).collect();
                reason = format!("{reason}; {}", msgs.join("; "));
            }
            rows.push([
                name.clone(),
                text(&s["server"]),
                if s["healthy"].as_bool() == Some(true) {
                    "up".into()
                } else {
                    "DOWN".into()
                },
                reason,
                text(&s["presented_pin"]),
                listed.into(),
                expiry,
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    empty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_the_refused_server_and_the_empty_pool() {
        let doc = serde_json::json!({
            "draining": false,
            "config": {"generation": 3, "loaded_at": "2026-01-01T00:00:00Z", "file": "/x.yaml"},
            "pools": [
                {"name": "good", "tls": true, "healthy_servers": 1, "servers": [
                    {"server": "127.0.0.1:1", "healthy": true, "reason": null,
                     "presented_pin": "AAA=", "pin_match": {"pin": "AAA="},
                     "certificate_expiry_days": 89.6, "pin_warnings": []}]},
                {"name": "bad", "tls": true, "healthy_servers": 0, "servers": [
                    {"server": "127.0.0.1:2", "healthy": false,
                     "reason": "certificate public key not whitelisted",
                     "presented_pin": "BBB=", "pin_match": null,
                     "certificate_expiry_days": 5.2, "pin_warnings": []}]},
            ],
        });
        let mut out = Vec::new();
        let empty = print(&doc, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(empty, vec!["bad".to_owned()]);
        let bad = text.lines().find(|l| l.starts_with("bad")).unwrap();
        assert!(bad.contains("DOWN") && bad.contains("not whitelisted"));
        assert!(bad.contains("BBB=") && bad.contains("NO") && bad.contains("5d"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("good") && l.contains("yes")));
        assert!(text.starts_with("generation 3 "));
    }
}
