//! The rules of one listener, as nftables objects (kube-proxy's nftables ruleset, upstream's
//! `syncProxyRules`, one Service address at a time). Pure: what serves a listener is decided by
//! [`crate::desired`]; this only writes it down.
//!
//! Per Service address (`ip . proto . port`, NodePorts on each node address): an element of the
//! `service-ips` verdict map sending new connections to a dispatch chain, which picks an endpoint
//! chain (ClientIP affinity first, then `numgen random`); each endpoint chain marks hairpin
//! traffic for masquerade, records the client in its affinity set and DNATs. An address whose
//! Service has no usable endpoints gets a `no-endpoint-services` element that rejects. Chains and
//! sets are named by a hash of what they hold, so a changed Service gets new chains and the old
//! ones go once nothing uses them: a change never edits a chain in place.

use crate::desired::{Class, Listen, RouteSpec};
use crate::endpoints::Protocol;
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
    Element {
        verdict: String,
    },
}

/// One object of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: Id,
    pub body: Body,
}

/// The names of a family's maps.
fn maps(v6: bool) -> (&'static str, &'static str, &'static str) {
    if v6 {
        ("service-ips6", "no-endpoint-services6", "firewall-ips6")
    } else {
        ("service-ips4", "no-endpoint-services4", "firewall-ips4")
    }
}

fn ipx(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
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
    let v6 = listen.addr.is_ipv6();
    let ip = ipx(v6);
    let base = service_base(route);
    let mut out = Vec::new();
    let mut endpoint_chains = Vec::with_capacity(route.endpoints.len());
    let mut affinity_rules = Vec::new();
    for ep in &route.endpoints {
        let ep_base = format!("{base}__{}", endpoint_base(ep));
        let mut rules = vec![format!("{ip} saddr {} jump mark-for-masquerade", ep.ip())];
        let set = route.affinity.map(|timeout| {
            let timeout = Duration::from_secs(timeout.as_secs().max(1));
            let set = name("aff", fnv(&[&ep_base, &timeout.as_secs().to_string()]), &ep_base);
            out.push(Object { id: Id::Set(set.clone()), body: Body::Set { v6, timeout } });
            rules.push(format!("update @{set} {{ {ip} saddr }}"));
            set
        });
        rules.push(format!("meta l4proto {} dnat {ip} to {}", proto(listen.protocol), dnat_target(ep)));
        let ep_chain = name("ep", fnv(&rules.iter().map(String::as_str).collect::<Vec<_>>()), &ep_base);
        if let Some(set) = set {
            affinity_rules.push(format!("{ip} saddr @{set} goto {ep_chain}"));
        }
        out.push(chain(1, ep_chain.clone(), rules));
        endpoint_chains.push(ep_chain);
    }

    let mut rules = Vec::new();
    if route.class == Class::External {
        // kube-proxy: external traffic is masqueraded, as it may cross nodes; with the Local
        // policy only what the node itself sends (its source would be a local address).
        rules.push(if external_local {
            "fib saddr type local jump mark-for-masquerade".to_string()
        } else {
            "jump mark-for-masquerade".to_string()
        });
    }
    rules.extend(affinity_rules);
    // Uniform choice as iptables' `statistic` chain: endpoint i with probability 1/(n-i). No
    // anonymous vmap: the kernel names each anonymous set by scanning the table's sets, which
    // made a first sync of 10,000 Services take 17 s.
    let n = endpoint_chains.len();
    for (i, c) in endpoint_chains.iter().enumerate() {
        rules.push(if i + 1 == n { format!("goto {c}") } else { format!("numgen random mod {} == 0 goto {c}", n - i) });
    }
    // A ClusterIP with one endpoint and nothing else to do needs no chain of its own: nft reads
    // every chain of the table on each transaction, so fewer chains make every sync cheaper.
    let dispatch = match (&endpoint_chains[..], route.class, route.affinity) {
        ([only], Class::Internal, None) => only.clone(),
        _ => {
            let prefix = if route.class == Class::External { "ext" } else { "svc" };
            let dispatch = name(prefix, fnv(&rules.iter().map(String::as_str).collect::<Vec<_>>()), &base);
            out.push(chain(2, dispatch.clone(), rules));
            dispatch
        }
    };

    let (service_ips, _, firewall_ips) = maps(v6);
    if !route.sources.is_empty() {
        let ranges: Vec<String> = route.sources.iter().map(|r| format!("{}/{}", r.addr, r.prefix)).collect();
        let rule = format!("{ip} saddr != {{ {} }} drop", ranges.join(", "));
        let fw = name("fw", fnv(&[&rule]), &base);
        out.push(chain(1, fw.clone(), vec![rule]));
        out.push(Object {
            id: Id::Element { map: firewall_ips, key: key(listen) },
            body: Body::Element { verdict: format!("goto {fw}") },
        });
    }
    out.push(Object {
        id: Id::Element { map: service_ips, key: key(listen) },
        body: Body::Element { verdict: format!("goto {dispatch}") },
    });
    out
}

