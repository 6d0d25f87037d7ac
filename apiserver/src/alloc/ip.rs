//! ClusterIP allocation over one CIDR: upstream's `pkg/registry/core/service/ipallocator/bitmap.go`
//! (`Range`, `calculateRangeOffset`), with `k8s.io/utils/net` `RangeSize` for the range math.
//!
//! Offset 0 is the network address + 1. IPv4 excludes the network and broadcast addresses
//! (`size - 2` usable); IPv6 excludes only the network (subnet-router anycast) address and caps
//! the range at 65536 addresses (`min(size, 65536) - 1` usable, so a /64 hands out `::1`–`::ffff`).
//! The static band is `min(max(16, size/16), 256)` offsets, 0 when `size <= 16`, where `size` is
//! the uncapped CIDR size.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::{AllocError, AllocationBitmap, range_offset};

/// Largest IPv4 range kept: 20 host bits, as kube-apiserver's `--service-cluster-ip-range` check.
const MAX_V4_HOST_BITS: u8 = 20;
/// IPv6 ranges are capped to this many addresses (upstream: the bitmap stays 64k).
const V6_CAP: u128 = 1 << 16;

/// An address family, named as in `spec.ipFamilies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl IpFamily {
    /// The API spelling: `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// The family named by `IPv4` or `IPv6`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }

    /// The family of an address (IPv4-mapped IPv6 addresses count as IPv4, as in Go).
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    fn bits(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network in CIDR notation, stored masked (`10.0.0.5/24` is `10.0.0.0/24`, as Go's
/// `net.ParseCIDR` returns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr/prefix`; errors when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, AllocError> {
        let family = IpFamily::of(addr);
        let addr = addr.to_canonical();
        if prefix > family.bits() {
            return Err(AllocError::InvalidCidr(format!("{addr}/{prefix}")));
        }
        let network = from_u128(family, to_u128(addr) & !host_mask(family.bits() - prefix));
        Ok(Self { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.network)
    }

    /// Whether `ip` lies in the network (any address, including network and broadcast).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        IpFamily::of(ip) == self.family() && to_u128(ip) & !host_mask(self.host_bits()) == to_u128(self.network)
    }

    fn host_bits(&self) -> u8 {
        self.family().bits() - self.prefix
    }

    /// `netutils.RangeSize`: the number of addresses; 0 for 31 or more host bits (IPv4) or 127
    /// or more (IPv6), and `i64::MAX` from 63 host bits up.
    fn range_size(&self) -> u128 {
        let host = self.host_bits();
        if host >= self.family().bits() - 1 {
            0
        } else if host >= 63 {
            i64::MAX as u128
        } else {
            1 << host
        }
    }
}

impl FromStr for Cidr {
    type Err = AllocError;

