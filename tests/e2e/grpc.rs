//! HTTP/2 and gRPC to backends over the same pinned TLS: a real gRPC server (tonic over
//! hyper) behind pinion, a real gRPC client (tonic) in front.

use crate::harness::client::block_on;
use crate::harness::grpc::{channel, channel_for, Client, GrpcBackend, Msg};
use crate::harness::{free_port, get, wait_for, Backend, Env, Identity};
use crate::operations::{admin_get, metrics, sample};
use std::time::{Duration, Instant};
use tonic::Code;

/// A pool named `name` over `ports` with `tls` (indented under `tls:`) and `extra` pool keys.
fn pool(name: &str, ports: &[u16], extra: &str, tls: &str) -> String {
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        "  - name: {name}\n    servers: [{}]\n{extra}{}",
        servers.join(", "),
        if tls.is_empty() {
            String::new()
        } else {
            format!("    tls:\n{tls}")
        }
    )
}

/// The test's listener, `pools` (one pool named `grpc`) and a route to it for everything.
fn one_pool(env: &Env, pools: &str) -> String {
    format!(
        "{}pools:\n{pools}routes:\n  - name: grpc\n    pool: grpc\n",
        env.listeners()
    )
}

fn pinned(identity: &Identity) -> String {
    format!(
        "      http2: true\n      pins: [{{sha256: \"{}\"}}]\n",
        identity.pin()
    )
}

#[test]
fn all_four_kinds_of_call_stream_through_a_pinned_http2_pool() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let backend = GrpcBackend::tls("g1", &key);
    let env = Env::new();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\naccess_log:\n  path: access.log\n{}pools:\n{}routes:\n  - name: grpc\n    pool: grpc\n",
        env.listeners(),
        pool("grpc", &[backend.port], "    probe: false\n", &pinned(&key))
    );
    let gw = env.start(&yaml);
    block_on(async {
        let mut c = Client::new(channel(gw.port()).await);
        let m = c
            .unary(
                Msg {
                    data: b"hello".to_vec(),
                    seq: 7,
                    ..Msg::default()
                },
                None,
            )
            .await
            .unwrap_or_else(|s| panic!("{s:?}\n{}", gw.logs()));
        assert_eq!(
            (m.data.as_slice(), m.seq, m.server.as_str()),
            (&b"hello"[..], 7, "g1")
        );

        // Large streamed messages both ways: 16 × 1 MiB down, 24 × 512 KiB up.
        let down = c.server_stream(16, 1 << 20).await.unwrap();
        assert_eq!(down.len(), 16);
        assert!(down.iter().all(|m| m.data.len() == 1 << 20));
        assert_eq!(down.last().unwrap().seq, 15);
        let up: Vec<Msg> = (0..24)
            .map(|i| Msg {
                data: vec![b'z'; 512 << 10],
                seq: i,
                ..Msg::default()
            })
            .collect();
        let summary = c.client_stream(up).await.unwrap();
        assert_eq!((summary.seq, summary.total), (24, 24 * (512 << 10)));

        // Each message is sent only after the previous echo arrived: buffering a whole
        // stream anywhere on the way would stall this.
        let echoes = c.ping_pong(20, 4096).await.unwrap();
        assert_eq!(echoes.len(), 20);
        assert!(echoes
            .iter()
            .enumerate()
            .all(|(i, m)| m.seq == i as u32 && m.server == "g1"));
    });
    // Trailers came through: the access log and metrics carry the backend's grpc-status.
    let log = wait_for("the access log", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(gw.env.path().join("access.log")).ok()?;
        (text.lines().count() >= 4).then_some(text)
    });
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["grpc_status"], 0, "{line}");
        assert_eq!(v["status"], 200, "{line}");
        assert_eq!(v["upstream_tls"], "TLSv1.3", "{line}");
    }
    let m = metrics(admin);
    assert_eq!(
        sample(
            &m,
            "pinion_grpc_responses_total",
            &[("listener", "https"), ("grpc_status", "0")]
        ),
        4.0
    );
}

