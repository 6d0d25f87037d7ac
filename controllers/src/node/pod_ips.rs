//! Pod IPs of the node: one address per pod from the pod CIDR, or the one its
//! `kplane.dev/pod-ip` annotation pins (CNI `host-local` IPAM, `plugins/ipam/host-local/backend/allocator`:
//! the gateway `.1` and the network/broadcast addresses are never handed out; allocation goes
//! round-robin after the last address given, so a released address is not reused at once).
//!
//! Nothing is stored: the agent rebuilds the allocations from the pods at start.

use std::collections::HashMap;
use std::net::IpAddr;

/// The annotation that pins a pod's IP.
pub const POD_IP_ANNOTATION: &str = "kplane.dev/pod-ip";

/// A CIDR, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u128,
    bits: u8,
    v4: bool,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let (v4, max) = (addr.is_ipv4(), if addr.is_ipv4() { 32 } else { 128 });
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        let host_bits = u32::from(max - prefix);
        let mask = if host_bits >= 128 { 0 } else { !((1u128 << host_bits) - 1) };
        Ok(Self { base: to_u128(addr) & mask, bits: max - prefix, v4 })
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Cidr {
    fn addr(&self, offset: u128) -> IpAddr {
        let n = self.base + offset;
        if self.v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) }
    }

    /// Whether `ip` lies in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.v4 && (self.bits >= 128 || (to_u128(ip) >> self.bits) == (self.base >> self.bits))
    }

    /// The offsets handed out: from `.2` (after the gateway) to the last before broadcast.
    fn usable(&self) -> (u128, u128) {
        let size = if self.bits >= 128 { u128::MAX } else { 1u128 << self.bits };
        let last = if self.v4 { size.saturating_sub(2) } else { size.saturating_sub(1) };
        (2, last)
    }

    /// The network, as written (`127.244.0.0/16`).
    pub fn network(&self) -> String {
        let prefix = if self.v4 { 32 - self.bits } else { 128 - self.bits };
        format!("{}/{prefix}", self.addr(0))
    }
}

/// Why a pod gets no IP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("annotation {POD_IP_ANNOTATION}: {value:?} is not a valid IP address")]
    BadPin { value: String },
    #[error("annotation {POD_IP_ANNOTATION}: {ip} cannot be a pod IP ({why})")]
    Unusable { ip: IpAddr, why: &'static str },
    #[error("IP {ip} is already in use by pod {holder}")]
    InUse { ip: IpAddr, holder: String },
    #[error("no IP addresses available in range set: {range}")]
    Exhausted { range: String },
}

/// Who holds an address: the pod's UID and, for messages, `namespace/name`.
#[derive(Debug, Clone)]
struct Holder {
    uid: String,
    name: String,
}

/// The node's pod IPs.
#[derive(Debug)]
pub struct PodIps {
    cidr: Cidr,
    by_ip: HashMap<IpAddr, Holder>,
    by_uid: HashMap<String, IpAddr>,
    /// Offset of the address last handed out (round-robin cursor).
    last: u128,
}

impl PodIps {
    pub fn new(cidr: Cidr) -> Self {
        let (first, _) = cidr.usable();
        Self { cidr, by_ip: HashMap::new(), by_uid: HashMap::new(), last: first - 1 }
    }

    pub fn cidr(&self) -> &Cidr {
        &self.cidr
    }

