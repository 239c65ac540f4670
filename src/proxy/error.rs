//! Failures raised by pinion while proxying, and the status each failure is answered with.

use crate::upstream::PinError;
use pingora::{Error, ErrorSource, ErrorType};

/// Errors raised by pinion itself while proxying a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection arrived on a socket no listener owns (a bug, not a client error).
    #[error("connection on an unknown local address")]
    UnknownListener,
    /// The request reached `upstream_peer` without a routed pool.
    #[error("no pool was selected for this request")]
    NoPool,
    /// The pool has no healthy server left to try.
    #[error("pool {pool}: no healthy server left to try: {servers}")]
    NoServer { pool: String, servers: String },
    /// The backend failed the pool's whitelist.
    #[error("pool {pool} server {server}: {reason}")]
    Rejected {
        pool: String,
        server: String,
        reason: PinError,
    },
    /// The normalized path could not be turned back into a request target.
    #[error("cannot build the upstream request target: {0}")]
    Target(#[from] http::uri::InvalidUri),
}

impl ProxyError {
    /// The Pingora error for this failure, with the status it maps to.
    pub(super) fn into_pingora(self) -> Box<Error> {
        let etype = match &self {
            ProxyError::Rejected { .. } => ErrorType::InvalidCert,
            ProxyError::NoServer { .. } => ErrorType::ConnectNoRoute,
            ProxyError::UnknownListener | ProxyError::NoPool | ProxyError::Target(_) => {
                ErrorType::InternalError
            }
        };
        let upstream = matches!(
            self,
            ProxyError::Rejected { .. } | ProxyError::NoServer { .. }
        );
        let mut e = Error::because(etype, "pinion", self);
        e.set_retry(false);
        if upstream {
            e.into_up()
        } else {
            e.into_in()
        }
    }
}

/// The status a failed request is answered with.
pub(super) fn status_for(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ReadTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    }
}
