//! `pinion import azure FILE`: reads the files, calls the pure importer, writes the
//! configuration, its certificate files and the report, then validates what it wrote.

use crate::import::azure::{self, Options};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `pinion import` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// From the cloud application gateway: an ARM template, or the JSON of
    /// `az network application-gateway show`. Writes a pinion configuration and a migration
    /// report (exit 0: the result validates; 1: it does not; 2: usage).
    Azure(AzureArgs),
}

/// `pinion import azure` options.
#[derive(Debug, clap::Args)]
pub struct AzureArgs {
    /// The ARM template or `az network application-gateway show` output (JSON).
    pub file: PathBuf,
    /// Where to write the configuration (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT.yaml")]
    pub output: Option<PathBuf>,
    /// Values for the template's parameters (an ARM parameters file).
    #[arg(long, value_name = "PARAMS.json")]
    pub parameters: Option<PathBuf>,
    /// Directory for certificates, keys and CA files (default: `certs` beside the output).
    #[arg(long = "certs-dir", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Write the migration report (Markdown) to this file instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Runs an import; the process exit code.
pub fn run(command: &ImportCommand) -> ExitCode {
    let ImportCommand::Azure(args) = command;
    match azure_import(args) {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("pinion import azure: {message}");
            ExitCode::from(code)
        }
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, (u8, String)> {
    let text =
        std::fs::read_to_string(path).map_err(|e| (2, format!("{}: {e}", path.display())))?;
    serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|e| (2, format!("{}: not JSON: {e}", path.display())))
}

fn azure_import(args: &AzureArgs) -> Result<ExitCode, (u8, String)> {
    let source = read_json(&args.file)?;
    let parameters = args.parameters.as_deref().map(read_json).transpose()?;
    let out_dir = args
        .output
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (certs_dir, certs_named) = match &args.certs_dir {
        Some(dir) => {
            let abs = crate::config::absolute(dir);
            (abs.clone(), abs.display().to_string())
        }
        None if args.output.is_some() => (out_dir.join("certs"), "certs".to_owned()),
        None => {
            let abs = crate::config::absolute(Path::new("certs"));
            (abs.clone(), abs.display().to_string())
        }
    };
    let options = Options {
        parameters,
        certs_dir: certs_named,
    };
    let imported = azure::import(&source, &options).map_err(|e| (1, e.to_string()))?;
    if !imported.files.is_empty() {
        std::fs::create_dir_all(&certs_dir)
            .map_err(|e| (1, format!("{}: {e}", certs_dir.display())))?;
    }
    for f in &imported.files {
        write_file(&certs_dir.join(&f.name), &f.bytes, f.secret)?;
    }
    let report = imported.report.markdown(&args.file.display().to_string());
    match &args.report {
        Some(path) => write_file(path, report.as_bytes(), false)?,
        None => eprint!("{report}"),
    }
    let Some(out) = &args.output else {
        print!("{}", imported.yaml);
        return Ok(ExitCode::SUCCESS);
    };
    write_file(out, imported.yaml.as_bytes(), false)?;
    // The result is checked by pinion's own loader, without DNS: names may only resolve where
    // the gateway will run.
    match crate::config::load_with(out, crate::config::Resolve::Offline) {
        Ok(_) if !imported.routes_anything => {
            eprintln!(
                "{}: written, but no routing rule could be mapped (it would answer 404 to \
                 everything); see the report",
                out.display()
            );
            Ok(ExitCode::from(1))
        }
        Ok(_) => {
            eprintln!("{}: written; configuration ok", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: written, but it does not validate; see the report and fix it",
                out.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), (u8, String)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))
}
