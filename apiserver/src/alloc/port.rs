//! NodePort allocation over one port range: upstream's `pkg/registry/core/service/portallocator/allocator.go`
//! (`PortAllocator`, `calculateRangeOffset`), with apimachinery's `net.PortRange` for parsing.
//!
//! Offset 0 is the first port. The static band is `min(max(16, size/32), 128)` ports, 0 when
//! `size <= 16`: for the default `30000-32767` (2768 ports) it is 86, so `allocate_next` hands
//! out 30086–32767 before touching 30000–30085.

use std::fmt;
use std::str::FromStr;

use super::{AllocError, AllocationBitmap, range_offset};

/// A contiguous range of ports, `first-last` inclusive (apimachinery `net.PortRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    base: u16,
    /// Number of ports, up to 65536; 0 for the empty range.
    size: u32,
}

impl PortRange {
    /// `first..=last`; errors when `last < first`.
    pub fn new(first: u16, last: u16) -> Result<Self, AllocError> {
        if last < first {
            return Err(AllocError::InvalidPortRange(format!(
                "end port cannot be less than start port: {first}-{last}"
            )));
        }
        Ok(Self { base: first, size: u32::from(last - first) + 1 })
    }

    /// The first port.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// The number of ports.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: i32) -> bool {
        let base = i64::from(self.base);
        (base..base + i64::from(self.size)).contains(&i64::from(port))
    }
}

impl Default for PortRange {
    /// kube-apiserver's default `--service-node-port-range`: `30000-32767`.
    fn default() -> Self {
        Self { base: 30000, size: 2768 }
    }
}

impl FromStr for PortRange {
    type Err = AllocError;

    /// `net.ParsePortRange`: `30000-32767`, `30000+2767` (base and extra ports), or a single
    /// port `30000`; the empty string is the empty range.
    fn from_str(value: &str) -> Result<Self, AllocError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(Self { base: 0, size: 0 });
        }
        let err = |msg: &str| AllocError::InvalidPortRange(format!("{msg}: {value}"));
        let num = |s: &str| s.parse::<u32>().map_err(|_| err("unable to parse port range"));
        let (low, high) = match (value.split_once('-'), value.split_once('+')) {
            (None, None) => (num(value)?, num(value)?),
            (Some((lo, hi)), None) => (num(lo)?, num(hi)?),
            (None, Some((lo, extra))) => {
                let lo = num(lo)?;
                (lo, lo.saturating_add(num(extra)?))
            }
            (Some(_), Some(_)) => return Err(err("unable to parse port range")),
        };
        if low > 65535 || high > 65535 {
            return Err(err("the port range cannot be greater than 65535"));
        }
        if high < low {
            return Err(err("end port cannot be less than start port"));
        }
        // Both checked <= 65535 above.
        Ok(Self { base: low as u16, size: high - low + 1 })
    }
}

impl fmt::Display for PortRange {
    /// `first-last`, or nothing for the empty range (upstream's `PortRange.String`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.size == 0 {
            return Ok(());
        }
        write!(f, "{}-{}", self.base, u32::from(self.base) + self.size - 1)
    }
}

/// Allocates the ports of one range (`portallocator.PortAllocator`). Ports are `i32`, as
/// `nodePort` and `healthCheckNodePort` are in the API.
///
/// ```
/// use kplane_apiserver::alloc::{AllocError, PortAllocator, PortRange};
///
/// let mut ports = PortAllocator::new(PortRange::default());
/// assert_eq!((ports.free(), ports.static_band()), (2768, 86));
/// ports.allocate(30080).unwrap();
/// assert_eq!(ports.allocate(30080), Err(AllocError::PortAllocated));
/// assert_eq!(
///     ports.allocate(80).unwrap_err().to_string(),
///     "provided port is not in the valid range. The range of valid ports is 30000-32767"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct PortAllocator {
    range: PortRange,
    bitmap: AllocationBitmap,
}

impl PortAllocator {
    /// `NewInMemory(pr)`.
    pub fn new(range: PortRange) -> Self {
        let size = range.size as usize;
        let offset = range_offset(u128::from(range.size), 16, 32, 128);
        Self { range, bitmap: AllocationBitmap::new(size, offset) }
    }

    /// Parses the range (see [`PortRange`]'s `FromStr`) and builds the allocator.
    pub fn parse(range: &str) -> Result<Self, AllocError> {
        Ok(Self::new(range.parse()?))
    }

    /// `NewFromSnapshot`: an allocator for `range` holding the ports of `data`.
    pub fn from_snapshot(range: &str, data: &[u8]) -> Result<Self, AllocError> {
        let mut r = Self::parse(range)?;
        r.bitmap.load_bytes(data);
        Ok(r)
    }

    /// The range covered.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Number of ports, from the first up, in the static band.
    pub fn static_band(&self) -> usize {
        self.bitmap.offset()
    }

    /// Count of free ports.
    pub fn free(&self) -> usize {
        self.bitmap.free()
    }