    /// Parses `10.96.0.0/12` or `fd00::/108`; a host address with a prefix is masked.
    fn from_str(s: &str) -> Result<Self, AllocError> {
        let invalid = || AllocError::InvalidCidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        Cidr::new(addr, prefix).map_err(|_| invalid())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Allocates addresses of one CIDR (`ipallocator.Range`).
///
/// ```
/// use kplane_apiserver::alloc::{AllocError, IpAllocator};
///
/// let mut r = IpAllocator::parse("10.0.0.0/24").unwrap();
/// assert_eq!((r.free(), r.static_band()), (254, 16)); // static .1-.16, dynamic .17-.254
/// let dns = r.nth(10).unwrap();
/// r.allocate(dns).unwrap();
/// assert_eq!(r.allocate(dns), Err(AllocError::IpAllocated));
/// assert!(r.release(dns));
/// ```
#[derive(Debug, Clone)]
pub struct IpAllocator {
    cidr: Cidr,
    /// The address of offset 0: network + 1.
    base: u128,
    bitmap: AllocationBitmap,
}

impl IpAllocator {
    /// `NewInMemory(cidr)`. Errors for IPv4 ranges wider than /12 ([`AllocError::RangeTooLarge`]).
    pub fn new(cidr: Cidr) -> Result<Self, AllocError> {
        let family = cidr.family();
        if family == IpFamily::V4 && cidr.host_bits() > MAX_V4_HOST_BITS {
            return Err(AllocError::RangeTooLarge { bits: 32, min_prefix: 32 - MAX_V4_HOST_BITS });
        }
        let size = cidr.range_size();
        let max = match family {
            // The broadcast address, then the network address.
            IpFamily::V4 => size.saturating_sub(2),
            IpFamily::V6 => size.min(V6_CAP).saturating_sub(1),
        };
        let max = usize::try_from(max).expect("bounded by 2^20");
        let offset = range_offset(size, 16, 16, 256);
        Ok(Self { cidr, base: to_u128(cidr.network) + 1, bitmap: AllocationBitmap::new(max, offset) })
    }

    /// Parses the CIDR and builds the allocator.
    pub fn parse(cidr: &str) -> Result<Self, AllocError> {
        Self::new(cidr.parse()?)
    }

    /// `NewFromSnapshot`: an allocator for `range` holding the addresses of `data`
    /// (a `RangeAllocation`'s fields).
    pub fn from_snapshot(range: &str, data: &[u8]) -> Result<Self, AllocError> {
        let mut r = Self::parse(range)?;
        r.bitmap.load_bytes(data);
        Ok(r)
    }

    /// The CIDR covered.
    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The family of the CIDR.
    pub fn family(&self) -> IpFamily {
        self.cidr.family()
    }

    /// Number of allocatable addresses (upstream's `max`).
    pub fn size(&self) -> usize {
        self.bitmap.max()
    }

    /// Number of addresses, from network + 1 up, in the static band.
    pub fn static_band(&self) -> usize {
        self.bitmap.offset()
    }

    /// Count of free addresses.
    pub fn free(&self) -> usize {
        self.bitmap.free()
    }

    /// Count of allocated addresses.
    pub fn used(&self) -> usize {
        self.bitmap.used()
    }

    /// Whether `ip` is an allocatable address of this range (in the CIDR, not the network or
    /// IPv4 broadcast address, within the IPv6 cap).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether `ip` is allocated (false when not [`contains`](Self::contains)).
    pub fn has(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|at| self.bitmap.has(at))
    }

    /// The network address + `n`, when that is allocatable: `nth(1)` is the `kubernetes`
    /// Service's address (`10.96.0.1`), `nth(10)` kube-dns's (`10.96.0.10`).
    pub fn nth(&self, n: usize) -> Option<IpAddr> {
        (n >= 1 && n <= self.size()).then(|| self.ip_at(n - 1))
    }

    /// `Allocate`: reserves `ip`. [`AllocError::IpNotInRange`] when it is not allocatable here,
    /// [`AllocError::IpAllocated`] when taken.
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        let Some(at) = self.offset_of(ip) else {
            return Err(AllocError::IpNotInRange { ip: ip.to_canonical(), range: self.cidr.to_string() });
        };
        if self.bitmap.allocate(at) { Ok(()) } else { Err(AllocError::IpAllocated) }
    }

    /// `AllocateNext`: a random free address, from the dynamic band while it lasts;
    /// [`AllocError::Full`] when none is left.
    pub fn allocate_next(&mut self) -> Result<IpAddr, AllocError> {
        let at = self.bitmap.allocate_next().ok_or(AllocError::Full)?;
        Ok(self.ip_at(at))
    }

