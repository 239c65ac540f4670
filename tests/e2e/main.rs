//! End-to-end tests: the real `pinion` binary on generated YAML, real TLS backends on
//! 127.0.0.1:0 with keys generated here, and real TLS clients.

// Test code: a failed step should stop the test at once, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod affinity;
mod allocations;
mod audit;
mod client_auth;
mod config_errors;
mod daemon;
mod demo;
mod diagnostics;
mod dns;
mod failures;
mod faults;
mod front_door;
mod front_door_http;
mod fuzz;
mod grpc;
mod headers;
mod hostile;
mod import;
mod limits;
mod operations;
mod pin_chain;
mod pin_command;
mod pinning;
mod pools;
mod readme;
mod reload;
mod routing;
mod soak;
mod status_page;
