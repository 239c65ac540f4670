//! A real gRPC backend and client for tests: tonic's server-side gRPC machinery and its
//! standard health service, served by hyper's HTTP/2 over OpenSSL (or h2c) on 127.0.0.1:0,
//! and tonic's client over TLS to the gateway.
//!
//! Service `test.Echo`: `Unary` (echoes, after `sleep_ms`), `ServerStream` (`seq` messages of
//! `size` bytes), `ClientStream` (counts what it receives), `Bidi` (echoes each message as it
//! arrives). Requests that are not gRPC get `200 <name> <path>` as plain text.

use super::certs::Identity;
use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{select_next_proto, AlpnError, SslAcceptor};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// The one message type of `test.Echo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub seq: u32,
    #[prost(string, tag = "3")]
    pub server: String,
    #[prost(uint32, tag = "4")]
    pub sleep_ms: u32,
    #[prost(uint32, tag = "5")]
    pub size: u32,
    #[prost(uint64, tag = "6")]
    pub total: u64,
}

#[derive(Default)]
struct State {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    /// Bytes read from clients after the TLS handshake (the HTTP/2 preface included).
    bytes: AtomicUsize,
    calls: AtomicUsize,
}

/// A running gRPC backend; stops when dropped.
pub struct GrpcBackend {
    pub port: u16,
    state: Arc<State>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl GrpcBackend {
    /// A gRPC backend over TLS presenting `identity` (ALPN `h2` only).
    pub fn tls(name: &str, identity: &Identity) -> GrpcBackend {
        let mut b = identity.acceptor_builder().unwrap();
        b.set_alpn_select_callback(|_, client| {
            select_next_proto(b"\x02h2", client).ok_or(AlpnError::NOACK)
        });
        GrpcBackend::start(name, Some(Arc::new(b.build())))
    }

    /// A gRPC backend over cleartext HTTP/2 (h2c, prior knowledge).
    pub fn h2c(name: &str) -> GrpcBackend {
        GrpcBackend::start(name, None)
    }

    fn start(name: &str, tls: Option<Arc<SslAcceptor>>) -> GrpcBackend {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        rt.block_on(health.set_service_status("test.Echo", tonic_health::ServingStatus::Serving));
        let (stop, stopped) = watch::channel(false);
        let router = Router {
            echo: Echo {
                name: name.into(),
                state: state.clone(),
            },
            health: HealthService::new(health_service),
        };
        rt.spawn(accept(listener, tls, router, state.clone(), stopped));
        GrpcBackend {
            port,
            state,
            health,
            stop,
            rt: Some(rt),
        }
    }

    /// TCP connections accepted.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed.
    pub fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    /// Bytes received after the TLS handshake, on every connection.
    pub fn bytes(&self) -> usize {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// Requests (gRPC calls and plain requests) received.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Sets what the standard health service answers for `service`.
    pub fn set_health(&self, service: &str, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        if let Some(rt) = &self.rt {
            rt.block_on(self.health.set_service_status(service, status));
        }
    }

    /// Graceful shutdown: stops accepting, sends GOAWAY on every connection and lets the calls
    /// in flight finish.
    pub fn goaway(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<SslAcceptor>>,
    router: Router,
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            _ = stopped.changed() => return,
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let (tls, router, state, stopped) =
            (tls.clone(), router.clone(), state.clone(), stopped.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, tcp) else {
                        return;
                    };
                    if Pin::new(&mut stream).accept().await.is_err() {
                        return;
                    }
                    state.handshakes.fetch_add(1, Ordering::SeqCst);
                    serve(Counted(stream, state.clone()), router, stopped).await;
                }
                None => serve(Counted(tcp, state.clone()), router, stopped).await,
            }
        });
    }
}