/// The object that refuses new connections to `listen` (its Service has no usable endpoints):
/// a TCP reset, else ICMP port unreachable (`reject-chain`).
pub fn reject(listen: &Listen) -> Vec<Object> {
    let (_, no_endpoints, _) = maps(listen.addr.is_ipv6());
    vec![Object {
        id: Id::Element { map: no_endpoints, key: key(listen) },
        body: Body::Element { verdict: "goto reject-chain".into() },
    }]
}

/// The fixed part of the table: hooks, maps and helper chains (upstream's `setupNFTables`).
/// Filter chains run before DNAT (priority -110) so they see the Service address.
pub fn base() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table {TABLE} {{ comment \"kplane service proxy\"; }}");
    for v6 in [false, true] {
        let addr = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        let (a, b, c) = maps(v6);
        for map in [a, b, c] {
            let _ = writeln!(s, "add map {TABLE} {map} {{ type {addr} . inet_proto . inet_service : verdict; }}");
        }
    }
    let helpers: [(&str, Vec<String>); 6] = [
        ("services", dispatch_by_map(0)),
        ("endpoints-check", dispatch_by_map(1)),
        ("firewall-check", dispatch_by_map(2)),
        ("reject-chain", vec!["meta l4proto tcp reject with tcp reset".into(), "reject".into()]),
        ("mark-for-masquerade", vec![format!("meta mark set meta mark or {MASQ_MARK}")]),
        (
            "masquerading",
            vec![
                format!("meta mark & {MASQ_MARK} == 0 return"),
                format!("meta mark set meta mark xor {MASQ_MARK}"),
                "masquerade fully-random".into(),
            ],
        ),
    ];
    for (chain, rules) in &helpers {
        let _ = writeln!(s, "add chain {TABLE} {chain}");
        for rule in rules {
            let _ = writeln!(s, "add rule {TABLE} {chain} {rule}");
        }
    }
    let hooks: [(&str, &str, &str, i32, &[&str]); 7] = [
        ("filter-prerouting", "filter", "prerouting", -110, &["ct state new jump firewall-check"]),
        ("filter-input", "filter", "input", -110, &["ct state new jump endpoints-check"]),
        ("filter-forward", "filter", "forward", -110, &["ct state new jump endpoints-check"]),
        (
            "filter-output",
            "filter",
            "output",
            -110,
            &["ct state new jump endpoints-check", "ct state new jump firewall-check"],
        ),
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

/// `ip daddr . meta l4proto . th dport vmap @<map>` for both families; `which` picks the map.
fn dispatch_by_map(which: usize) -> Vec<String> {
    [false, true]
        .into_iter()
        .map(|v6| {
            let (a, b, c) = maps(v6);
            let map = [a, b, c][which];
            format!("{} daddr . meta l4proto . th dport vmap @{map}", ipx(v6))
        })
        .collect()
}

/// The lines that create `object`.
pub fn add(out: &mut String, object: &Object) {
    match (&object.id, &object.body) {
        (Id::Set(name), Body::Set { v6, timeout }) => {
            let addr = if *v6 { "ipv6_addr" } else { "ipv4_addr" };
            let secs = timeout.as_secs();
            let _ = writeln!(out, "add set {TABLE} {name} {{ type {addr}; flags dynamic,timeout; timeout {secs}s; }}");
        }
        (Id::Chain(_, name), Body::Chain { rules }) => {
            let _ = writeln!(out, "add chain {TABLE} {name}");
            for rule in rules {
                let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
            }
        }
        (Id::Element { map, key }, Body::Element { verdict }) => {
            let _ = writeln!(out, "add element {TABLE} {map} {{ {key} : {verdict} }}");
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
