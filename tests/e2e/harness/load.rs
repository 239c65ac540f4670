//! A steady client load for upgrade and rotation tests: keep-alive HTTPS clients that count
//! answers, reconnect when the server closes an idle keep-alive connection (as HTTP clients do
//! for idempotent requests), and record everything else as a failure.

use super::client::Conn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// 200 responses.
    pub ok: usize,
    /// New connections after the server closed one.
    pub reconnects: usize,
    /// Anything else: other statuses, refused connections.
    pub failures: Vec<String>,
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    reconnects: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` keep-alive clients sending `GET path` to 127.0.0.1:`port`.
    pub fn start(port: u16, clients: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let reconnects = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, ok, reconnects, failures) = (
                    stop.clone(),
                    ok.clone(),
                    reconnects.clone(),
                    failures.clone(),
                );
                std::thread::spawn(move || {
                    let mut conn = Conn::tls(port);
                    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
                    while !stop.load(Ordering::SeqCst) {
                        match conn.try_send(&request) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                                if r.header("connection") == Some("close") {
                                    conn = Conn::tls(port);
                                }
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {}: {}", r.status, r.body)),
                            Err(_) => match Conn::try_tls(port) {
                                Ok(c) => {
                                    reconnects.fetch_add(1, Ordering::SeqCst);
                                    conn = c;
                                }
                                Err(e) => failures.lock().unwrap().push(format!("refused: {e}")),
                            },
                        }
                        if failures.lock().unwrap().len() > 20 {
                            return;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            reconnects,
            failures,
            clients,
        }
    }

    /// 200 responses so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the clients and reports.
    pub fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.join().unwrap();
        }
        Outcome {
            ok: self.ok.load(Ordering::SeqCst),
            reconnects: self.reconnects.load(Ordering::SeqCst),
            failures: std::mem::take(&mut *self.failures.lock().unwrap()),
        }
    }
}