async fn serve<S>(stream: Counted<S>, router: Router, mut stopped: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A stream that counts the bytes read from it.
struct Counted<S>(S, Arc<State>);

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.1.bytes.fetch_add(read, Ordering::SeqCst);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type HttpResponse = http::Response<tonic::body::Body>;
type BoxFuture =
    Pin<Box<dyn Future<Output = Result<HttpResponse, std::convert::Infallible>> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

type HealthService =
    tower::util::BoxCloneService<http::Request<Incoming>, HttpResponse, std::convert::Infallible>;

#[derive(Clone)]
struct Router {
    echo: Echo,
    health: HealthService,
}

impl tower::Service<http::Request<Incoming>> for Router {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> BoxFuture {
        if req.uri().path().starts_with("/grpc.health.v1.Health/") {
            let mut health = self.health.clone();
            return Box::pin(async move {
                use tower::ServiceExt;
                health.ready().await?.call(req).await
            });
        }
        let echo = self.echo.clone();
        Box::pin(async move { Ok(echo.handle(req).await) })
    }
}

#[derive(Clone)]
struct Echo {
    name: Arc<str>,
    state: Arc<State>,
}

impl Echo {
    async fn handle(self, req: http::Request<Incoming>) -> HttpResponse {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let grpc = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            let body = format!("{} {}\n", self.name, req.uri().path());
            return http::Response::new(tonic::body::Body::new(http_body_util_full(body)));
        }
        let codec = tonic_prost::ProstCodec::<Msg, Msg>::default();
        let mut grpc = tonic::server::Grpc::new(codec);
        let name = self.name.to_string();
        match req.uri().path() {
            "/test.Echo/Unary" => {
                let svc = tower::service_fn(move |r: Request<Msg>| {
                    let name = name.clone();
                    async move {
                        let m = r.into_inner();
                        tokio::time::sleep(Duration::from_millis(u64::from(m.sleep_ms))).await;
                        Ok::<_, Status>(Response::new(Msg { server: name, ..m }))
                    }
                });
                grpc.unary(svc, req).await
            }
            "/test.Echo/ServerStream" => {
                let svc = tower::service_fn(move |r: Request<Msg>| {
                    let name = name.clone();
                    async move {
                        let m = r.into_inner();
                        let size = m.size as usize;
                        let out: MsgStream =
                            Box::pin(futures::stream::iter((0..m.seq).map(move |i| {
                                Ok(Msg {
                                    data: vec![b'x'; size],
                                    seq: i,
                                    server: name.clone(),
                                    ..Msg::default()
                                })
                            })));
                        Ok::<_, Status>(Response::new(out))
                    }
                });
                grpc.server_streaming(svc, req).await
            }
            "/test.Echo/ClientStream" => {
                let svc = tower::service_fn(move |r: Request<Streaming<Msg>>| {
                    let name = name.clone();
                    async move {
                        let mut stream = r.into_inner();
                        let (mut count, mut total) = (0u32, 0u64);
                        while let Some(m) = stream.next().await {
                            let m = m?;
                            count += 1;
                            total += m.data.len() as u64;
                        }
                        Ok::<_, Status>(Response::new(Msg {
                            seq: count,
                            total,
                            server: name,
                            ..Msg::default()
                        }))
                    }
                });
                grpc.client_streaming(svc, req).await
            }
            "/test.Echo/Bidi" => {
                let svc = tower::service_fn(move |r: Request<Streaming<Msg>>| {
                    let name = name.clone();
                    async move {
                        let out: MsgStream = Box::pin(r.into_inner().map(move |m| {
                            m.map(|m| Msg {
                                server: name.clone(),
                                ..m
                            })
                        }));
                        Ok::<_, Status>(Response::new(out))
                    }
                });
                grpc.streaming(svc, req).await
            }
            _ => Status::unimplemented("no such method").into_http(),
        }
    }
}

/// A complete body from a string.
fn http_body_util_full(
    s: String,
) -> impl http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Send + 'static {
    Full(Some(bytes::Bytes::from(s)))
}

struct Full(Option<bytes::Bytes>);

impl http_body::Body for Full {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A tonic client channel to the gateway's TLS listener on `port` (ALPN `h2`).
pub async fn channel(port: u16) -> tonic::transport::Channel {
    channel_for(port, "https://grpc.example.com").await
}

/// [`channel`] with `origin` as the calls' scheme and `:authority`.
pub async fn channel_for(port: u16, origin: &'static str) -> tonic::transport::Channel {
    let connector = super::client::connector(Some(b"\x02h2"));
    tonic::transport::Endpoint::from_static(origin)
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tls = super::client::tls_stream(&connector, port)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

/// A gRPC client of `test.Echo` over `channel`.
pub struct Client(tonic::client::Grpc<tonic::transport::Channel>);

fn path(method: &str) -> http::uri::PathAndQuery {
    format!("/test.Echo/{method}").parse().unwrap()
}

impl Client {
    pub fn new(channel: tonic::transport::Channel) -> Client {
        Client(tonic::client::Grpc::new(channel))
    }

    fn codec() -> tonic_prost::ProstCodec<Msg, Msg> {
        tonic_prost::ProstCodec::default()
    }

    /// `Unary`, with a deadline when given.
    pub async fn unary(&mut self, m: Msg, deadline: Option<Duration>) -> Result<Msg, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut req = Request::new(m);
        if let Some(d) = deadline {
            // As `grpc-timeout` only: tonic's own client-side timer would otherwise race the
            // gateway's answer.
            let value = format!("{}m", d.as_millis()).parse().unwrap();
            req.metadata_mut().insert("grpc-timeout", value);
        }
        Ok(self
            .0
            .unary(req, path("Unary"), Client::codec())
            .await?
            .into_inner())
    }

    /// `ServerStream`: `count` messages of `size` bytes.
    pub async fn server_stream(&mut self, count: u32, size: u32) -> Result<Vec<Msg>, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = Request::new(Msg {
            seq: count,
            size,
            ..Msg::default()
        });
        let mut stream = self
            .0
            .server_streaming(req, path("ServerStream"), Client::codec())
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            out.push(m?);
        }
        Ok(out)
    }

    /// `ClientStream` of `messages`.
    pub async fn client_stream(&mut self, messages: Vec<Msg>) -> Result<Msg, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = Request::new(futures::stream::iter(messages));
        Ok(self
            .0
            .client_streaming(req, path("ClientStream"), Client::codec())
            .await?
            .into_inner())
    }

    /// `Bidi`: sends each message only after the previous one's echo came back, so nothing
    /// passes unless each message is forwarded as it is sent.
    pub async fn ping_pong(&mut self, rounds: u32, size: usize) -> Result<Vec<Msg>, Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut inbound = self
            .0
            .streaming(Request::new(outbound), path("Bidi"), Client::codec())
            .await?
            .into_inner();
        let mut out = Vec::new();
        for i in 0..rounds {
            let m = Msg {
                data: vec![b'y'; size],
                seq: i,
                ..Msg::default()
            };
            tx.send(m)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            let echo = tokio::time::timeout(Duration::from_secs(10), inbound.next())
                .await
                .map_err(|_| Status::deadline_exceeded("no echo within 10 s"))?
                .ok_or_else(|| Status::internal("stream ended early"))??;
            out.push(echo);
        }
        drop(tx);
        while let Some(m) = inbound.next().await {
            m?;
        }
        Ok(out)
    }
}