#[test]
fn a_refused_key_is_unavailable_and_its_http2_connection_is_never_reused() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let impostor_key = Identity::self_signed(&["grpc.internal"]);
    let impostor = GrpcBackend::tls("impostor", &impostor_key);
    let env = Env::new();
    let yaml = one_pool(
        &env,
        &pool(
            "grpc",
            &[impostor.port],
            "    probe: false\n    retries: 0\n",
            &pinned(&key),
        ),
    );
    let gw = env.start(&yaml);
    block_on(async {
        let mut c = Client::new(channel(gw.port()).await);
        for _ in 0..3 {
            let s = c.unary(Msg::default(), None).await.unwrap_err();
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            assert!(s.message().contains("pinion: 502"), "{s:?}");
        }
    });
    assert_eq!(
        impostor.bytes(),
        0,
        "bytes reached the impostor after its handshake"
    );
    assert_eq!(impostor.calls(), 0);
    // Each call made its own connection: the refused one was neither pooled nor reused.
    // (Counted as TCP connections: the server may not see its side of a handshake complete
    // when the gateway drops the connection right after its own side did.)
    assert!(
        impostor.accepted() >= 3,
        "{} connections",
        impostor.accepted()
    );
    let line = gw.log_line(&["pool grpc", "not whitelisted"]);
    assert!(line.contains(&impostor_key.pin()), "{line}");
}

#[test]
fn grpc_timeout_shorter_than_the_pool_timeout_ends_the_call_with_deadline_exceeded() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let backend = GrpcBackend::tls("slow", &key);
    let env = Env::new();
    let yaml = one_pool(
        &env,
        &pool(
            "grpc",
            &[backend.port],
            "    probe: false\n    timeouts: {request_seconds: 30}\n",
            &pinned(&key),
        ),
    );
    let gw = env.start(&yaml);
    block_on(async {
        // A raw HTTP/2 client: tonic's channel would enforce grpc-timeout itself and race
        // the gateway's answer.
        let mut h2 = crate::harness::client::h2_client(gw.port()).await.unwrap();
        let slow = Msg {
            sleep_ms: 5000,
            ..Msg::default()
        };
        let body = pinion::grpc::frame(&prost::Message::encode_to_vec(&slow));
        let req = http::Request::builder()
            .method("POST")
            .uri("https://grpc.example.com/test.Echo/Unary")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "400m")
            .body(())
            .unwrap();
        let start = Instant::now();
        let (resp, mut send) = h2.send_request(req, false).unwrap();
        send.send_data(body, true).unwrap();
        let resp = resp.await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(resp.status(), 200);
        let headers = resp.headers();
        assert_eq!(
            headers["grpc-status"], "4",
            "DEADLINE_EXCEEDED: {headers:?}"
        );
        assert!(headers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("pinion:%20504"));
        assert!(resp.into_body().is_end_stream(), "a trailers-only response");
        assert!(
            elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(4),
            "{elapsed:?}"
        );
        // Without a deadline the pool's own (longer) timeout applies.
        let mut c = Client::new(channel(gw.port()).await);
        let quick = Msg {
            sleep_ms: 600,
            ..Msg::default()
        };
        assert_eq!(c.unary(quick, None).await.unwrap().server, "slow");
    });
}

#[test]
fn pinions_own_failures_reach_grpc_clients_as_grpc_statuses() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let backend = GrpcBackend::tls("g", &key);
    let env = Env::new();
    let dead = free_port();
    let yaml = format!(
        "access_log:\n  path: access.log\n{}pools:\n{}{}routes:\n  - name: grpc\n    paths: [\"/test.Echo/*\"]\n    hosts: [grpc.example.com]\n    pool: grpc\n  - name: dead\n    hosts: [dead.example.com]\n    pool: dead\n",
        env.listeners(),
        pool("grpc", &[backend.port], "    probe: false\n", &pinned(&key)),
        pool("dead", &[dead], "    probe: false\n    retries: 0\n", &pinned(&key)),
    );
    let gw = env.start(&yaml);
    block_on(async {
        // No route for this method: UNIMPLEMENTED.
        let mut grpc = tonic::client::Grpc::new(channel(gw.port()).await);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Msg, Msg>::default();
        let s = grpc
            .unary(
                tonic::Request::new(Msg::default()),
                "/other.Svc/Call".parse().unwrap(),
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
        // A server that refuses connections: UNAVAILABLE.
        let channel = channel_for(gw.port(), "https://dead.example.com").await;
        let s = Client::new(channel)
            .unary(Msg::default(), None)
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    });
    // The access log records the gRPC status pinion answered with.
    let log = wait_for("two access log lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(gw.env.path().join("access.log")).ok()?;
        (text.lines().count() >= 2).then_some(text)
    });
    let codes: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["grpc_status"].clone())
        .collect();
    assert_eq!(
        codes,
        vec![serde_json::json!(12), serde_json::json!(14)],
        "{log}"
    );
}

