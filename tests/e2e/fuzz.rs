//! Mutated configuration files: the loader returns a configuration or errors, never panics.
//!
//! A bounded run is part of `make test`; a longer one:
//! `PINION_FUZZ_SECONDS=600 cargo test --test e2e fuzz -- --nocapture`
//! (`PINION_FUZZ_SEED` picks another sequence). A failing input is saved next to the test's
//! temporary files and printed.

use crate::harness::Identity;
use pinion::config::{load_with, Resolve};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const SNIPPETS: &[&str] = &[
    "pins:",
    "- sha256: \"AAAA\"",
    "- cert: certs/www.pem",
    "servers: [",
    "]",
    "weight: 99999999999999999999",
    "status: [\"700-1\"]",
    "bind: [::]:0",
    "&a x",
    "*a",
    "<<: *a",
    "!!binary AAAA",
    "- {",
    "? complex",
    "tls: {}",
    "probe: false",
    "affinity: {same_site: none}",
    "paths: [\"/x/*\", \"*\"]",
    "hosts: [\"*.\"]",
    "redirect: {to: \"http://\"}",
    "error_pages: {404: /dev/null}",
    "trusted_proxies: [\"::/0\"]",
    "min_version: 1.3",
    "retries: -1",
    "timeouts: {idle_seconds: 0}",
    "routes: ~",
    "listeners: []",
    "\t",
    "\"\\u0000\"",
    "'",
    ": :",
    "- - -",
    "name: \"\"",
    "balance: ip_hash",
];

fn mutate(seed: &str, rng: &mut StdRng) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    for _ in 0..rng.gen_range(1..=4) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.gen_range(0..lines.len());
        match rng.gen_range(0..7) {
            0 => {
                let line = &mut lines[i];
                if !line.is_empty() {
                    let at = rng.gen_range(0..line.len());
                    if line.is_char_boundary(at) {
                        const CHARS: &[u8] = b":-[]{}\"'#&*!|>%@` 0123456789abcxyz/.\\";
                        let c = CHARS[rng.gen_range(0..CHARS.len())] as char;
                        line.insert(at, c);
                    }
                }
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let copy = lines[i].clone();
                lines.insert(i, copy);
            }
            3 => {
                let j = rng.gen_range(0..lines.len());
                lines.swap(i, j);
            }
            4 => {
                let indent = " ".repeat(rng.gen_range(0..8));
                let snippet = SNIPPETS[rng.gen_range(0..SNIPPETS.len())];
                lines.insert(i, format!("{indent}{snippet}"));
            }
            5 => {
                let line = &mut lines[i];
                let keep = rng.gen_range(0..=line.len());
                if line.is_char_boundary(keep) {
                    line.truncate(keep);
                }
            }
            _ => {
                let value = [
                    "0", "-1", "65536", "1e309", "null", "[]", "{}", "\"\"", "~", "true",
                ][rng.gen_range(0..10)];
                if let Some((key, _)) = lines[i].split_once(':') {
                    lines[i] = format!("{key}: {value}");
                }
            }
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_configurations_never_panic_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    Identity::self_signed(&["www.contoso.com"]).write(&certs, "www");
    Identity::self_signed(&["api.internal"]).write(&certs, "api-backend");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pinion.yaml")).unwrap();
    let file = dir.path().join("pinion.yaml");
    std::fs::write(&file, &example).unwrap();
    assert!(
        load_with(&file, Resolve::Offline).is_ok(),
        "the seed itself is valid"
    );

    let seconds: u64 = std::env::var("PINION_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("PINION_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261128);
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut valid) = (0u64, 0u64);
    while Instant::now() < deadline {
        let input = mutate(&example, &mut rng);
        std::fs::write(&file, &input).unwrap();
        let outcome = std::panic::catch_unwind(|| load_with(&file, Resolve::Offline));
        match outcome {
            Ok(result) => valid += u64::from(result.is_ok()),
            Err(_) => {
                let saved = dir.keep().join("crash.yaml");
                std::fs::write(&saved, &input).unwrap();
                panic!(
                    "the loader panicked on {} (seed {seed}, run {runs}):\n{input}",
                    saved.display()
                );
            }
        }
        runs += 1;
    }
    eprintln!("{runs} mutated configurations ({valid} still valid) loaded without a panic");
    assert!(runs >= 100, "only {runs} runs in {seconds}s");
}
