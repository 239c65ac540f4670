//! End-to-end tests: the real `pinion` binary on generated YAML, real TLS backends on
//! 127.0.0.1:0 with keys generated here, and real TLS clients.

mod harness;

mod config_errors;
mod headers;
mod pin_command;
mod pinning;
mod routing;
