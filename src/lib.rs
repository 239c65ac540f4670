//! pinion: an application gateway on Pingora. It terminates client TLS, routes by host and
//! path, and re-encrypts every request to a backend pool, talking only to backends whose
//! certificate public key is on the pool's whitelist (or that chain to the pool's CA).
//!
//! `config` reads and validates the YAML file; `server` assembles Pingora from it; `proxy` is
//! the per-request logic, delegating to `routing`, `pool`, `upstream` and `listener`; `tls`
//! holds the pin type; `cli` is the command line; `demo` is `pinion demo` and its loopback
//! backends.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dns;
pub mod gateway;
pub mod grpc;
pub mod import;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod tls;
pub mod upstream;