#[test]
fn http1_clients_are_served_by_the_same_http2_pool() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let backend = GrpcBackend::tls("h2only", &key);
    let env = Env::new();
    let yaml = one_pool(
        &env,
        &pool("grpc", &[backend.port], "    probe: false\n", &pinned(&key)),
    );
    let gw = env.start(&yaml);
    for path in ["/a", "/b?x=1"] {
        let r = get(gw.port(), "www.example.com", path);
        assert_eq!(r.status, 200, "{}", gw.logs());
        assert_eq!(
            r.body,
            format!("h2only {}\n", path.split('?').next().unwrap())
        );
    }
}

#[test]
fn auto_uses_http2_where_offered_and_http1_elsewhere() {
    let key = Identity::self_signed(&["api.internal"]);
    let h2 = GrpcBackend::tls("h2", &key);
    let h1 = Backend::https("h1", &key);
    let env = Env::new();
    let tls = format!(
        "      http2: auto\n      pins: [{{sha256: \"{}\"}}]\n",
        key.pin()
    );
    let yaml = format!(
        "{}pools:\n{}{}routes:\n  - name: h2\n    hosts: [h2.example.com]\n    pool: h2\n  - name: h1\n    pool: h1\n",
        env.listeners(),
        pool("h2", &[h2.port], "    probe: false\n", &tls),
        pool("h1", &[h1.port], "    probe: false\n", &tls),
    );
    let gw = env.start(&yaml);
    assert_eq!(get(gw.port(), "h2.example.com", "/x").body, "h2 /x\n");
    assert_eq!(get(gw.port(), "other.example.com", "/y").body, "h1 /y\n");
    assert_eq!(h1.requests().len(), 1);
}

#[test]
fn h2c_pools_speak_cleartext_http2() {
    let backend = GrpcBackend::h2c("plain");
    let env = Env::new();
    let yaml = one_pool(
        &env,
        &pool(
            "grpc",
            &[backend.port],
            "    probe: false\n    h2c: true\n",
            "",
        ),
    );
    let gw = env.start(&yaml);
    block_on(async {
        let mut c = Client::new(channel(gw.port()).await);
        let m = c
            .unary(
                Msg {
                    seq: 3,
                    ..Msg::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!((m.seq, m.server.as_str()), (3, "plain"));
    });
}

#[test]
fn grpc_health_probes_take_a_not_serving_server_out_with_the_same_pin_checks() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let other = Identity::self_signed(&["grpc.internal"]);
    let (a, b, impostor) = (
        GrpcBackend::tls("a", &key),
        GrpcBackend::tls("b", &key),
        GrpcBackend::tls("impostor", &other),
    );
    let env = Env::new();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:{admin}\n{}pools:\n{}routes:\n  - name: grpc\n    pool: grpc\n",
        env.listeners(),
        pool(
            "grpc",
            &[a.port, b.port, impostor.port],
            "    probe: {grpc_service: test.Echo, interval_seconds: 1, unhealthy_threshold: 1}\n",
            &pinned(&key)
        )
    );
    let gw = env.start(&yaml);
    b.set_health("test.Echo", false);
    let servers = wait_for(
        "b and the impostor out of rotation",
        Duration::from_secs(20),
        || {
            let status: serde_json::Value =
                serde_json::from_str(&admin_get(admin, "/status").body).ok()?;
            let servers = status["pools"][0]["servers"].as_array()?.clone();
            (servers[0]["healthy"] == true
                && servers[1]["healthy"] == false
                && servers[2]["healthy"] == false)
                .then_some(servers)
        },
    );
    let reason = |i: usize| servers[i]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason(1).contains("NOT_SERVING"), "{}", reason(1));
    assert!(reason(2).contains("not whitelisted"), "{}", reason(2));
    assert_eq!(impostor.bytes(), 0);
    block_on(async {
        let mut c = Client::new(channel(gw.port()).await);
        for _ in 0..6 {
            assert_eq!(c.unary(Msg::default(), None).await.unwrap().server, "a");
        }
    });
    b.set_health("test.Echo", true);
    wait_for("b back in rotation", Duration::from_secs(20), || {
        let m = metrics(admin);
        let server = format!("127.0.0.1:{}", b.port);
        let labels = [("pool", "grpc"), ("server", server.as_str())];
        (sample(&m, "pinion_server_healthy", &labels) == 1.0).then_some(())
    });
}

