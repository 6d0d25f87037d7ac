//! Forwarding of names outside the cluster zone (CoreDNS `forward` + `cache` plugins, in small): the
//! upstream transport over raw DNS messages (UDP, retried over TCP when truncated; upstreams tried in
//! order), a bound on queries in flight, and a TTL cache. The wire format is `server.rs`'s business:
//! here a message is bytes with an ID in its first two octets.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at once; past this, queries are refused (CoreDNS `max_concurrent`).
const MAX_IN_FLIGHT: usize = 512;
/// Largest response accepted over UDP.
const MAX_UDP: usize = 65535;

/// Why a forwarded query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers configured")]
    NoUpstreams,
    #[error("too many forwarded queries in flight")]
    Overloaded,
    #[error("no upstream answered: {0}")]
    Failed(String),
}

/// The upstream resolvers, in order of preference.
#[derive(Debug)]
pub struct Upstreams {
    addrs: Vec<SocketAddr>,
    in_flight: Semaphore,
}

impl Upstreams {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Upstreams { addrs, in_flight: Semaphore::new(MAX_IN_FLIGHT) }
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A slot for one forwarded query, or `Overloaded`.
    pub fn permit(&self) -> Result<SemaphorePermit<'_>, ForwardError> {
        self.in_flight.try_acquire().map_err(|_| ForwardError::Overloaded)
    }

    /// Send `query` (whose first two octets are its ID) to each upstream in turn until one answers.
    /// A truncated UDP answer is retried over TCP when `tcp_fallback` (the client asked over TCP);
    /// otherwise it is returned as it is, for the client to retry.
    pub async fn exchange(&self, query: &[u8], tcp_fallback: bool) -> Result<Vec<u8>, ForwardError> {
        if self.addrs.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let mut errors = Vec::new();
        for upstream in &self.addrs {
            let attempt = async {
                let reply = exchange_udp(*upstream, query).await?;
                if tcp_fallback && truncated(&reply) { exchange_tcp(*upstream, query).await } else { Ok(reply) }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) => errors.push(format!("{upstream}: {e}")),
                Err(_) => errors.push(format!("{upstream}: timed out")),
            }
        }
        Err(ForwardError::Failed(errors.join("; ")))
    }
}

fn id(msg: &[u8]) -> Option<[u8; 2]> {
    msg.get(..2).and_then(|b| b.try_into().ok())
}

/// The TC bit of a message header.
pub fn truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// A reply to `query`: same ID, QR set.
fn is_reply(query: &[u8], reply: &[u8]) -> bool {
    reply.len() >= 12 && id(reply) == id(query) && reply[2] & 0x80 != 0
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        // Anything that is not the reply (a late answer to someone else, garbage) is skipped.
        let n = socket.recv(&mut buf).await?;
        if is_reply(query, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let n = stream.read_u16().await?;
        let mut reply = vec![0u8; usize::from(n)];
        stream.read_exact(&mut reply).await?;
        if is_reply(query, &reply) {
            return Ok(reply);
        }
    }
}

/// A small TTL cache: entries live for their own TTL (capped), the oldest go first when full.
#[derive(Debug)]
pub struct Cache<K, V> {
    entries: Mutex<HashMap<K, Cached<V>>>,
    capacity: usize,
    max_ttl: Duration,
}

#[derive(Debug, Clone)]
struct Cached<V> {
    value: V,
    stored: Instant,
    expires: Instant,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize, max_ttl: Duration) -> Self {
        Cache { entries: Mutex::new(HashMap::new()), capacity, max_ttl }
    }

    /// The value and how long it has been cached, if it has not expired.
    pub fn get(&self, key: &K, now: Instant) -> Option<(V, Duration)> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some(c) if c.expires > now => Some((c.value.clone(), now.duration_since(c.stored))),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep `value` for `ttl` (at most the cache's cap); a zero TTL is not cached.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let ttl = ttl.min(self.max_ttl);
        if ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, c| c.expires > now);
            if entries.len() >= self.capacity {
                let oldest = entries.iter().min_by_key(|(_, c)| c.stored).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, Cached { value, stored: now, expires: now + ttl });
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_evicts() {
        let cache: Cache<&str, u32> = Cache::new(2, Duration::from_secs(30));
        let t0 = Instant::now();
        cache.insert("a", 1, Duration::from_secs(5), t0);
        cache.insert("zero", 9, Duration::ZERO, t0);
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(2)), Some((1, Duration::from_secs(2))));
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(5)), None);
        assert_eq!(cache.get(&"zero", t0), None);
        // Capped at the cache's maximum TTL.
        cache.insert("long", 2, Duration::from_secs(3600), t0);
        assert_eq!(cache.get(&"long", t0 + Duration::from_secs(31)), None);
        // Full: the oldest entry goes.
        cache.insert("b", 3, Duration::from_secs(10), t0);
        cache.insert("c", 4, Duration::from_secs(10), t0 + Duration::from_secs(1));
        cache.insert("d", 5, Duration::from_secs(10), t0 + Duration::from_secs(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"d", t0 + Duration::from_secs(2)).map(|v| v.0), Some(5));
    }

    #[test]
    fn header_bits() {
        let query = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut reply = query;
        reply[2] = 0x83;
        assert!(is_reply(&query, &reply) && truncated(&reply));
        reply[1] = 0x35;
        assert!(!is_reply(&query, &reply));
        assert!(!is_reply(&query, &[0x12]));
        assert!(!truncated(&[]));
    }

    #[tokio::test]
    async fn udp_then_tcp_when_truncated() {
        // A fake upstream: over UDP it answers truncated; over TCP in full.
        let any = "127.0.0.1:0".parse().expect("addr");
        let (udp, tcp) = crate::server::bind_pair(any).await.expect("a port free for UDP and TCP");
        let addr = udp.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x82;
                // Noise first: a reply with another ID is ignored.
                let mut noise = reply.clone();
                noise[0] ^= 0xff;
                let _ = udp.send_to(&noise, from).await;
                let _ = udp.send_to(&reply, from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let Ok(n) = s.read_u16().await else { continue };
                let mut q = vec![0u8; usize::from(n)];
                if s.read_exact(&mut q).await.is_err() {
                    continue;
                }
                q[2] |= 0x80;
                q.push(0xaa);
                let _ = s.write_all(&(q.len() as u16).to_be_bytes()).await;
                let _ = s.write_all(&q).await;
            }
        });
        let query = [0xbe, 0xef, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        let up = Upstreams::new(vec![addr]);
        let udp_reply = up.exchange(&query, false).await.expect("udp answer");
        assert!(truncated(&udp_reply));
        let tcp_reply = up.exchange(&query, true).await.expect("tcp answer");
        assert!(!truncated(&tcp_reply) && tcp_reply.last() == Some(&0xaa));
        assert!(matches!(Upstreams::new(vec![]).exchange(&query, false).await, Err(ForwardError::NoUpstreams)));
    }
}
