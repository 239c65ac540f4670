//! The audit log: trust changes and refused keys as hash-chained JSON lines, and
//! `pinion audit verify` finding an edited line.

use crate::harness::{get, pinion, wait_for, Backend, Env, Identity};
use crate::operations::reload;
use std::path::Path;
use std::time::Duration;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(path: &Path) -> (Option<i32>, String) {
    let out = pinion()
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn trust_changes_and_refused_keys_are_chained_lines_and_an_edit_is_detected() {
    let good = Identity::self_signed(&["api.internal"]);
    let next = Identity::self_signed(&["api.internal"]);
    let impostor_key = Identity::self_signed(&["api.internal"]);
    let (api, impostor) = (
        Backend::https("api", &good),
        Backend::https("impostor", &impostor_key),
    );
    let env = Env::new();
    let log = env.path().join("audit.log");
    let listeners = env.listeners();
    let config = |api_pins: &str| {
        format!(
            "audit_log: audit.log\n{}pools:\n  - name: api\n    servers: [127.0.0.1:{}]\n    probe: false\n    tls:\n      pins:\n{api_pins}  - name: guarded\n    servers: [127.0.0.1:{}]\n    probe: false\n    tls:\n      pins: [{{sha256: \"{}\"}}]\nroutes:\n  - name: guarded\n    paths: [\"/guarded/*\"]\n    pool: guarded\n  - name: api\n    pool: api\n",
            listeners,
            api.port,
            impostor.port,
            good.pin()
        )
    };
    let first = config(&format!("        - sha256: \"{}\"\n", good.pin()));
    let file = env.write_config(&first);
    let gw = env.start(&first);

    let start = wait_for("the start line", Duration::from_secs(10), || {
        lines(&log).first().cloned()
    });
    assert_eq!(start["event"], "start");
    assert_eq!(start["seq"], 1);
    assert_eq!(start["prev"], "0".repeat(64));
    assert_eq!(
        start["pools"]["api"]["pins"][0]["sha256"],
        good.pin().as_str()
    );
    assert_eq!(start["pools"]["api"]["pin_mode"], "enforce");
    assert_eq!(start["config_sha256"].as_str().unwrap().len(), 64);

    // Refusals: several requests, one line (rate-limited per pool, server and key).
    for _ in 0..3 {
        assert_eq!(get(gw.port(), "h", "/guarded/x").status, 502);
    }
    assert_eq!(impostor.request_bytes(), 0);
    let refused = wait_for("the refused_key line", Duration::from_secs(10), || {
        lines(&log)
            .into_iter()
            .find(|l| l["event"] == "refused_key")
    });
    assert_eq!(refused["pool"], "guarded");
    assert_eq!(refused["server"], format!("127.0.0.1:{}", impostor.port));
    assert_eq!(refused["presented_pin"], impostor_key.pin().as_str());
    assert_eq!(refused["reason"], "not_whitelisted");

    // A reload that stages the next key: the line names it, with the new configuration's hash.
    let second = config(&format!(
        "        - sha256: \"{}\"\n        - sha256: \"{}\"\n          not_before: \"2030-01-01T00:00:00Z\"\n",
        good.pin(),
        next.pin()
    ));
    std::fs::write(&file, format!("{}{second}", gw.env.server_section(0))).unwrap();
    reload(&gw, &file);
    let reloaded = wait_for("the reload line", Duration::from_secs(10), || {
        lines(&log).into_iter().find(|l| l["event"] == "reload")
    });
    let change = &reloaded["changes"][0];
    assert_eq!(change["pool"], "api", "{reloaded}");
    assert_eq!(change["pins_added"][0]["sha256"], next.pin().as_str());
    assert_eq!(
        change["pins_added"][0]["not_before"],
        "2030-01-01T00:00:00Z"
    );
    assert!(change.get("pins_removed").is_none(), "{change}");
    assert_ne!(
        reloaded["config_sha256"],
        reloaded["previous_config_sha256"]
    );
    assert_eq!(reloaded["previous_config_sha256"], start["config_sha256"]);
    assert_eq!(get(gw.port(), "h", "/x").status, 200);

    let all = lines(&log);
    assert_eq!(all.len(), 3, "{all:?}");
    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("3 lines, hash chain intact"), "{text}");

    // Someone hides the refusal: the chain breaks right after the edited line.
    let original = std::fs::read_to_string(&log).unwrap();
    let edited = original.replacen("\"reason\":\"not_whitelisted\"", "\"reason\":\"ok\"", 1);
    assert_ne!(edited, original);
    std::fs::write(&log, &edited).unwrap();
    let (code, text) = verify(&log);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("line 3: hash chain broken"), "{text}");
    assert!(text.contains("line 2 hashes to"), "{text}");
}

#[test]
fn a_new_process_records_what_changed_since_the_trust_the_log_last_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (a, b) = (
        Identity::self_signed(&["api.internal"]),
        Identity::self_signed(&["api.internal"]),
    );
    let backend = Backend::https("api", &a);
    let run = |pin: &str| {
        let env = Env::new();
        let yaml = format!(
            "audit_log: {}\n{}pools:\n  - name: api\n    servers: [127.0.0.1:{}]\n    probe: false\n    tls:\n      pins: [{{sha256: \"{pin}\"}}]\nroutes:\n  - name: all\n    pool: api\n",
            log.display(),
            env.listeners(),
            backend.port
        );
        env.start(&yaml)
    };
    let first = run(&a.pin());
    wait_for("the first start line", Duration::from_secs(10), || {
        (lines(&log).len() == 1).then_some(())
    });
    drop(first);
    let _second = run(&b.pin());
    let all = wait_for("the second start line", Duration::from_secs(10), || {
        let all = lines(&log);
        (all.len() == 2).then_some(all)
    });
    assert_eq!(all[1]["event"], "start");
    assert_eq!(all[1]["previous_config_sha256"], all[0]["config_sha256"]);
    let change = &all[1]["changes"][0];
    assert_eq!(change["pool"], "api");
    assert_eq!(change["pins_added"][0]["sha256"], b.pin().as_str());
    assert_eq!(change["pins_removed"][0]["sha256"], a.pin().as_str());
    let (code, text) = verify(&log);
    assert_eq!(code, Some(0), "{text}");
}