#[test]
fn a_backend_going_away_mid_load_fails_no_call() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let (a, b) = (GrpcBackend::tls("a", &key), GrpcBackend::tls("b", &key));
    let env = Env::new();
    let yaml = one_pool(
        &env,
        &pool(
            "grpc",
            &[a.port, b.port],
            "    probe: false\n",
            &pinned(&key),
        ),
    );
    let gw = env.start(&yaml);
    let port = gw.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ok, failed) = rt.block_on(async {
        let channel = channel(port).await;
        let mut tasks = Vec::new();
        for w in 0..8u32 {
            let mut c = Client::new(channel.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                for i in 0..150u32 {
                    let m = Msg {
                        seq: w * 1000 + i,
                        sleep_ms: 2,
                        ..Msg::default()
                    };
                    match c.unary(m, None).await {
                        Ok(r) if r.seq == w * 1000 + i => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (ok, failed)
            }));
        }
        // Mid-load, `a` sends GOAWAY and stops accepting: its calls in flight finish, new
        // ones must go to `b`.
        wait_for("calls on a", Duration::from_secs(10), || {
            (a.calls() > 100).then_some(())
        });
        a.goaway();
        let mut ok = 0;
        let mut failed = Vec::new();
        for t in tasks {
            let (o, f) = t.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    });
    assert!(
        failed.is_empty(),
        "{} failed: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        gw.logs()
    );
    assert_eq!(ok, 8 * 150);
    assert!(b.calls() > 0, "b took over");
}

#[test]
fn max_streams_per_connection_bounds_the_calls_sharing_a_backend_connection() {
    let key = Identity::self_signed(&["grpc.internal"]);
    let (narrow, wide) = (
        GrpcBackend::tls("narrow", &key),
        GrpcBackend::tls("wide", &key),
    );
    let env = Env::new();
    let yaml = format!(
        "{}pools:\n{}{}routes:\n  - name: narrow\n    hosts: [narrow.example.com]\n    pool: narrow\n  - name: wide\n    pool: wide\n",
        env.listeners(),
        pool(
            "narrow",
            &[narrow.port],
            "    probe: false\n    max_streams_per_connection: 2\n",
            &pinned(&key)
        ),
        pool("wide", &[wide.port], "    probe: false\n", &pinned(&key)),
    );
    let gw = env.start(&yaml);
    let port = gw.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for origin in ["https://narrow.example.com", "https://wide.example.com"] {
            let channel = channel_for(port, origin).await;
            let mut c = Client::new(channel.clone());
            c.unary(Msg::default(), None).await.unwrap();
            // Six calls that overlap (each takes a second at the backend), started 100 ms
            // apart: Pingora opens a new connection for a call that finds none with a free
            // stream, and a call arriving while another is taking a stream may miss one.
            let mut calls = Vec::new();
            for i in 0..6 {
                let mut c = Client::new(channel.clone());
                calls.push(tokio::spawn(async move {
                    let m = Msg {
                        seq: i,
                        sleep_ms: 1000,
                        ..Msg::default()
                    };
                    c.unary(m, None).await.map(|r| r.seq)
                }));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for (i, call) in calls.into_iter().enumerate() {
                assert_eq!(call.await.unwrap().unwrap(), i as u32);
            }
        }
    });
    // At most two streams per connection: six overlapping calls need at least three
    // connections (the warm-up's among them); the default (100) carries them on one (two if a
    // call on a loaded machine missed the connection while another took a stream).
    assert!(
        narrow.handshakes() >= 3,
        "{} connections",
        narrow.handshakes()
    );
    assert!(wide.handshakes() <= 2, "{} connections", wide.handshakes());
}