    /// The IP a pod holds.
    pub fn get(&self, uid: &str) -> Option<IpAddr> {
        self.by_uid.get(uid).copied()
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// The pod's IP: the one it holds, else the pinned one (`pin`, the annotation's value), else
    /// the next free one of the range.
    pub fn assign(&mut self, uid: &str, name: &str, pin: Option<&str>) -> Result<IpAddr, IpError> {
        if let Some(ip) = self.get(uid) {
            return Ok(ip);
        }
        let ip = match pin {
            Some(value) => pinned(value)?,
            None => self.next_free()?,
        };
        self.hold(uid, name, ip)?;
        Ok(ip)
    }

    /// Records that `uid` holds `ip` (a pod found with it at start, or a fresh assignment).
    pub fn hold(&mut self, uid: &str, name: &str, ip: IpAddr) -> Result<(), IpError> {
        match self.by_ip.get(&ip) {
            Some(h) if h.uid == uid => return Ok(()),
            Some(h) => return Err(IpError::InUse { ip, holder: h.name.clone() }),
            None => {}
        }
        if let Some(old) = self.by_uid.insert(uid.to_string(), ip) {
            self.by_ip.remove(&old);
        }
        self.by_ip.insert(ip, Holder { uid: uid.to_string(), name: name.to_string() });
        if self.cidr.contains(ip) {
            self.last = to_u128(ip) - self.cidr.base;
        }
        Ok(())
    }

    /// Gives back the pod's IP; returns it.
    pub fn release(&mut self, uid: &str) -> Option<IpAddr> {
        let ip = self.by_uid.remove(uid)?;
        self.by_ip.remove(&ip);
        Some(ip)
    }

    fn next_free(&mut self) -> Result<IpAddr, IpError> {
        let (first, last) = self.cidr.usable();
        if last < first {
            return Err(IpError::Exhausted { range: self.cidr.network() });
        }
        let span = last - first + 1;
        // Scan at most the whole range once, starting after the cursor; big ranges are never full
        // in practice, so this ends within a few steps.
        let start = if self.last >= last || self.last < first { first } else { self.last + 1 };
        let tries = span.min(self.by_ip.len() as u128 + 1);
        for i in 0..tries {
            let offset = first + (start - first + i) % span;
            let ip = self.cidr.addr(offset);
            if !self.by_ip.contains_key(&ip) {
                return Ok(ip);
            }
        }
        Err(IpError::Exhausted { range: self.cidr.network() })
    }
}

/// A pinned address must be a unicast IP a process can bind.
fn pinned(value: &str) -> Result<IpAddr, IpError> {
    let ip: IpAddr = value.trim().parse().map_err(|_| IpError::BadPin { value: value.to_string() })?;
    let why = if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if matches!(ip, IpAddr::V4(a) if a.is_broadcast()) {
        Some("broadcast")
    } else {
        None
    };
    match why {
        Some(why) => Err(IpError::Unusable { ip, why }),
        None => Ok(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(cidr: &str) -> PodIps {
        PodIps::new(cidr.parse().expect("cidr"))
    }

    #[test]
    fn hands_out_from_dot_two_round_robin_and_never_twice() {
        let mut p = ips("10.1.0.0/29"); // usable .2 .. .6
        let got: Vec<String> =
            (0..5).map(|i| p.assign(&format!("u{i}"), "p", None).expect("free").to_string()).collect();
        assert_eq!(got, ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]);
        assert_eq!(p.assign("u5", "p", None), Err(IpError::Exhausted { range: "10.1.0.0/29".into() }));
        assert_eq!(p.release("u1").map(|i| i.to_string()).as_deref(), Some("10.1.0.3"));
        assert_eq!(p.assign("u5", "p", None).map(|i| i.to_string()).as_deref(), Ok("10.1.0.3"));
        // The same pod asks again: the same address.
        assert_eq!(p.assign("u5", "p", None).map(|i| i.to_string()).as_deref(), Ok("10.1.0.3"));
        // Round robin: after a release the cursor moves on rather than reusing at once.
        let mut p = ips("10.1.0.0/24");
        let a = p.assign("a", "p", None).expect("free");
        p.release("a");
        let b = p.assign("b", "p", None).expect("free");
        assert_ne!(a, b);
    }

    #[test]
    fn pins_are_checked_and_exclusive() {
        let mut p = ips("127.244.0.0/16");
        assert_eq!(p.assign("a", "ns/a", Some("127.0.0.77")).map(|i| i.to_string()).as_deref(), Ok("127.0.0.77"));
        assert_eq!(
            p.assign("b", "ns/b", Some("127.0.0.77")),
            Err(IpError::InUse { ip: "127.0.0.77".parse().expect("ip"), holder: "ns/a".into() })
        );
        assert!(matches!(p.assign("c", "ns/c", Some("nope")), Err(IpError::BadPin { .. })));
        assert!(matches!(p.assign("c", "ns/c", Some("0.0.0.0")), Err(IpError::Unusable { .. })));
        assert!(matches!(p.assign("c", "ns/c", Some("224.0.0.1")), Err(IpError::Unusable { .. })));
        // A pin inside the range is not handed to anyone else.
        p.assign("d", "ns/d", Some("127.244.0.2")).expect("free");
        assert_eq!(p.assign("e", "ns/e", None).map(|i| i.to_string()).as_deref(), Ok("127.244.0.3"));
        assert_eq!(p.len(), 3);
        p.release("a");
        assert!(p.assign("b", "ns/b", Some("127.0.0.77")).is_ok());
    }

    #[test]
    fn ipv6_ranges() {
        let mut p = ips("fd00:10:244::/120");
        assert_eq!(p.assign("a", "p", None).map(|i| i.to_string()).as_deref(), Ok("fd00:10:244::2"));
        assert!(p.cidr().contains("fd00:10:244::ff".parse().expect("ip")));
        assert!(!p.cidr().contains("fd00:10:245::1".parse().expect("ip")));
        assert_eq!(p.cidr().network(), "fd00:10:244::/120");
    }
}
