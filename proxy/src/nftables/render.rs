//! The rules of one listener, as nftables objects (kube-proxy's nftables ruleset, upstream's
//! `syncProxyRules`, one Service address at a time). Pure: what serves a listener is decided by
//! [`crate::desired`]; this only writes it down.
//!
//! The per-Service state is map and set elements, not chains: the table has a fixed set of
//! chains plus one `pick` chain per endpoint count in use, so an endpoint change is a few element
//! deletions and additions, and what nft reads before each transaction (every chain and set of
//! the table, never elements) does not grow with the number of Services.
//!
//! Per Service address (`ip . proto . port`, NodePorts on each node address):
//! - an element of `service-ips` sends new connections to `pick<family>-<proto>-<n>` (n
//!   endpoints), which DNATs to `endpoints<family>-<proto>[address . port . numgen random mod n]`:
//!   a uniform choice;
//! - external addresses are in `external` (masqueraded) or `external-local` (only the node's own
//!   traffic masqueraded, `externalTrafficPolicy: Local`);
//! - each endpoint is in `hairpin`, so a connection DNATed to its own source is masqueraded;
//! - `loadBalancerSourceRanges`: the address is in `firewall` and each range in `firewall-allow`;
//!   other sources are dropped;
//! - no usable endpoints: a `no-endpoint-services` element that rejects.
//!
//! Per Service, each of its ClusterIPs is an element of `cluster-ips`: after DNAT, a new
//! connection to one of them on a port no Service serves is refused, while one to an address
//! of a Service CIDR that no Service has is dropped ([`base`]).
//!
//! `sessionAffinity: ClientIP` keeps chains (its state is per endpoint): the address's element
//! goes to a dispatch chain that checks per-endpoint affinity sets, then picks an endpoint chain
//! that records the client and DNATs. Those chains and sets are named by a hash of what they
//! hold, so a changed Service gets new ones and the old go once nothing uses them: a change never
//! edits a chain in place.

use crate::desired::{Class, Listen, RouteSpec, SourceRange};
use crate::endpoints::Protocol;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// kplane's table; nothing else is ever touched.
pub const TABLE: &str = "inet kplane";
/// The packet mark that asks for masquerading (kube-proxy's default bit 14).
const MASQ_MARK: &str = "0x4000";
/// Longest object name nft takes (NFT_NAME_MAXLEN 256, with room to spare).
const MAX_NAME: usize = 240;

/// An object's identity. The order is the order of creation: sets, then the chains others jump
/// to, then the chains jumping to them, then map elements (deletion goes the other way).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    Set(String),
    /// (rank, name): endpoint and firewall chains are rank 1, dispatch chains rank 2.
    Chain(u8, String),
    Element {
        map: &'static str,
        key: String,
    },
}

/// What an object holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// An affinity set of client addresses whose entries expire after `timeout`.
    Set {
        v6: bool,
        timeout: Duration,
    },
    Chain {
        rules: Vec<String>,
    },
    /// A map element's value (a verdict, an endpoint); empty for a set element.
    Element {
        value: String,
    },
}

/// One object of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: Id,
    pub body: Body,
}

/// A pair of names, the IPv4 one and the IPv6 one.
type Names = [&'static str; 2];

/// Verdict maps keyed by `address . protocol . port`: where new connections to a Service
/// address go (a pick chain, or an affinity Service's own chain), and the addresses whose
/// Service has no usable endpoints (`goto reject-chain`).
const SERVICE_IPS: Names = ["service-ips4", "service-ips6"];
const NO_ENDPOINTS: Names = ["no-endpoint-services4", "no-endpoint-services6"];
/// Per protocol, `address . port . slot` → `endpoint address . port`: slot i of a Service
/// address with n endpoints is endpoint i, and its pick chain draws `numgen random mod n`. One
/// map per protocol because nft 1.0.6 types the value's port by a protocol (`tcp dport`), and
/// its rules then match that protocol only (a `th dport` value cannot be read back from the
/// kernel: "conflicting protocols", which fails any later rule using the map).
const ENDPOINTS: [(Protocol, Names); 3] = [
    (Protocol::Tcp, ["endpoints4-tcp", "endpoints6-tcp"]),
    (Protocol::Udp, ["endpoints4-udp", "endpoints6-udp"]),
    (Protocol::Sctp, ["endpoints4-sctp", "endpoints6-sctp"]),
];

fn endpoints_map(protocol: Protocol, v6: bool) -> &'static str {
    let names = ENDPOINTS.iter().find(|(p, _)| *p == protocol).map_or(ENDPOINTS[0].1, |(_, n)| *n);
    pick(names, v6)
}

