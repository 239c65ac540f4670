//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP on one port) whose answers the
//! test changes while pinion runs, named to pinion through `server.resolvers`.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The TTL of every record unless a test sets another: long, so a resolver that cached answers
/// for their TTL would never see a change during a test; pinion must ask again every
/// `resolve_seconds`.
const TTL: u32 = 300;

#[derive(Default)]
struct Zone {
    /// Lower-case names without the final dot, and their addresses.
    records: HashMap<String, Vec<IpAddr>>,
    /// While set, queries are read and dropped: a server that stopped answering.
    silent: bool,
    /// The TTL of every record (0: [`TTL`]).
    ttl: u32,
}

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        // UDP and TCP on the same port: take a UDP port, then the same TCP port (retry if taken).
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (z, s) = (zone.clone(), stop.clone());
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&z, &buf[..n]) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        });
        let (z, s) = (zone.clone(), stop.clone());
        let tcp_thread = std::thread::spawn(move || {
            for conn in tcp.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let z = z.clone();
                std::thread::spawn(move || serve_tcp(&mut conn, &z));
            }
        });
        DnsServer {
            addr,
            zone,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// From now on, `name` has exactly these addresses (none: the name does not exist).
    pub fn set(&self, name: &str, addrs: &[&str]) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.zone
            .lock()
            .unwrap()
            .records
            .insert(name.to_ascii_lowercase(), addrs);
    }

    /// The TTL of every record from now on.
    pub fn set_ttl(&self, ttl: u32) {
        self.zone.lock().unwrap().ttl = ttl;
    }

    /// Stops answering anything (`true`), or answers again (`false`).
    pub fn silence(&self, silent: bool) {
        self.zone.lock().unwrap().silent = silent;
    }

    /// `  resolvers: ["127.0.0.1:PORT"]`, a line of the `server:` section.
    pub fn resolvers_line(&self) -> String {
        format!("  resolvers: [\"{}\"]\n", self.addr)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(conn: &mut TcpStream, zone: &Mutex<Zone>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        let Some(reply) = answer(zone, &query) else {
            continue;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if conn.write_all(&framed).is_err() {
            return;
        }
    }
}

/// The authoritative answer to one query; `None` while silent or for what does not parse.
fn answer(zone: &Mutex<Zone>, query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let zone = zone.lock().unwrap();
    if zone.silent {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired());
    let mut code = ResponseCode::NoError;
    for q in query.queries() {
        reply.add_query(q.clone());
        let name = q
            .name()
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let Some(addrs) = zone.records.get(&name).filter(|a| !a.is_empty()) else {
            code = ResponseCode::NXDomain;
            continue;
        };
        for ip in addrs {
            let rdata = match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            let owner = Name::from_ascii(format!("{name}.")).ok()?;
            let ttl = if zone.ttl == 0 { TTL } else { zone.ttl };
            reply.add_answer(Record::from_rdata(owner, ttl, rdata));
        }
    }
    reply.set_response_code(code);
    reply.to_vec().ok()
}