    /// Count of allocated ports.
    pub fn used(&self) -> usize {
        self.bitmap.used()
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: i32) -> bool {
        self.range.contains(port)
    }

    /// Whether `port` is allocated (false when out of range).
    pub fn has(&self, port: i32) -> bool {
        self.offset_of(port).is_some_and(|at| self.bitmap.has(at))
    }

    /// `Allocate`: reserves `port`. [`AllocError::PortNotInRange`] when outside the range,
    /// [`AllocError::PortAllocated`] when taken.
    pub fn allocate(&mut self, port: i32) -> Result<(), AllocError> {
        let Some(at) = self.offset_of(port) else {
            return Err(AllocError::PortNotInRange { range: self.range.to_string() });
        };
        if self.bitmap.allocate(at) { Ok(()) } else { Err(AllocError::PortAllocated) }
    }

    /// `AllocateNext`: a random free port, from the dynamic band while it lasts;
    /// [`AllocError::Full`] when none is left.
    pub fn allocate_next(&mut self) -> Result<i32, AllocError> {
        let at = self.bitmap.allocate_next().ok_or(AllocError::Full)?;
        Ok(self.port_at(at))
    }

    /// `Release`: frees `port`. Releasing a free or out-of-range port is a no-op; returns
    /// whether anything was released.
    pub fn release(&mut self, port: i32) -> bool {
        self.offset_of(port).is_some_and(|at| self.bitmap.release(at))
    }