/// Service addresses whose new connections are masqueraded (external ones), and those that
/// masquerade only what the node itself sends (`externalTrafficPolicy: Local`).
const EXTERNAL: Names = ["external4", "external6"];
const EXTERNAL_LOCAL: Names = ["external-local4", "external-local6"];
/// `endpoint . endpoint`: a connection DNATed back to its own source is masqueraded (hairpin).
const HAIRPIN: Names = ["hairpin4", "hairpin6"];
/// Load-balancer addresses with `loadBalancerSourceRanges`, and `address . protocol . port .
/// source range` for the sources each admits.
const FIREWALL: Names = ["firewall4", "firewall6"];
const FIREWALL_ALLOW: Names = ["firewall-allow4", "firewall-allow6"];
/// The ClusterIPs Services have (one element per address, whatever its ports): a new
/// connection still addressed to one after DNAT wanted a port no Service serves, and is refused.
const CLUSTER_IPS: Names = ["cluster-ips4", "cluster-ips6"];

fn pick(names: Names, v6: bool) -> &'static str {
    names[usize::from(v6)]
}

fn ipx(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

fn addr_type(v6: bool) -> &'static str {
    if v6 { "ipv6_addr" } else { "ipv4_addr" }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// `10.0.0.1 . tcp . 80`: the key of a listener in the verdict maps.
fn key(listen: &Listen) -> String {
    format!("{} . {} . {}", listen.addr.ip(), proto(listen.protocol), listen.addr.port())
}

/// FNV-1a: a stable hash for names (stable within a run is all that is needed; a restart rebuilds).
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `prefix-HASH-rest`, cut to what nft accepts (the hash keeps cut names apart).
fn name(prefix: &str, hash: u64, rest: &str) -> String {
    let mut n = format!("{prefix}-{hash:016x}-{rest}");
    if n.len() > MAX_NAME {
        let mut cut = MAX_NAME;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

/// `namespace/name/tcp/port`, as upstream names a Service port's chains (all valid in names).
fn service_base(route: &RouteSpec) -> String {
    let s = &route.service;
    format!("{}/{}/{}/{}", s.namespace, s.name, proto(s.protocol), s.port)
}

/// `10.0.0.1/80`; an IPv6 address's colons become dots (colons are not allowed in names).
fn endpoint_base(ep: &SocketAddr) -> String {
    format!("{}/{}", ep.ip().to_string().replace(':', "."), ep.port())
}

/// `10.0.0.1:80` or `[fd00::1]:80`, as `dnat to` takes it.
fn dnat_target(ep: &SocketAddr) -> String {
    match ep.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", ep.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", ep.port()),
    }
}

fn chain(rank: u8, name: String, rules: Vec<String>) -> Object {
    Object { id: Id::Chain(rank, name), body: Body::Chain { rules } }
}

/// The objects that make `listen` forward as `route` says. `external_local`: the Service's
/// `externalTrafficPolicy` is `Local` (external traffic keeps its source unless the node sent it).
pub fn route(listen: &Listen, route: &RouteSpec, external_local: bool) -> Vec<Object> {
    if route.endpoints.is_empty() {
        return reject(listen);
    }
    let v6 = listen.addr.is_ipv6();
    let key = key(listen);
    let mut out = Vec::new();
    if route.class == Class::External {
        // kube-proxy: external traffic is masqueraded, as it may cross nodes; with the Local
        // policy only what the node itself sends (its source would be a local address).
        out.push(element(pick(if external_local { EXTERNAL_LOCAL } else { EXTERNAL }, v6), key.clone(), ""));
    }
    let ranges = source_ranges(&route.sources, v6);
    if !ranges.is_empty() {
        out.push(element(pick(FIREWALL, v6), key.clone(), ""));
        for (net, prefix) in ranges {
            out.push(element(pick(FIREWALL_ALLOW, v6), format!("{key} . {net}/{prefix}"), ""));
        }
    }
    let dispatch = match route.affinity {
        None => {
            let n = route.endpoints.len();
            let (ip, p) = (ipx(v6), proto(listen.protocol));
            let endpoints = endpoints_map(listen.protocol, v6);
            let chain_name = format!("pick{}-{p}-{n}", if v6 { 6 } else { 4 });
            let rule = format!("dnat {ip} to {ip} daddr . {p} dport . numgen random mod {n} map @{endpoints}");
            out.push(chain(1, chain_name.clone(), vec![rule]));
            let mut hairpins = BTreeSet::new();
            for (slot, ep) in route.endpoints.iter().enumerate() {
                let key = format!("{} . {} . {slot}", listen.addr.ip(), listen.addr.port());
                out.push(element(endpoints, key, &format!("{} . {}", ep.ip(), ep.port())));
                hairpins.insert(ep.ip());
            }
            for ip in hairpins {
                out.push(element(pick(HAIRPIN, v6), format!("{ip} . {ip}"), ""));
            }
            chain_name
        }
        Some(timeout) => affinity(listen, route, timeout, &mut out),
    };
    out.push(element(pick(SERVICE_IPS, v6), key, &format!("goto {dispatch}")));
    out
}

/// The chains and sets of a Service address with ClientIP affinity; returns the chain its
/// `service-ips` element goes to.
fn affinity(listen: &Listen, route: &RouteSpec, timeout: Duration, out: &mut Vec<Object>) -> String {
    let v6 = listen.addr.is_ipv6();
    let ip = ipx(v6);
    let base = service_base(route);
    let timeout = Duration::from_secs(timeout.as_secs().max(1));
    let mut endpoint_chains = Vec::with_capacity(route.endpoints.len());
    let mut rules = Vec::new();
    for ep in &route.endpoints {
        let ep_base = format!("{base}__{}", endpoint_base(ep));
        let set = name("aff", fnv(&[&ep_base, &timeout.as_secs().to_string()]), &ep_base);
        out.push(Object { id: Id::Set(set.clone()), body: Body::Set { v6, timeout } });
        let ep_rules = vec![
            format!("{ip} saddr {} jump mark-for-masquerade", ep.ip()),
            format!("update @{set} {{ {ip} saddr }}"),
            format!("meta l4proto {} dnat {ip} to {}", proto(listen.protocol), dnat_target(ep)),
        ];
        let ep_chain = name("ep", fnv(&ep_rules.iter().map(String::as_str).collect::<Vec<_>>()), &ep_base);
        rules.push(format!("{ip} saddr @{set} goto {ep_chain}"));
        out.push(chain(1, ep_chain.clone(), ep_rules));
        endpoint_chains.push(ep_chain);
    }
    // Uniform choice as iptables' `statistic` chain: endpoint i with probability 1/(n-i). No
    // anonymous vmap: the kernel names each anonymous set by scanning the table's sets, which
    // made a first sync of 10,000 Services take 17 s.
    let n = endpoint_chains.len();
    for (i, c) in endpoint_chains.iter().enumerate() {
        rules.push(if i + 1 == n { format!("goto {c}") } else { format!("numgen random mod {} == 0 goto {c}", n - i) });
    }
    let dispatch = name("svc", fnv(&rules.iter().map(String::as_str).collect::<Vec<_>>()), &base);
    out.push(chain(2, dispatch.clone(), rules));
    dispatch
}

/// The ranges of `sources` in the listener's family, as (network address, prefix), without any
/// range inside another (the kernel refuses overlapping elements).
pub(crate) fn source_ranges(sources: &[SourceRange], v6: bool) -> Vec<(IpAddr, u8)> {
    let same: Vec<&SourceRange> = sources.iter().filter(|r| r.addr.is_ipv6() == v6).collect();
    let mut out: Vec<(IpAddr, u8)> = Vec::new();
    for (i, r) in same.iter().enumerate() {
        let covered = same
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.contains(r.addr) && (o.prefix < r.prefix || (o.prefix == r.prefix && j < i)));
        if !covered {
            out.push((network(r), r.prefix));
        }
    }
    out.sort();
    out
}

