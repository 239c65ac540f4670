//! `pinion demo`: a self-contained gateway on loopback with generated certificates, one pool
//! whose backend key is whitelisted and one whose backend presents another key (502).

pub mod backend;
pub mod certs;

use crate::config::{self, ConfigError};
use crate::server::{self, RunMode, StartError};
use backend::{Backend, BackendError};
use certs::{Ca, CertError, Identity};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `pinion demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port of the demo's HTTPS listener on 127.0.0.1.
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Port of the demo's admin listener on 127.0.0.1.
    #[arg(long, default_value_t = 9900)]
    pub admin_port: u16,
    /// Instead of running the demo: write the example configuration (conf/pinion.yaml) into
    /// DIR unless it is there, and generate the keys and certificates it names that are
    /// missing; then exit.
    #[arg(long, value_name = "DIR")]
    pub write_config: Option<PathBuf>,
}

/// The example configuration shipped as conf/pinion.yaml.
const EXAMPLE: &str = include_str!("../conf/pinion.yaml");

/// The certificates and keys the example names: (file stem under `certs/`, names it is for).
const EXAMPLE_IDENTITIES: [(&str, &[&str]); 2] = [
    (
        "www",
        &["www.contoso.com", "*.contoso.com", "localhost", "127.0.0.1"],
    ),
    ("api-backend", &["api.internal"]),
];

/// Errors starting the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Certificates could not be generated.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A backend could not start.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The working directory or config file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The demo port is taken.
    #[error("127.0.0.1:{port} is not free ({source}); choose another with --port")]
    PortBusy { port: u16, source: std::io::Error },
    /// The generated configuration did not validate (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The gateway failed to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A pin could not be computed.
    #[error(transparent)]
    Pin(#[from] crate::tls::TlsError),
}

/// Runs the demo until the process is stopped (or writes the example, with `--write-config`).
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if let Some(dir) = &args.write_config {
        for line in write_example(dir)? {
            println!("{line}");
        }
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("pinion-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Write {
        path: dir.clone(),
        source,
    })?;
    std::net::TcpListener::bind(("127.0.0.1", args.port)).map_err(|source| {
        DemoError::PortBusy {
            port: args.port,
            source,
        }
    })?;
    Identity::self_signed(&["localhost", "127.0.0.1"])?.write(&dir, "gateway")?;
    let trusted = Identity::self_signed(&["backend.demo"])?;
    trusted.write(&dir, "trusted-backend")?;
    let impostor = Identity::self_signed(&["backend.demo"])?;
    // A client CA and one client certificate for the route that requires one.
    let clients = Ca::new("pinion demo clients")?;
    clients.write(&dir, "clients-ca")?;
    clients.issue(&["demo-client"])?.write(&dir, "client")?;
    let good = Backend::https("trusted-backend", &trusted, "127.0.0.1:0")?;
    let bad = Backend::https("impostor-backend", &impostor, "127.0.0.1:0")?;
    let file = dir.join("pinion.yaml");
    let yaml = demo_yaml(&dir, args, good.port(), bad.port());
    std::fs::write(&file, yaml).map_err(|source| DemoError::Write {
        path: file.clone(),
        source,
    })?;
    let config = config::load(&file)?;
    println!(
        "{}",
        instructions(&file, args, &trusted.pin()?, &impostor.pin()?)
    );
    server::run(&config, RunMode::default())?;
    // Keep the backends alive for as long as the gateway runs.
    drop((good, bad));
    Ok(())
}

/// Writes the example configuration into `dir` (unless it is there) and generates the key and
/// certificate files it names that are missing; never replaces a file. Returns what it did.
pub fn write_example(dir: &Path) -> Result<Vec<String>, DemoError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::Write { path, source }
    };
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(write_err(&certs))?;
    let mut done = Vec::new();
    let file = dir.join("pinion.yaml");
    if file.exists() {
        done.push(format!("{}: kept", file.display()));
    } else {
        std::fs::write(&file, EXAMPLE).map_err(write_err(&file))?;
        done.push(format!("{}: written", file.display()));
    }
    for (stem, names) in EXAMPLE_IDENTITIES {
        let (pem, key) = (
            certs.join(format!("{stem}.pem")),
            certs.join(format!("{stem}.key")),
        );
        if pem.exists() && key.exists() {
            done.push(format!("{}: kept", pem.display()));
            continue;
        }
        let identity = Identity::self_signed(names)?;
        identity.write(&certs, stem)?;
        done.push(format!(
            "{} and {}: generated for {}, pin {}",
            pem.display(),
            key.display(),
            names.join(", "),
            identity.pin()?
        ));
    }
    Ok(done)
}

fn demo_yaml(dir: &Path, args: &DemoArgs, good: u16, bad: u16) -> String {
    let d = dir.display();
    let (port, admin) = (args.port, args.admin_port);
    format!(
        "# Generated by `pinion demo`.
server:
  threads: 2
  pid_file: {d}/pinion.pid
  upgrade_sock: {d}/upgrade.sock
  control_sock: {d}/control.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - name: demo-https
    bind: 127.0.0.1:{port}
    tls:
      certificates:
        - cert: gateway.pem
          key: gateway.key
      client_auth:
        mode: optional          # every client gets in; /mtls/ requires a verified certificate
        ca: clients-ca.pem
pools:
  - name: trusted
    servers: [127.0.0.1:{good}]
    tls:
      sni: backend.demo
      pins:
        - cert: trusted-backend.pem
  - name: untrusted
    servers: [127.0.0.1:{bad}]
    probe: {{interval_seconds: 5, unhealthy_threshold: 1}}
    tls:
      sni: backend.demo
      pins:
        - cert: trusted-backend.pem    # the server presents another key: every request gets 502
routes:
  - name: mtls
    paths: [\"/mtls/*\"]
    pool: trusted
    client_certificate: required
  - name: untrusted
    paths: [\"/untrusted/*\"]
    pool: untrusted
  - name: trusted
    pool: trusted
"
    )
}

fn instructions(file: &Path, args: &DemoArgs, good_pin: &str, bad_pin: &str) -> String {
    let f = file.display();
    let (port, admin) = (args.port, args.admin_port);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pinion demo: a gateway on https://localhost:{port}, its config in {f}\n"
    );
    let _ = writeln!(s, "  curl -k https://localhost:{port}/hello");
    let _ = writeln!(
        s,
        "      pool \"trusted\": the backend's key {good_pin} is whitelisted, 200"
    );
    let _ = writeln!(s, "  curl -k https://localhost:{port}/untrusted/hello");
    let _ = writeln!(
        s,
        "      pool \"untrusted\": the backend presents {bad_pin}, not on the whitelist: 502,"
    );
    let _ = writeln!(
        s,
        "      the backend receives no request bytes, and the log below says why"
    );
    let d = file.parent().map(Path::display);
    let d = d.map(|d| d.to_string()).unwrap_or_default();
    let _ = writeln!(s, "  curl -k https://localhost:{port}/mtls/hello");
    let _ = writeln!(
        s,
        "      route \"mtls\" requires a client certificate: 403 without one"
    );
    let _ = writeln!(
        s,
        "  curl -k --cert {d}/client.pem --key {d}/client.key https://localhost:{port}/mtls/hello"
    );
    let _ = writeln!(
        s,
        "      200: the certificate chains to the demo's client CA; the backend is told who"
    );
    let _ = writeln!(
        s,
        "      the client is (X-Client-Cert-Subject: CN=demo-client)"
    );
    let _ = writeln!(
        s,
        "  curl -k https://localhost:{port}/a/../hello -H 'X-Forwarded-For: 6.6.6.6'"
    );
    let _ = writeln!(
        s,
        "      routed as /hello; the spoofed X-Forwarded-For never reaches the backend"
    );
    let _ = writeln!(s, "  open http://127.0.0.1:{admin}/ in a browser");
    let _ = writeln!(
        s,
        "      the status page: pools, servers, reasons, pins, expiry, traffic"
    );
    let _ = writeln!(s, "  curl http://127.0.0.1:{admin}/status");
    let _ = writeln!(
        s,
        "      every server's health, the reason it is out, the pin it presents"
    );
    let _ = writeln!(s, "  curl http://127.0.0.1:{admin}/metrics");
    let _ = writeln!(
        s,
        "      Prometheus metrics: requests, TLS check failures, certificate expiry"
    );
    let _ = writeln!(s, "  pinion preflight -c {f}");
    let _ = writeln!(
        s,
        "      connect to every backend and show which would be rejected"
    );
    let _ = writeln!(s, "  pinion -t -c {f}");
    let _ = writeln!(s, "      validate the generated configuration\n");
    let _ = write!(s, "Ctrl-C stops the demo.");
    s
}