    /// `Release`: frees `ip`. Releasing a free or foreign address is a no-op; returns whether
    /// anything was released.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|at| self.bitmap.release(at))
    }

    /// `ForEach`: the allocated addresses, ascending.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.bitmap.iter().map(|at| self.ip_at(at))
    }

    /// `Snapshot`: the `RangeAllocation` `range` (the CIDR) and `data` (upstream's bitmap bytes).
    pub fn snapshot(&self) -> (String, Vec<u8>) {
        (self.cidr.to_string(), self.bitmap.to_bytes())
    }

    /// `Restore`: replaces the allocations with a snapshot's; [`AllocError::MismatchedNetwork`]
    /// when it was taken of another CIDR.
    pub fn restore(&mut self, range: &str, data: &[u8]) -> Result<(), AllocError> {
        if range.parse::<Cidr>()? != self.cidr {
            return Err(AllocError::MismatchedNetwork);
        }
        self.bitmap.load_bytes(data);
        Ok(())
    }

    /// `contains`: the offset of `ip`, when allocatable.
    fn offset_of(&self, ip: IpAddr) -> Option<usize> {
        let ip = ip.to_canonical();
        if !self.cidr.contains(ip) {
            return None;
        }
        let at = usize::try_from(to_u128(ip).checked_sub(self.base)?).ok()?;
        (at < self.size()).then_some(at)
    }

    fn ip_at(&self, at: usize) -> IpAddr {
        from_u128(self.family(), self.base + at as u128)
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: IpFamily, v: u128) -> IpAddr {
    match family {
        // Callers stay inside a v4 CIDR, so the value fits.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The low `host` bits set.
fn host_mask(host: u8) -> u128 {
    if host >= 128 { u128::MAX } else { (1u128 << host) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use std::collections::HashSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn range(cidr: &str) -> IpAllocator {
        IpAllocator::parse(cidr).expect("test CIDR")
    }

    /// `Test_calculateRangeOffset` (ipallocator/bitmap_test.go).
    #[test]
    fn range_offset_table() {
        let cases = [
            ("192.168.1.1/32", 0),
            ("fd00::1/128", 0),
            ("192.168.1.1/30", 0),
            ("fd00::1/126", 0),
            ("192.168.1.1/28", 0),
            ("192.168.1.1/27", 16),
            ("fd00::1/124", 0),
            ("fd00::1/122", 16),
            ("192.168.1.1/22", 64),
            ("fd00::1/118", 64),
            ("192.168.1.1/8", 256),
            ("fd00::1/12", 256),
            ("10.96.0.0/12", 256),
            ("10.0.0.0/16", 256),
            ("10.0.0.0/24", 16),
            ("fd00::/112", 256),
            ("fd00::/64", 256),
        ];
        for (cidr, want) in cases {
            let c: Cidr = cidr.parse().expect(cidr);
            assert_eq!(range_offset(c.range_size(), 16, 16, 256), want, "{cidr}");
        }
    }

    /// Usable size, static band, first and last allocatable address.
    #[test]
    fn range_math() {
        let cases = [
            ("10.0.0.0/24", IpFamily::V4, 254, 16, "10.0.0.1", "10.0.0.254"),
            ("10.0.0.0/16", IpFamily::V4, 65534, 256, "10.0.0.1", "10.0.255.254"),
            ("127.96.0.0/12", IpFamily::V4, 1048574, 256, "127.96.0.1", "127.111.255.254"),
            ("10.0.0.0/15", IpFamily::V4, 131070, 256, "10.0.0.1", "10.1.255.254"),
            ("10.0.0.0/25", IpFamily::V4, 126, 16, "10.0.0.1", "10.0.0.126"),
            ("10.0.0.0/27", IpFamily::V4, 30, 16, "10.0.0.1", "10.0.0.30"),
            ("10.0.0.0/28", IpFamily::V4, 14, 0, "10.0.0.1", "10.0.0.14"),
            ("192.168.1.240/30", IpFamily::V4, 2, 0, "192.168.1.241", "192.168.1.242"),
            ("2001:db8::/112", IpFamily::V6, 65535, 256, "2001:db8::1", "2001:db8::ffff"),
            ("2001:db8::/120", IpFamily::V6, 255, 16, "2001:db8::1", "2001:db8::ff"),
            ("2001:db8::/64", IpFamily::V6, 65535, 256, "2001:db8::1", "2001:db8::ffff"),
            ("2001:db8:1::/48", IpFamily::V6, 65535, 256, "2001:db8:1::1", "2001:db8:1::ffff"),
            ("2001:db8::/126", IpFamily::V6, 3, 0, "2001:db8::1", "2001:db8::3"),
            ("2001:db8::/127", IpFamily::V6, 1, 0, "2001:db8::1", "2001:db8::1"),
        ];
        for (cidr, family, size, band, first, last) in cases {
            let r = range(cidr);
            assert_eq!((r.family(), r.size(), r.free(), r.static_band()), (family, size, size, band), "{cidr}");
            assert_eq!((r.nth(1), r.nth(size)), (Some(ip(first)), Some(ip(last))), "{cidr}");
            assert_eq!((r.nth(0), r.nth(size + 1)), (None, None), "{cidr}");
            assert_eq!(r.cidr().to_string(), cidr);
        }
        // /31 and /32 (IPv4), /128 (IPv6): nothing to hand out.
        for cidr in ["10.0.0.0/31", "10.0.0.1/32", "fd00::1/128"] {
            let mut r = range(cidr);
            assert_eq!((r.size(), r.free(), r.nth(1)), (0, 0, None), "{cidr}");
            assert_eq!(r.allocate_next(), Err(AllocError::Full), "{cidr}");
        }
    }

    #[test]
    fn parse_cidr() {
        let c: Cidr = "10.0.0.5/24".parse().expect("masked");
        assert_eq!((c.to_string(), c.prefix(), c.network()), ("10.0.0.0/24".into(), 24, ip("10.0.0.0")));
        assert_eq!("FD00::7/64".parse::<Cidr>().map(|c| c.to_string()), Ok("fd00::/64".into()));
        assert!(c.contains(ip("10.0.0.255")) && !c.contains(ip("10.0.1.0")) && !c.contains(ip("::a00:1")));
        assert!(c.contains(ip("::ffff:10.0.0.9")), "IPv4-mapped counts as IPv4, as in Go");
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "fd00::/129", "x/8", "10.0.0/8", "/8"] {
            assert_eq!(bad.parse::<Cidr>(), Err(AllocError::InvalidCidr(bad.into())), "{bad}");
        }
        assert_eq!(
            IpAllocator::parse("10.0.0.0/11").map(|_| ()),
            Err(AllocError::RangeTooLarge { bits: 32, min_prefix: 12 })
        );
        assert_eq!(
            AllocError::RangeTooLarge { bits: 32, min_prefix: 12 }.to_string(),
            "specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12"
        );
    }

    /// `TestAllocate` (ipallocator/bitmap_test.go): fill, release one, out of range, taken.
    #[test]
    fn allocate_table() {
        struct Case {
            cidr: &'static str,
            family: IpFamily,
            free: usize,
            released: &'static str,
            out_of_range: &'static [&'static str],
            taken: &'static str,
        }
        let cases = [
            Case {
                cidr: "192.168.1.0/24",
                family: IpFamily::V4,
                free: 254,
                released: "192.168.1.5",
                out_of_range: &["192.168.0.1", "192.168.1.0", "192.168.1.255", "192.168.2.2"],
                taken: "192.168.1.1",
            },
            Case {
                cidr: "10.0.0.0/15",
                family: IpFamily::V4,
                free: 131070,
                released: "10.0.0.5",
                out_of_range: &["10.0.0.0", "10.1.255.255", "10.255.255.2"],
                taken: "10.0.0.1",
            },
            Case {
                cidr: "2001:db8:1::/48",
                family: IpFamily::V6,
                free: 65535,
                released: "2001:db8:1::5",
                out_of_range: &["2001:db8::1", "2001:db8:1::", "2001:db8:1::1:0", "2001:db8:2::2"],
                taken: "2001:db8:1::1",
            },
        ];
        for Case { cidr, family, free, released, out_of_range, taken } in cases {
            let mut r = range(cidr);
            assert_eq!((r.free(), r.used(), r.family(), r.cidr().to_string()), (free, 0, family, cidr.to_string()));
            let mut found = HashSet::new();
            while r.free() > 0 {
                let got = r.allocate_next().expect("not full yet");
                assert!(r.cidr().contains(got) && found.insert(got), "{cidr}: {got}");
            }
            assert_eq!(r.allocate_next(), Err(AllocError::Full));

            assert!(r.release(ip(released)));
            assert_eq!((r.free(), r.used()), (1, free - 1));
            assert_eq!(r.allocate_next(), Ok(ip(released)));
            assert!(r.release(ip(released)));
            for &bad in out_of_range {
                assert_eq!(
                    r.allocate(ip(bad)),
                    Err(AllocError::IpNotInRange { ip: ip(bad), range: cidr.to_string() }),
                    "{cidr}: {bad}"
                );
            }
            assert_eq!(r.allocate(ip(taken)), Err(AllocError::IpAllocated));
            assert_eq!((r.free(), r.used()), (1, free - 1));
            assert_eq!(r.allocate(ip(released)), Ok(()));
            assert_eq!((r.free(), r.used()), (0, free));
        }
    }

    #[test]
    fn error_messages() {
        let mut r = range("10.0.0.0/24");
        assert_eq!(
            r.allocate(ip("10.0.1.5")).map_err(|e| e.to_string()),
            Err("the provided IP (10.0.1.5) is not in the valid range. The range of valid IPs is 10.0.0.0/24".into())
        );
        r.allocate(ip("10.0.0.5")).expect("free");
        assert_eq!(
            r.allocate(ip("10.0.0.5")).map_err(|e| e.to_string()),
            Err("provided IP is already allocated".into())
        );
        assert_eq!(AllocError::Full.to_string(), "range is full");
    }

    /// `TestAllocateTiny`.
    #[test]
    fn allocate_tiny() {
        let mut r = range("192.168.1.0/32");
        assert_eq!(r.free(), 0);
        assert_eq!(r.allocate_next(), Err(AllocError::Full));
    }

    /// `TestAllocateReserved`: dynamic allocation fills the dynamic band first; the static band
    /// takes explicit allocations.
    #[test]
    fn allocate_reserved() {
        let mut r = range("192.168.1.0/25");
        let band = r.static_band();
        assert_eq!(band, 16);
        for _ in 0..r.size() - band {
            r.allocate_next().expect("dynamic band");
        }
        for i in band..r.size() {
            assert!(r.has(ip(&format!("192.168.1.{}", i + 1))));
        }
        assert_eq!(r.free(), band);
        for i in 0..band {
            assert_eq!(r.allocate(ip(&format!("192.168.1.{}", i + 1))), Ok(()));
        }
        assert_eq!(r.free(), 0);
        assert!(r.release(ip("192.168.1.10")));
        assert_eq!(r.allocate_next(), Ok(ip("192.168.1.10")));
        assert_eq!(r.free(), 0);
    }

    /// `TestAllocateSmall`: a /30 has two addresses, and stays full.
    #[test]
    fn allocate_small() {
        let mut r = range("192.168.1.240/30");
        assert_eq!(r.free(), 2);
        let a = r.allocate_next().expect("first");
        let b = r.allocate_next().expect("second");
        assert_ne!(a, b);
        for x in [a, b] {
            assert!(r.has(x));
            assert_eq!(r.allocate(x), Err(AllocError::IpAllocated));
        }
        for _ in 0..100 {
            assert_eq!(r.allocate_next(), Err(AllocError::Full));
        }
        assert_eq!((r.free(), r.size()), (0, 2));
    }

    /// Network and broadcast addresses are never handed out, nor explicitly allocatable.
    #[test]
    fn network_and_broadcast_excluded() {
        for (cidr, network, broadcast) in
            [("10.0.0.0/28", "10.0.0.0", "10.0.0.15"), ("10.0.0.0/24", "10.0.0.0", "10.0.0.255")]
        {
            let mut r = range(cidr);
            let all: HashSet<_> = std::iter::from_fn(|| r.allocate_next().ok()).collect();
            assert_eq!(all.len(), r.size());
            assert!(!all.contains(&ip(network)) && !all.contains(&ip(broadcast)));
            assert!(!r.contains(ip(network)) && !r.contains(ip(broadcast)));
            assert!(matches!(r.allocate(ip(broadcast)), Err(AllocError::IpNotInRange { .. })));
            assert!(!r.release(ip(network)), "out of range release is a no-op");
        }
        // IPv6: the network address is excluded, the all-ones address of a /120 is not.
        let mut r = range("fd00::/120");
        assert!(!r.contains(ip("fd00::")) && r.contains(ip("fd00::ff")));
        assert_eq!(r.allocate(ip("fd00::ff")), Ok(()));
    }

    /// Dynamic allocation stays out of the static band until the dynamic band is full.
    #[test]
    fn dynamic_prefers_dynamic_band() {
        let mut r = range("10.0.0.0/24");
        r.allocate(ip("10.0.0.16")).expect("static band, explicit");
        for _ in 0..238 {
            let got = r.allocate_next().expect("dynamic band");
            assert!(got >= ip("10.0.0.17") && got <= ip("10.0.0.254"), "{got}");
        }
        let got = r.allocate_next().expect("static band");
        assert!(got >= ip("10.0.0.1") && got <= ip("10.0.0.15"), "{got}");
    }

    /// Every address of a /20 once, then full.
    #[test]
    fn allocate_all_of_a_slash_20() {
        let mut r = range("10.1.0.0/20");
        let mut seen = HashSet::new();
        for _ in 0..4094 {
            assert!(seen.insert(r.allocate_next().expect("free left")));
        }
        assert_eq!(r.allocate_next(), Err(AllocError::Full));
        assert_eq!((r.used(), r.free(), r.iter().count()), (4094, 0, 4094));
    }

    /// A full /16 with one random hole: `allocate_next` finds exactly the hole.
    #[test]
    fn refill_one_hole_in_a_full_slash_16() {
        let mut r = range("10.0.0.0/16");
        for i in 1..=r.size() {
            r.allocate(r.nth(i).expect("in range")).expect("free");
        }
        let mut rng = rand::rng();
        for _ in 0..10 {
            let hole = r.nth(rng.random_range(1..=r.size())).expect("in range");
            assert!(r.release(hole));
            assert_eq!(r.allocate_next(), Ok(hole));
        }
        assert_eq!(r.allocate_next(), Err(AllocError::Full));
    }

    #[test]
    fn nth_well_known() {
        let r = range("127.96.0.0/12");
        assert_eq!(r.nth(1), Some(ip("127.96.0.1")));
        assert_eq!(r.nth(10), Some(ip("127.96.0.10")));
        assert_eq!(r.nth(256), Some(ip("127.96.1.0")), "last of the static band");
        let r = range("fd00:10:96::/112");
        assert_eq!(r.nth(10), Some(ip("fd00:10:96::a")));
    }

    /// `TestForEach`.
    #[test]
    fn for_each() {
        let sets: [&[&str]; 4] = [
            &[],
            &["192.168.1.1"],
            &["192.168.1.1", "192.168.1.254"],
            &["192.168.1.1", "192.168.1.128", "192.168.1.254"],
        ];
        for set in sets {
            let mut r = range("192.168.1.0/24");
            for s in set {
                r.allocate(ip(s)).expect("free");
                assert!(r.has(ip(s)));
            }
            assert_eq!(r.iter().collect::<Vec<_>>(), set.iter().map(|s| ip(s)).collect::<Vec<_>>());
        }
    }

    /// `TestSnapshot` and `TestNewFromSnapshot`.
    #[test]
    fn snapshot_restore() {
        let mut r = range("192.168.0.0/24");
        let allocated: Vec<_> = (0..128).map(|_| r.allocate_next().expect("free")).collect();
        let (spec, data) = r.snapshot();
        assert_eq!(spec, "192.168.0.0/24");
        assert_eq!(r.restore("192.168.2.0/24", &data), Err(AllocError::MismatchedNetwork));
        let mut other = range("192.168.0.0/24");
        other.restore(&spec, &data).expect("same network");
        assert_eq!(other.free(), r.free());
        let restored = IpAllocator::from_snapshot(&spec, &data).expect("snapshot");
        assert_eq!((restored.free(), restored.used()), (126, 128));
        assert!(allocated.iter().all(|&a| restored.has(a) && other.has(a)));
    }

    #[test]
    fn release_is_a_noop_outside() {
        let mut r = range("10.0.0.0/24");
        assert!(!r.release(ip("10.0.0.7")));
        assert!(!r.release(ip("10.9.9.9")));
        assert!(!r.release(ip("fd00::1")));
        assert!(!r.has(ip("fd00::1")) && !r.contains(ip("fd00::1")));
        assert_eq!(r.used(), 0);
    }
}