/// The network address of a range (its host bits cleared).
fn network(range: &SourceRange) -> IpAddr {
    match range.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(range.prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(range.prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn element(map: &'static str, key: String, value: &str) -> Object {
    Object { id: Id::Element { map, key }, body: Body::Element { value: value.to_string() } }
}

/// The object that refuses new connections to `listen` (its Service has no usable endpoints):
/// a TCP reset, else ICMP port unreachable (`reject-chain`).
pub fn reject(listen: &Listen) -> Vec<Object> {
    vec![element(pick(NO_ENDPOINTS, listen.addr.is_ipv6()), key(listen), "goto reject-chain")]
}

/// The element that marks `ip` as a ClusterIP in use (`cluster-ips`): shared by every port and
/// Service with that address (the model counts its users).
pub fn cluster_ip(ip: IpAddr) -> Object {
    element(pick(CLUSTER_IPS, ip.is_ipv6()), ip.to_string(), "")
}

/// The fixed part of the table: hooks, maps and helper chains (upstream's `setupNFTables`).
/// Filter chains run before DNAT (priority -110) so they see the Service address, except
/// `filter-output-post-dnat` and `filter-forward` (forwarding comes after prerouting's DNAT),
/// which see where DNAT sent a packet: there a new connection still addressed to a Service
/// address was DNATed by no rule, and `cluster-ips-check` decides, unless the address is local
/// (something on the node serves it, as the cluster DNS): a ClusterIP some Service has
/// (`cluster-ips`) is refused at once, as a closed port would be (the client gets a TCP reset or
/// ICMP port unreachable, not a hang); any other address in a Service CIDR is dropped.
///
/// Why drop: NAT is chosen once, by a connection's first packet, and conntrack keeps the choice
/// with the entry. An attempt at a ClusterIP whose rules are not in yet (the proxy has not seen
/// the Service) would otherwise leave an un-NATed entry in SYN_SENT (the SYN goes asking ARP for
/// the ClusterIP) for 120 s (the SYN_SENT timeout); a later connection that gets the same
/// client port (ports are reused within seconds at thousands of connections a second) matches
/// it as a new, un-NATed connection, goes asking ARP too and times out. A dropped packet's entry
/// is never confirmed, so the client's retransmission, a second later, is NATed afresh (as
/// upstream's "unallocated ClusterIPs" drop).
pub fn base(service_cidrs: &[SourceRange]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table {TABLE} {{ comment \"kplane service proxy\"; }}");
    for v6 in [false, true] {
        let (ip, addr) = (ipx(v6), addr_type(v6));
        let service = format!("{addr} . inet_proto . inet_service");
        for map in [SERVICE_IPS, NO_ENDPOINTS] {
            let _ = writeln!(s, "add map {TABLE} {} {{ type {service} : verdict; }}", pick(map, v6));
        }
        for (protocol, names) in ENDPOINTS {
            let p = proto(protocol);
            let _ = writeln!(
                s,
                "add map {TABLE} {} {{ typeof {ip} daddr . {p} dport . numgen random mod 1 : {ip} daddr . {p} dport; }}",
                pick(names, v6)
            );
        }
        for set in [EXTERNAL, EXTERNAL_LOCAL, FIREWALL] {
            let _ = writeln!(s, "add set {TABLE} {} {{ type {service}; }}", pick(set, v6));
        }
        let _ = writeln!(s, "add set {TABLE} {} {{ type {addr} . {addr}; }}", pick(HAIRPIN, v6));
        let _ = writeln!(s, "add set {TABLE} {} {{ type {addr}; }}", pick(CLUSTER_IPS, v6));
        let _ =
            writeln!(s, "add set {TABLE} {} {{ type {service} . {addr}; flags interval; }}", pick(FIREWALL_ALLOW, v6));
    }
    let per_family =
        |rules: &dyn Fn(bool) -> Vec<String>| -> Vec<String> { [false, true].into_iter().flat_map(rules).collect() };
    let service = |v6: bool| format!("{} daddr . meta l4proto . th dport", ipx(v6));
    // Refusals first: a ClusterIP is inside a Service CIDR too.
    let mut cluster_ips_check = per_family(&|v6| {
        vec![format!("{} daddr @{} fib daddr type != local goto reject-chain", ipx(v6), pick(CLUSTER_IPS, v6))]
    });
    cluster_ips_check.extend(
        service_cidrs.iter().map(|r| {
            format!("{} daddr {}/{} fib daddr type != local drop", ipx(r.addr.is_ipv6()), network(r), r.prefix)
        }),
    );
    let helpers: [(&str, Vec<String>); 7] = [
        // Jump targets first.
        ("reject-chain", vec!["meta l4proto tcp reject with tcp reset".into(), "reject".into()]),
        ("mark-for-masquerade", vec![format!("meta mark set meta mark or {MASQ_MARK}")]),
        (
            "services",
            per_family(&|v6| {
                vec![
                    format!("{} @{} jump mark-for-masquerade", service(v6), pick(EXTERNAL, v6)),
                    format!(
                        "fib saddr type local {} @{} jump mark-for-masquerade",
                        service(v6),
                        pick(EXTERNAL_LOCAL, v6)
                    ),
                    format!("{} vmap @{}", service(v6), pick(SERVICE_IPS, v6)),
                ]
            }),
        ),
        ("cluster-ips-check", cluster_ips_check),
        ("endpoints-check", per_family(&|v6| vec![format!("{} vmap @{}", service(v6), pick(NO_ENDPOINTS, v6))])),
        (
            "firewall-check",
            per_family(&|v6| {
                vec![format!(
                    "{} @{} {} . {} saddr != @{} drop",
                    service(v6),
                    pick(FIREWALL, v6),
                    service(v6),
                    ipx(v6),
                    pick(FIREWALL_ALLOW, v6)
                )]
            }),
        ),
        ("masquerading", {
            let mut rules = per_family(&|v6| {
                let ip = ipx(v6);
                vec![format!("ct status dnat {ip} saddr . {ip} daddr @{} jump mark-for-masquerade", pick(HAIRPIN, v6))]
            });
            rules.extend([
                format!("meta mark & {MASQ_MARK} == 0 return"),
                format!("meta mark set meta mark xor {MASQ_MARK}"),
                "masquerade fully-random".into(),
            ]);
            rules
        }),
    ];
    for (chain, rules) in &helpers {
        let _ = writeln!(s, "add chain {TABLE} {chain}");
        for rule in rules {
            let _ = writeln!(s, "add rule {TABLE} {chain} {rule}");
        }
    }
    let hooks: [(&str, &str, &str, i32, &[&str]); 8] = [
        ("filter-prerouting", "filter", "prerouting", -110, &["ct state new jump firewall-check"]),
        ("filter-input", "filter", "input", -110, &["ct state new jump endpoints-check"]),
        (
            "filter-forward",
            "filter",
            "forward",
            -110,
            &["ct state new jump endpoints-check", "ct state new jump cluster-ips-check"],
        ),
        (
            "filter-output",
            "filter",
            "output",
            -110,
            &["ct state new jump endpoints-check", "ct state new jump firewall-check"],
        ),
        ("filter-output-post-dnat", "filter", "output", 0, &["ct state new jump cluster-ips-check"]),
        ("nat-prerouting", "nat", "prerouting", -100, &["jump services"]),
        ("nat-output", "nat", "output", -100, &["jump services"]),
        ("nat-postrouting", "nat", "postrouting", 100, &["jump masquerading"]),
    ];
    for (chain, kind, hook, priority, rules) in hooks {
        let _ =
            writeln!(s, "add chain {TABLE} {chain} {{ type {kind} hook {hook} priority {priority}; policy accept; }}");
        for rule in rules {
            let _ = writeln!(s, "add rule {TABLE} {chain} {rule}");
        }
    }
    s
}

/// The lines that create `object`.
pub fn add(out: &mut String, object: &Object) {
    match (&object.id, &object.body) {
        (Id::Set(name), Body::Set { v6, timeout }) => {
            let addr = addr_type(*v6);
            let secs = timeout.as_secs();
            let _ = writeln!(out, "add set {TABLE} {name} {{ type {addr}; flags dynamic,timeout; timeout {secs}s; }}");
        }
        (Id::Chain(_, name), Body::Chain { rules }) => {
            let _ = writeln!(out, "add chain {TABLE} {name}");
            for rule in rules {
                let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
            }
        }
        (Id::Element { map, key }, Body::Element { value }) if value.is_empty() => {
            let _ = writeln!(out, "add element {TABLE} {map} {{ {key} }}");
        }
        (Id::Element { map, key }, Body::Element { value }) => {
            let _ = writeln!(out, "add element {TABLE} {map} {{ {key} : {value} }}");
        }
        _ => {} // an id never pairs with another kind of body (both come from `route`/`reject`)
    }
}

/// The lines that delete the object `id`.
pub fn delete(out: &mut String, id: &Id) {
    match id {
        Id::Set(name) => {
            let _ = writeln!(out, "delete set {TABLE} {name}");
        }
        Id::Chain(_, name) => {
            let _ = writeln!(out, "flush chain {TABLE} {name}");
            let _ = writeln!(out, "delete chain {TABLE} {name}");
        }
        Id::Element { map, key } => {
            let _ = writeln!(out, "delete element {TABLE} {map} {{ {key} }}");
        }
    }
}

/// Removes kplane's table if present (`add` first, so that a missing table is no error).
pub fn remove_table() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}
