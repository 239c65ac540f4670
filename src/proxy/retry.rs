//! Whether a failed attempt may be replayed, and where.
//!
//! A request is replayed only when no request byte can have been processed by the server: the
//! connection or TLS handshake failed, the pin check refused the key (all before anything was
//! written), the server said it never processed the HTTP/2 stream, or a pooled connection turned
//! out closed by the server before it answered anything (the idle-close race every keep-alive
//! pool meets). The last case is only replayed for an idempotent method whose body is still all
//! buffered, as RFC 9110 §9.2.2 allows, since the request may have reached a server that then
//! closed. Timeouts, partial responses and failures on fresh connections are never replayed: the
//! server may have acted on the request.
//!
//! A refused stream, or a pooled connection the server closed as the request arrived, says
//! nothing against the server, only about the connection: such a request may be replayed on the
//! same server over another connection, as nginx and HAProxy do, which is what keeps a
//! one-server pool whole when its server recycles connections (nginx's `keepalive_requests`, a
//! short keep-alive timeout, a graceful restart). Every other replay goes to another server.

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

/// Where a failed attempt may be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Nowhere: the server may have acted on the request.
    Never,
    /// On another server only: this one failed, or may be failing.
    OtherServer,
    /// On another server, or on this one over another connection: the server had closed this
    /// pooled connection (counted in `retries`).
    ClosedConnection,
    /// On another server, or on this one again: it never processed the request, and only the
    /// connection turned it away (HTTP/2; its own allowance, `REFUSED_REPLAYS`).
    RefusedStream,
}

impl Replay {
    /// Whether the replay may go to the same server when no other is left.
    pub(super) fn same_server(self) -> bool {
        matches!(self, Replay::ClosedConnection | Replay::RefusedStream)
    }
}

/// Replays of refused streams per request, at least (`retries` when higher). They have their own
/// allowance: under load a backend that recycles connections (nginx at `keepalive_requests`)
/// refuses dozens of streams at once, and a replay may land on another connection it is about
/// to recycle, so `retries`, meant for failing servers, would run out on a healthy one.
pub(super) const REFUSED_REPLAYS: u32 = 5;

/// Whether a replay of kind `replay` is within the request's allowance: `attempts` made so far,
/// `refused` of them replays of refused streams, under the pool's `retries` (0: no replay of
/// any kind). Never for `Replay::Never`.
pub(super) fn within_budget(replay: Replay, retries: u32, attempts: usize, refused: u32) -> bool {
    match replay {
        Replay::Never => false,
        _ if retries == 0 => false,
        Replay::RefusedStream => refused < REFUSED_REPLAYS.max(retries),
        Replay::OtherServer | Replay::ClosedConnection => {
            attempts.saturating_sub(refused as usize) <= retries as usize
        }
    }
}

/// Where the attempt that failed with `e` may be replayed.
pub(super) fn replayable(e: &Error, a: Attempt) -> Replay {
    if a.nothing_sent {
        return Replay::OtherServer;
    }
    if !a.answered && !a.body_truncated && refused_stream(e) {
        return Replay::RefusedStream;
    }
    if pooled_close(e, a) {
        Replay::ClosedConnection
    } else {
        Replay::Never
    }
}

/// A pooled connection the server had closed before it answered an idempotent request.
fn pooled_close(e: &Error, a: Attempt) -> bool {
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
        assert_eq!(
            replayable(&refused(h2::Reason::REFUSED_STREAM), post),
            Replay::RefusedStream
        );
        let goaway = Error::because(
            ErrorType::H2Error,
            "while reading h2 header",
            h2::Error::from(h2::Reason::NO_ERROR),
        );
        assert_eq!(
            replayable(&goaway, post),
            Replay::Never,
            "not the server's GOAWAY"
        );
        assert_eq!(
            replayable(&refused(h2::Reason::INTERNAL_ERROR), post),
            Replay::Never
        );
        let answered = Attempt {
            answered: true,
            ..post
        };
        assert_eq!(
            replayable(&refused(h2::Reason::REFUSED_STREAM), answered),
            Replay::Never
        );
    }

    #[test]
    fn refused_streams_have_their_own_allowance_and_retries_zero_allows_nothing() {
        // Two server failures use up `retries: 2`; refused streams do not count against it.
        assert!(within_budget(Replay::OtherServer, 2, 2, 0));
        assert!(!within_budget(Replay::OtherServer, 2, 3, 0));
        assert!(within_budget(Replay::OtherServer, 2, 7, 5));
        assert!(within_budget(Replay::ClosedConnection, 2, 2, 0));
        assert!(!within_budget(Replay::ClosedConnection, 2, 3, 0));
        assert!(within_budget(Replay::RefusedStream, 2, 3, 2));
        assert!(within_budget(
            Replay::RefusedStream,
            1,
            5,
            REFUSED_REPLAYS - 1
        ));
        assert!(!within_budget(Replay::RefusedStream, 2, 6, REFUSED_REPLAYS));
        // A higher `retries` raises it.
        assert!(within_budget(Replay::RefusedStream, 10, 10, 9));
        assert!(!within_budget(Replay::RefusedStream, 10, 11, 10));
        for replay in [
            Replay::OtherServer,
            Replay::ClosedConnection,
            Replay::RefusedStream,
        ] {
            assert!(!within_budget(replay, 0, 1, 0), "{replay:?}");
        }
        assert!(!within_budget(Replay::Never, 2, 1, 0));
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
            assert_eq!(replayable(&e, post), Replay::OtherServer, "{e}");
        }
    }

    #[test]
    fn a_pooled_connection_closed_before_answering_is_replayed_for_idempotent_requests() {
        assert_eq!(
            replayable(&idle_close(), GET_ON_POOLED),
            Replay::ClosedConnection
        );
        let reset = failure(
            ErrorType::ReadError,
            "while reading response headers, bytes already read: 0",
            true,
        );
        assert_eq!(replayable(&reset, GET_ON_POOLED), Replay::ClosedConnection);
        let unwritten = failure(
            ErrorType::WriteError,
            "while writing request headers",
            false,
        );
        assert_eq!(
            replayable(&unwritten, GET_ON_POOLED),
            Replay::ClosedConnection
        );
        // Pingora wraps errors on their way up; the decision looks through the wrapping.
        assert_eq!(
            replayable(
                &idle_close().more_context("Peer: 127.0.0.1:1"),
                GET_ON_POOLED
            ),
            Replay::ClosedConnection
        );
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
            assert_eq!(replayable(&idle_close(), attempt), Replay::Never, "{what}");
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
            assert_eq!(replayable(&e, GET_ON_POOLED), Replay::Never, "{e}");
        }
    }
}
