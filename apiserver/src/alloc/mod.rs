//! ClusterIP and NodePort allocators, after upstream's `pkg/registry/core/service/{allocator,ipallocator,portallocator}`.
//!
//! - [`AllocationBitmap`] (`allocator/bitmap.go`): offsets `[0, max)` with a static band at the
//!   bottom that dynamic allocation leaves alone until the dynamic band above it is full
//!   (KEP-3070), indexed two levels deep so a nearly full range is as cheap as an empty one.
//! - [`IpAllocator`] (`ipallocator/bitmap.go`): one CIDR of either family.
//! - [`PortAllocator`] (`portallocator/allocator.go`): one `first-last` port range.
//!
//! The allocators are plain values with `&mut self` methods; the registry keeps one
//! [`IpAllocator`] per configured family and one [`PortAllocator`] behind a lock, and maps
//! [`AllocError`] to the API error that upstream's `storage/alloc.go` builds around the same
//! message (each variant says which).
//!
//! ```
//! use kplane_apiserver::alloc::{IpAllocator, PortAllocator};
//!
//! let mut ips = IpAllocator::parse("127.96.0.0/12").unwrap();
//! let kubernetes = ips.nth(1).unwrap(); // 127.96.0.1
//! ips.allocate(kubernetes).unwrap();
//! let dynamic = ips.allocate_next().unwrap(); // somewhere in 127.96.1.1-127.111.255.254
//! assert!(ips.has(dynamic) && ips.used() == 2);
//!
//! let mut ports = PortAllocator::parse("30000-32767").unwrap();
//! let port = ports.allocate_next().unwrap(); // 30086-32767 until those run out
//! assert!(ports.has(port));
//! ```

mod bitmap;
mod ip;
mod port;

use std::net::IpAddr;

pub use bitmap::AllocationBitmap;
pub use ip::{Cidr, IpAllocator, IpFamily};
pub use port::{PortAllocator, PortRange};

/// Why an allocator refused. `Display` is upstream's error text; the notes say how upstream's
/// `storage/alloc.go` wraps it, which the registry reproduces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// `ErrFull` of both allocators: `range is full`. Upstream turns dynamic exhaustion into a
    /// 500 InternalError: `failed to allocate a serviceIP: range is full`,
    /// `failed to allocate a nodePort: range is full`, and for the health-check port
    /// `failed to allocate a HealthCheck NodePort ...: range is full`.
    #[error("range is full")]
    Full,
    /// `ipallocator.ErrAllocated`: `provided IP is already allocated`. Upstream: 422
    /// `spec.clusterIPs: Invalid value: ["10.0.0.5"]: failed to allocate IP 10.0.0.5: provided IP is already allocated`.
    #[error("provided IP is already allocated")]
    IpAllocated,
    /// `ipallocator.ErrNotInRange`:
    /// `the provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12`
    /// (releases before 1.27 said `provided IP is not in the valid range...`). Upstream: 422 on
    /// `spec.clusterIPs` with `failed to allocate IP <ip>: ` in front, as for [`Self::IpAllocated`].
    /// Also returned for the network address and the IPv4 broadcast address.
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    IpNotInRange {
        /// The address asked for.
        ip: IpAddr,
        /// The allocator's CIDR, e.g. `10.96.0.0/12`.
        range: String,
    },
    /// `portallocator.ErrAllocated`: `provided port is already allocated`. Upstream: 422
    /// `spec.ports[i].nodePort: Invalid value: 30080: provided port is already allocated`
    /// (for the health-check port, a 500: `failed to allocate requested HealthCheck NodePort 30080: ...`).
    #[error("provided port is already allocated")]
    PortAllocated,
    /// `portallocator.ErrNotInRange`:
    /// `provided port is not in the valid range. The range of valid ports is 30000-32767`.
    /// Upstream: 422 `spec.ports[i].nodePort: Invalid value: 80: <this>` (health-check port: 500).
    #[error("provided port is not in the valid range. The range of valid ports is {range}")]
    PortNotInRange {
        /// The allocator's range as `first-last`.
        range: String,
    },
    /// `ipallocator.ErrMismatchedNetwork`: a snapshot of another CIDR was restored.
    #[error("the provided network does not match the current range")]
    MismatchedNetwork,
    /// `portallocator.ErrMismatchedNetwork`: a snapshot of another port range was restored.
    #[error("the provided port range does not match the current port range")]
    MismatchedPortRange,
    /// Go's `net.ParseCIDR` error: `invalid CIDR address: <text>`.
    #[error("invalid CIDR address: {0}")]
    InvalidCidr(String),
    /// apimachinery `net.ParsePortRange` errors; the field holds the whole message:
    /// `end port cannot be less than start port: 32767-30000`,
    /// `the port range cannot be greater than 65535: ...`, `unable to parse port range: ...`
    /// (upstream reports a bad number with Go's `strconv` text instead).
    #[error("{0}")]
    InvalidPortRange(String),
    /// An IPv4 range with more than 20 host bits (one bit per address is kept). The text is
    /// kube-apiserver's flag check (`validateMaxCIDRRange`):
    /// `specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12`.
    #[error(
        "specified --service-cluster-ip-range is too large; for {bits}-bit addresses, the mask must be >= {min_prefix}"
    )]
    RangeTooLarge {
        /// Address width: 32.
        bits: u8,
        /// Shortest prefix accepted: 12.
        min_prefix: u8,
    },
}

/// `calculateRangeOffset` of both allocators: `min(max(min, size/step), max)`, or 0 when the
/// range has at most `min` entries.
fn range_offset(size: u128, min: u128, step: u128, max: u128) -> usize {
    if size <= min {
        return 0;
    }
    // Bounded by `max` (<= 256), so the cast cannot truncate.
    (size / step).clamp(min, max) as usize
}
