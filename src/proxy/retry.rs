//! Whether a failed attempt may be replayed on another server.
//!
//! A request is replayed only when no request byte can have been processed by the server: the
//! connection or TLS handshake failed, the pin check refused the key (all before anything was
//! written), or a pooled connection turned out closed by the server before it answered anything
//! (the idle-close race every keep-alive pool meets). The last case is only replayed for an
//! idempotent method whose body is still all buffered, as RFC 9110 §9.2.2 allows, since the
//! request may have reached a server that then closed. Timeouts, partial responses and failures
//! on fresh connections are never replayed: the server may have acted on the request.

use pingora::{Error, ErrorType, RetryType};

/// What is known about a failed attempt besides the error itself.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Attempt {
    /// The failure came before any request byte was written (connect, handshake, pin refusal).
    pub nothing_sent: bool,
    /// The connection came from the pool of idle connections.
    pub reused: bool,
    /// The method is idempotent (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// Part of the request body is no longer in the retry buffer.
    pub body_truncated: bool,
    /// Some of the response (its header) had arrived.
    pub answered: bool,
}

/// Whether the attempt that failed with `e` may be replayed on another server.
pub(super) fn replayable(e: &Error, a: Attempt) -> bool {
    if a.nothing_sent {
        return true;
    }
    if !a.answered && !a.body_truncated && refused_stream(e) {
        return true;
    }
    if !a.reused || !a.idempotent || a.body_truncated || a.answered {
        return false;
    }
    match e.etype() {
        // The request header could not be written: the server had already closed.
        ErrorType::WriteError => contexts(e).any(|c| {
            c.starts_with("while writing request headers")
                || c.starts_with("flushing request header")
        }),
        // Pingora marks a close or reset met while waiting for the response header as safe on
        // reused connections only; a header already partly received shows the server answered.
        ErrorType::ConnectionClosed | ErrorType::ReadError => {
            matches!(e.retry, RetryType::ReusedOnly)
                && contexts(e).any(|c| c.ends_with("bytes already read: 0"))
        }
        _ => false,
    }
}

/// An HTTP/2 stream the server says it never processed: refused with `REFUSED_STREAM`, or
/// beyond the last stream its GOAWAY accepted (RFC 9113 §8.7). Replaying it is safe for any
/// method.
fn refused_stream(e: &Error) -> bool {
    e.root_cause()
        .downcast_ref::<h2::Error>()
        .is_some_and(|h2| {
            (h2.is_go_away() && h2.is_remote()) || h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        })
}

/// The contexts along the error's chain, outermost first (Pingora adds its own on the way up).
fn contexts(e: &Error) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(e), |e| {
        let cause = e.cause.as_deref()?;
        // `Error::because(.., boxed_error)` keeps the box: the cause is then a `Box<Error>`.
        cause
            .downcast_ref::<Error>()
            .or_else(|| cause.downcast_ref::<Box<Error>>().map(|b| &**b))
    })
    .filter_map(|e| e.context.as_ref().map(|c| c.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure as Pingora's HTTP/1.1 client reports it.
    fn failure(etype: ErrorType, context: &str, reused_only: bool) -> Box<Error> {
        let mut e = Error::explain(etype, context.to_owned());
        if reused_only {
            e.retry = RetryType::ReusedOnly;
        }
        e.into_up()
    }

    fn idle_close() -> Box<Error> {
        failure(
            ErrorType::ConnectionClosed,
            "while reading response headers, bytes already read: 0",
            true,
        )
    }

    const GET_ON_POOLED: Attempt = Attempt {
        nothing_sent: false,
        reused: true,
        idempotent: true,
        body_truncated: false,
        answered: false,
    };

    #[test]
    fn a_refused_http2_stream_is_replayed_for_any_method_unless_answered() {
        let refused = |reason| {
            Error::because(
                ErrorType::H2Error,
                "while reading h2 header",
                h2::Error::from(reason),
            )
            .into_up()
        };
        let post = Attempt {
            idempotent: false,
            ..Attempt::default()
        };
        assert!(replayable(&refused(h2::Reason::REFUSED_STREAM), post));
        assert!(!replayable(&refused(h2::Reason::INTERNAL_ERROR), post));
        let answered = Attempt {
            answered: true,
            ..post
        };
        assert!(!replayable(&refused(h2::Reason::REFUSED_STREAM), answered));
    }

    #[test]
    fn failures_before_anything_was_sent_are_replayed_for_any_method() {
        let post = Attempt {
            nothing_sent: true,
            idempotent: false,
            ..Attempt::default()
        };
        for e in [
            failure(ErrorType::ConnectRefused, "connect", false),
            failure(ErrorType::TLSHandshakeFailure, "handshake", false),
            failure(ErrorType::InvalidCert, "pin refused", false),
        ] {
            assert!(replayable(&e, post), "{e}");
        }
    }

    #[test]
    fn a_pooled_connection_closed_before_answering_is_replayed_for_idempotent_requests() {
        assert!(replayable(&idle_close(), GET_ON_POOLED));
        let reset = failure(
            ErrorType::ReadError,
            "while reading response headers, bytes already read: 0",
            true,
        );
        assert!(replayable(&reset, GET_ON_POOLED));
        let unwritten = failure(
            ErrorType::WriteError,
            "while writing request headers",
            false,
        );
        assert!(replayable(&unwritten, GET_ON_POOLED));
        // Pingora wraps errors on their way up; the decision looks through the wrapping.
        assert!(replayable(
            &idle_close().more_context("Peer: 127.0.0.1:1"),
            GET_ON_POOLED
        ));
    }

    #[test]
    fn the_same_close_is_not_replayed_when_anything_says_the_server_may_have_acted() {
        let cases = [
            (
                "fresh connection",
                Attempt {
                    reused: false,
                    ..GET_ON_POOLED
                },
            ),
            (
                "POST",
                Attempt {
                    idempotent: false,
                    ..GET_ON_POOLED
                },
            ),
            (
                "body no longer buffered",
                Attempt {
                    body_truncated: true,
                    ..GET_ON_POOLED
                },
            ),
            (
                "response header received",
                Attempt {
                    answered: true,
                    ..GET_ON_POOLED
                },
            ),
        ];
        for (what, attempt) in cases {
            assert!(!replayable(&idle_close(), attempt), "{what}");
        }
    }

    #[test]
    fn timeouts_partial_responses_and_body_failures_are_never_replayed() {
        for e in [
            failure(
                ErrorType::ReadTimedout,
                "while reading response headers",
                false,
            ),
            failure(
                ErrorType::WriteTimedout,
                "while writing request headers (timeout)",
                false,
            ),
            failure(
                ErrorType::ConnectionClosed,
                "while reading response headers, bytes already read: 12",
                true,
            ),
            // A TLS failure on the read (no OS error) is not marked by Pingora.
            failure(
                ErrorType::ReadError,
                "while reading response headers, bytes already read: 0",
                false,
            ),
            failure(ErrorType::WriteError, "while writing body", false),
            failure(ErrorType::ReadError, "while reading body", false),
            failure(ErrorType::InvalidHTTPHeader, "buf: junk", false),
        ] {
            assert!(!replayable(&e, GET_ON_POOLED), "{e}");
        }
    }
}
