//! `pinion pin FILE...` and `pinion pin --connect HOST:PORT [--sni NAME]`.

use crate::tls::{describe, read_certificates, read_public_key, Pin, TlsError};
use clap::Args;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::Write;
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `pinion pin`.
#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub struct PinArgs {
    /// PEM or DER files holding certificates or public keys.
    #[arg(value_name = "FILE", conflicts_with = "connect")]
    pub files: Vec<PathBuf>,
    /// Connect to HOST:PORT and print the pin of the certificate the server presents.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// SNI to send with --connect (default: HOST unless it is an IP address).
    #[arg(long, value_name = "NAME", requires = "connect")]
    pub sni: Option<String>,
}

/// Errors of `pinion pin`.
#[derive(Debug, thiserror::Error)]
pub enum PinCommandError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// A file holds neither certificates nor a public key.
    #[error("{file}: no certificate or public key found ({cert}; {key})")]
    NoKey {
        file: String,
        cert: TlsError,
        key: TlsError,
    },
    /// Hashing failed.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The address did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The TCP connection failed.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {target} failed: {reason}")]
    Handshake { target: String, reason: String },
    /// The server sent no certificate.
    #[error("{0} presented no certificate")]
    NoCertificate(String),
}

/// Runs `pinion pin`, writing one line per key: `PIN  SOURCE  DESCRIPTION`.
pub fn run(args: &PinArgs, out: &mut impl Write) -> Result<(), PinCommandError> {
    if let Some(target) = &args.connect {
        let (pin, description) = connect(target, args.sni.as_deref())?;
        let _ = writeln!(out, "{pin}  {target}  {description}");
        return Ok(());
    }
    for file in &args.files {
        let name = file.display().to_string();
        for (pin, description) in pins_in_file(file)? {
            let _ = writeln!(out, "{pin}  {name}  {description}");
        }
    }
    Ok(())
}

fn pins_in_file(file: &PathBuf) -> Result<Vec<(Pin, String)>, PinCommandError> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|source| PinCommandError::Read {
        file: name.clone(),
        source,
    })?;
    match read_certificates(&bytes) {
        Ok(certs) => certs
            .iter()
            .map(|c| Ok((Pin::of_cert(c)?, describe(c))))
            .collect(),
        Err(cert) => match read_public_key(&bytes) {
            Ok(key) => Ok(vec![(Pin::of_key(&key)?, "public key".to_owned())]),
            Err(key) => Err(PinCommandError::NoKey {
                file: name,
                cert,
                key,
            }),
        },
    }
}

fn connect(target: &str, sni: Option<&str>) -> Result<(Pin, String), PinCommandError> {
    let addr = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| PinCommandError::Resolve(target.to_owned()))?;
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let sni = sni
        .map(str::to_owned)
        .or_else(|| host.parse::<IpAddr>().is_err().then(|| host.to_owned()));
    let timeout = Duration::from_secs(10);
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|source| PinCommandError::Connect {
            target: target.to_owned(),
            source,
        })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let handshake = |reason: String| PinCommandError::Handshake {
        target: target.to_owned(),
        reason,
    };
    let mut builder =
        SslConnector::builder(SslMethod::tls()).map_err(|e| handshake(e.to_string()))?;
    // We only read the key the server presents; trust is decided by the operator.
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let mut config = connector
        .configure()
        .map_err(|e| handshake(e.to_string()))?;
    config.set_verify_hostname(false);
    config.set_use_server_name_indication(sni.is_some());
    let tls = config
        .connect(sni.as_deref().unwrap_or(""), stream)
        .map_err(|e| handshake(e.to_string()))?;
    let cert = tls
        .ssl()
        .peer_certificate()
        .ok_or_else(|| PinCommandError::NoCertificate(target.to_owned()))?;
    Ok((Pin::of_cert(&cert)?, describe(&cert)))
}
