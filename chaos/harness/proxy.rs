//! A fault-injecting TCP proxy in front of one broker's client listener (the broker advertises
//! the proxy's port; brokers talk to each other on their own listener). It reads the Kafka
//! protocol's framing — a 4-byte size, then a request header (api key, version, correlation
//! id) or a response header (correlation id) — so it can:
//! - **blackhole**: forward nothing in either direction, and open no upstream connection,
//!   until lifted (a link gone down: no reset, the bytes wait as they would in retransmits);
//! - **lose a commit's response**: drop, or hold for a while, the response to the next `n`
//!   EndTxn requests (api key 26) that commit, so the client times out while the broker has
//!   committed (KAFKA-17754's shape).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

const END_TXN: i16 = 26;

/// What happens to an armed EndTxn response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Drop,
    Delay(Duration),
}

#[derive(Default)]
struct Shared {
    blackhole: AtomicBool,
    /// EndTxn commit responses still to drop or delay, and how.
    armed: Mutex<Vec<Fate>>,
    /// Responses dropped or delayed so far.
    pub lost: AtomicU64,
    /// EndTxn commits seen.
    pub commits: AtomicU64,
}

pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream`.
    pub fn start(port: u16, upstream: u16) -> Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    serve(conn, upstream, s).ok();
                });
            }
        });
        Ok(Proxy { shared })
    }

    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// The next EndTxn commit's response meets `fate`.
    pub fn arm(&self, fate: Fate) {
        if let Ok(mut a) = self.shared.armed.lock() {
            a.push(fate);
        }
    }

    /// Forgets the fates not yet met.
    pub fn disarm(&self) {
        if let Ok(mut a) = self.shared.armed.lock() {
            a.clear();
        }
    }

    #[cfg(test)]
    pub fn armed(&self) -> usize {
        self.shared.armed.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::SeqCst)
    }

    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::SeqCst)
    }
}

fn wait_open(s: &Shared) {
    while s.blackhole.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Correlation ids of this connection's armed EndTxn requests, with their fate.
type Marked = Arc<Mutex<HashMap<i32, Fate>>>;

fn serve(client: TcpStream, upstream: u16, s: Arc<Shared>) -> Result<()> {
    wait_open(&s);
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    let marked: Marked = Arc::default();
    let (c2, s2, s3, sh2, m2) = (
        client.try_clone()?,
        server.try_clone()?,
        server.try_clone()?,
        s.clone(),
        marked.clone(),
    );
    let up = std::thread::spawn(move || {
        requests(c2, s2, &sh2, &m2).ok();
        // the client is gone (a killed daemon): end the broker's side too, or its reader
        // waits out the broker's idle timeout holding both sockets
        s3.shutdown(Shutdown::Both).ok();
    });
    responses(server.try_clone()?, client.try_clone()?, &s, &marked).ok();
    client.shutdown(Shutdown::Both).ok();
    server.shutdown(Shutdown::Both).ok();
    up.join().ok();
    Ok(())
}

fn frame(from: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    from.read_exact(&mut size)?;
    let n = i32::from_be_bytes(size).max(0) as usize;
    let mut buf = vec![0u8; 4 + n];
    buf[..4].copy_from_slice(&size);
    from.read_exact(&mut buf[4..])?;
    Ok(buf)
}

/// Client to broker: marks EndTxn commits while a fate is armed.
fn requests(mut from: TcpStream, mut to: TcpStream, s: &Shared, marked: &Marked) -> Result<()> {
    loop {
        let buf = frame(&mut from)?;
        wait_open(s);
        if let Some((END_TXN, corr, true)) = end_txn(&buf) {
            s.commits.fetch_add(1, Ordering::SeqCst);
            let fate = s.armed.lock().ok().and_then(|mut a| {
                if a.is_empty() {
                    None
                } else {
                    Some(a.remove(0))
                }
            });
            if let Some(f) = fate
                && let Ok(mut m) = marked.lock()
            {
                m.insert(corr, f);
            }
        }
        to.write_all(&buf)?;
    }
}

/// Broker to client: a marked response is dropped or held.
fn responses(mut from: TcpStream, to: TcpStream, s: &Shared, marked: &Marked) -> Result<()> {
    let to = Arc::new(Mutex::new(to));
    loop {
        let buf = frame(&mut from)?;
        wait_open(s);
        let corr = buf
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let fate = corr.and_then(|c| marked.lock().ok().and_then(|mut m| m.remove(&c)));
        match fate {
            Some(Fate::Drop) => {
                s.lost.fetch_add(1, Ordering::SeqCst);
            }
            Some(Fate::Delay(d)) => {
                s.lost.fetch_add(1, Ordering::SeqCst);
                let to = to.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    if let Ok(mut t) = to.lock() {
                        t.write_all(&buf).ok();
                    }
                });
            }
            None => {
                let mut t = to.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                t.write_all(&buf)?;
            }
        }
    }
}

/// (api key, correlation id, commits) of an EndTxn request; `None` for other requests. The
/// `committed` flag follows the header (client id; tagged fields from version 3, the flexible
/// ones), the transactional id, the producer id and epoch. An EndTxn whose flag cannot be
/// read counts as a commit.
fn end_txn(buf: &[u8]) -> Option<(i16, i32, bool)> {
    let b = buf.get(4..)?;
    let api_key = i16::from_be_bytes([*b.first()?, *b.get(1)?]);
    if api_key != END_TXN {
        return None;
    }
    let version = i16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    let corr = i32::from_be_bytes([*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?]);
    let committed = committed_flag(b, version).unwrap_or(true);
    Some((api_key, corr, committed))
}

fn committed_flag(b: &[u8], version: i16) -> Option<bool> {
    let mut at = 8;
    let client_id = i16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
    at += 2 + client_id.max(0) as usize;
    let flexible = version >= 3;
    if flexible {
        at = skip_tagged(b, at)?;
        let (len, n) = uvarint(b, at)?;
        at += n + (len as usize).saturating_sub(1);
    } else {
        let len = i16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
        at += 2 + len.max(0) as usize;
    }
    at += 8 + 2; // producer id, epoch
    Some(*b.get(at)? != 0)
}

fn skip_tagged(b: &[u8], mut at: usize) -> Option<usize> {
    let (count, n) = uvarint(b, at)?;
    at += n;
    for _ in 0..count {
        let (_, n) = uvarint(b, at)?;
        at += n;
        let (size, n) = uvarint(b, at)?;
        at += n + size as usize;
    }
    Some(at)
}

fn uvarint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(at + i)?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: i16, committed: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&END_TXN.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&77i32.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(b"abc");
        if version >= 3 {
            b.push(0); // no tagged fields
            b.push(4); // compact string "txn": length + 1
            b.extend_from_slice(b"txn");
        } else {
            b.extend_from_slice(&3i16.to_be_bytes());
            b.extend_from_slice(b"txn");
        }
        b.extend_from_slice(&42i64.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.push(u8::from(committed));
        let mut framed = (b.len() as i32).to_be_bytes().to_vec();
        framed.extend(b);
        framed
    }

    #[test]
    fn reads_the_committed_flag_in_both_header_versions() {
        for v in [0, 2, 3, 4] {
            assert_eq!(
                end_txn(&request(v, true)),
                Some((END_TXN, 77, true)),
                "v{v}"
            );
            assert_eq!(
                end_txn(&request(v, false)),
                Some((END_TXN, 77, false)),
                "v{v}"
            );
        }
        let mut other = request(3, true);
        other[5] = 0; // api key 0 (Produce)
        assert_eq!(end_txn(&other), None);
    }

    #[test]
    fn drops_an_armed_commit_response_and_passes_the_rest() {
        // an echo "broker": answers each frame with the correlation id and a body
        let broker = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = broker.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in broker.incoming().flatten() {
                std::thread::spawn(move || {
                    while let Ok(f) = frame(&mut c) {
                        let mut resp = 8i32.to_be_bytes().to_vec();
                        resp.extend_from_slice(&f[8..12]);
                        resp.extend_from_slice(b"okay");
                        if c.write_all(&resp).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let proxy = Proxy::start(port, upstream).unwrap();
        proxy.arm(Fate::Drop);
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.write_all(&request(3, true)).unwrap();
        assert!(frame(&mut c).is_err(), "the armed response came through");
        assert_eq!((proxy.lost(), proxy.armed()), (1, 0));
        c.write_all(&request(3, true)).unwrap();
        let got = frame(&mut c).unwrap();
        assert_eq!(&got[4..8], &77i32.to_be_bytes());
    }
}