    /// `ForEach`: the allocated ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.bitmap.iter().map(|at| self.port_at(at))
    }

    /// `Snapshot`: the `RangeAllocation` `range` (`first-last`) and `data` (upstream's bitmap bytes).
    pub fn snapshot(&self) -> (String, Vec<u8>) {
        (self.range.to_string(), self.bitmap.to_bytes())
    }

    /// `Restore`: replaces the allocations with a snapshot's;
    /// [`AllocError::MismatchedPortRange`] when it was taken of another range.
    pub fn restore(&mut self, range: &str, data: &[u8]) -> Result<(), AllocError> {
        if range.parse::<PortRange>()? != self.range {
            return Err(AllocError::MismatchedPortRange);
        }
        self.bitmap.load_bytes(data);
        Ok(())
    }

    fn offset_of(&self, port: i32) -> Option<usize> {
        // In range, so non-negative and below 65536.
        self.range.contains(port).then(|| (port - i32::from(self.range.base)) as usize)
    }

    fn port_at(&self, at: usize) -> i32 {
        // `at < size <= 65536`, so the sum fits.
        i32::from(self.range.base) + at as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use std::collections::HashSet;

    fn ports(range: &str) -> PortAllocator {
        PortAllocator::parse(range).expect("test range")
    }

    /// `Test_calculateRangeOffset` (portallocator/allocator_test.go): (size, offset).
    #[test]
    fn range_offset_table() {
        for (size, want) in [(2768, 86), (10, 0), (16, 0), (17, 16), (128, 16), (2048, 64), (4096, 128), (8192, 128)] {
            let pr = PortRange::new(30000, 30000 + size - 1).expect("valid");
            assert_eq!(PortAllocator::new(pr).static_band(), want, "size {size}");
        }
    }

    #[test]
    fn parse_and_display() {
        let ok = [
            ("30000-32767", 30000, 2768, "30000-32767"),
            ("30000+2767", 30000, 2768, "30000-32767"),
            (" 8080 ", 8080, 1, "8080-8080"),
            ("0-65535", 0, 65536, "0-65535"),
            ("", 0, 0, ""),
        ];
        for (s, base, size, shown) in ok {
            let pr: PortRange = s.parse().expect(s);
            assert_eq!((pr.base(), pr.size(), pr.to_string()), (base, size, shown.to_string()), "{s}");
        }
        assert_eq!(PortRange::default().to_string(), "30000-32767");
        let bad = [
            ("32767-30000", "end port cannot be less than start port: 32767-30000"),
            ("30000-70000", "the port range cannot be greater than 65535: 30000-70000"),
            ("65000+1000", "the port range cannot be greater than 65535: 65000+1000"),
            ("a-b", "unable to parse port range: a-b"),
            ("1-2+3", "unable to parse port range: 1-2+3"),
            ("-1", "unable to parse port range: -1"),
        ];
        for (s, msg) in bad {
            assert_eq!(s.parse::<PortRange>(), Err(AllocError::InvalidPortRange(msg.into())), "{s}");
        }
        assert!(PortRange::new(2, 1).is_err());
    }

    /// `TestAllocate` (portallocator/allocator_test.go).
    #[test]
    fn allocate() {
        let mut r = ports("10000-10200");
        assert_eq!((r.free(), r.used()), (201, 0));
        let mut found = HashSet::new();
        while r.free() > 0 {
            let p = r.allocate_next().expect("not full yet");
            assert!(r.contains(p) && found.insert(p), "{p}");
        }
        assert_eq!(r.allocate_next(), Err(AllocError::Full));

        assert!(r.release(10005));
        assert_eq!((r.free(), r.used()), (1, 200));
        assert_eq!(r.allocate_next(), Ok(10005));
        assert!(r.release(10005));

        let not_in_range = Err(AllocError::PortNotInRange { range: "10000-10200".into() });
        assert_eq!(r.allocate(1), not_in_range);
        assert_eq!(r.allocate(10001), Err(AllocError::PortAllocated));
        assert_eq!(r.allocate(20000), not_in_range);
        assert_eq!(r.allocate(10201), not_in_range);
        assert_eq!(r.allocate(-1), not_in_range);
        assert_eq!((r.free(), r.used()), (1, 200));
        assert_eq!(r.allocate(10005), Ok(()));
        assert_eq!((r.free(), r.used()), (0, 201));
    }

    /// `TestAllocateReserved`: the dynamic band first, then explicit allocation of the static band.
    #[test]
    fn allocate_reserved() {
        let mut r = ports("30000-30128");
        let band = r.static_band();
        assert_eq!(band, 16);
        let size = r.range().size() as usize;
        for _ in 0..size - band {
            let p = r.allocate_next().expect("dynamic band");
            assert!(p >= 30000 + band as i32, "{p}");
        }
        assert_eq!(r.free(), band);
        for p in 30000..30000 + band as i32 {
            assert_eq!(r.allocate(p), Ok(()));
        }
        assert_eq!(r.free(), 0);
        assert!(r.release(30053));
        assert_eq!(r.allocate_next(), Ok(30053));
        assert_eq!(r.free(), 0);
    }

    /// The default range: 30086-32767 go first, then 30000-30085.
    #[test]
    fn default_range_bands() {
        let mut r = PortAllocator::new(PortRange::default());
        for _ in 0..2768 - 86 {
            let p = r.allocate_next().expect("dynamic band");
            assert!((30086..=32767).contains(&p), "{p}");
        }
        for _ in 0..86 {
            let p = r.allocate_next().expect("static band");
            assert!((30000..30086).contains(&p), "{p}");
        }
        assert_eq!(r.allocate_next(), Err(AllocError::Full));
        // One random hole in the full range is found exactly.
        let mut rng = rand::rng();
        for _ in 0..10 {
            let hole = rng.random_range(30000..=32767);
            assert!(r.release(hole));
            assert_eq!(r.allocate_next(), Ok(hole));
        }
    }

    #[test]
    fn error_messages() {
        let mut r = PortAllocator::new(PortRange::default());
        assert_eq!(
            r.allocate(80).map_err(|e| e.to_string()),
            Err("provided port is not in the valid range. The range of valid ports is 30000-32767".into())
        );
        r.allocate(30000).expect("free");
        assert_eq!(r.allocate(30000).map_err(|e| e.to_string()), Err("provided port is already allocated".into()));
        assert_eq!(
            r.restore("200-300", &[]).map_err(|e| e.to_string()),
            Err("the provided port range does not match the current port range".into())
        );
    }

    /// `TestForEach`.
    #[test]
    fn for_each() {
        let sets: [&[i32]; 4] = [&[], &[10000], &[10000, 10200], &[10000, 10099, 10200]];
        for set in sets {
            let mut r = ports("10000-10200");
            for &p in set {
                r.allocate(p).expect("free");
                assert!(r.has(p));
            }
            assert_eq!(r.iter().collect::<Vec<_>>(), set);
        }
    }

    /// `TestSnapshot` and `TestNewFromSnapshot`.
    #[test]
    fn snapshot_restore() {
        let mut r = ports("200-300");
        let allocated: Vec<_> = (0..50).map(|_| r.allocate_next().expect("free")).collect();
        let (spec, data) = r.snapshot();
        assert_eq!(spec, "200-300");
        assert_eq!(r.restore("10000-10200", &data), Err(AllocError::MismatchedPortRange));
        let mut other = ports("200-300");
        other.restore(&spec, &data).expect("same range");
        let restored = PortAllocator::from_snapshot(&spec, &data).expect("snapshot");
        assert_eq!((restored.free(), restored.used()), (51, 50));
        assert!(allocated.iter().all(|&p| restored.has(p) && other.has(p)));
    }

    #[test]
    fn whole_port_space() {
        let mut r = ports("0-65535");
        assert_eq!((r.free(), r.static_band()), (65536, 128));
        assert_eq!(r.allocate(65535), Ok(()));
        assert_eq!(r.allocate(0), Ok(()));
        assert!(!r.contains(65536) && !r.has(65536) && !r.release(65536));
        let mut empty = ports("");
        assert_eq!((empty.free(), empty.allocate_next()), (0, Err(AllocError::Full)));
        assert_eq!(empty.allocate(1), Err(AllocError::PortNotInRange { range: String::new() }));
    }
}
