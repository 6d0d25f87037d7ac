//! The nftables mode without a kernel: the listeners a Service claims, the rules a route
//! becomes, that a change produces a small transaction, and that any sequence of incremental
//! passes leaves the same table as a rebuild of the final state.

use super::*;
use crate::desired::tests::{NODE, NODE_IPS, service, slice, spec, sport};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServiceStatus, SessionAffinityConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn config() -> ProxyConfig {
    let service_cidrs =
        ["10.96.0.0/16", "fd00:96::/112"].iter().filter_map(|c| desired::SourceRange::parse(c)).collect();
    ProxyConfig { node_name: NODE.into(), node_ips: NODE_IPS.to_vec(), service_cidrs, ..ProxyConfig::default() }
}

/// One sync pass as if every transaction succeeded: (main script, cleanup script).
fn pass(nft: &mut Nftables, inc: &mut Incremental) -> (String, String) {
    let flushed = inc.flush();
    nft.update(&flushed, inc);
    let plan = nft.model.plan();
    let main = plan.script.clone();
    nft.model.applied(plan);
    let cleanup = nft.model.cleanup();
    let cleaned = cleanup.script.clone();
    nft.model.cleaned(cleanup);
    (main, cleaned)
}

fn web() -> Service {
    let mut s = service("web", "10.96.0.5", vec![sport("http", 80, "TCP", Some(30080))]);
    spec(&mut s).type_ = Some("NodePort".into());
    s
}

fn lines(script: &str, needle: &str) -> usize {
    script.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_service_claims_all_its_addresses_without_endpoints() {
    let mut s = web();
    spec(&mut s).type_ = Some("LoadBalancer".into());
    spec(&mut s).external_ips = Some(vec!["10.50.0.1".into(), "fd00::1".into()]);
    s.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress { ip: Some("10.240.0.1".into()), ..Default::default() }]),
        }),
        ..Default::default()
    });
    let node = Node { name: NODE, zone: None, ips: NODE_IPS };
    let got: Vec<String> = desired::service_listens(&s, node).iter().map(|l| l.to_string()).collect();
    // The IPv6 externalIP and node address are another family than the ClusterIP: not claimed.
    assert_eq!(got, ["10.50.0.1:80/TCP", "10.96.0.5:80/TCP", "10.240.0.1:80/TCP", "127.0.0.1:30080/TCP"]);
}

#[test]
fn routes_become_dnat_chains_and_a_service_without_endpoints_rejects() {
    let mut nft = Nftables::new(&config());
    nft.model.same_transaction = false;
    let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
    inc.apply_service(Arc::new(web()));
    let (script, _) = pass(&mut nft, &mut inc);
    assert_eq!(lines(&script, "goto reject-chain"), 2, "ClusterIP and NodePort reject:\n{script}");
    assert!(
        script.contains("add element inet kplane no-endpoint-services4 { 10.96.0.5 . tcp . 80 : goto reject-chain }")
    );
    assert!(!script.contains("service-ips4"), "{script}");

    // Endpoints arrive: the rejects go; endpoint elements, one pick chain for both addresses
    // and their dispatch elements come; nothing else.
    let eps = [("10.1.0.1", Some(NODE), true), ("10.1.0.2", Some("node-b"), true)];
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &eps)));
    let (script, cleanup) = pass(&mut nft, &mut inc);
    assert!(!script.contains("table"), "a partial sync touches no table: {script}");
    assert_eq!(lines(&script, "delete element inet kplane no-endpoint-services4"), 2, "{script}");
    assert_eq!(lines(&script, "add chain"), 1, "{script}");
    assert!(script.contains(
        "add rule inet kplane pick4-tcp-2 dnat ip to ip daddr . tcp dport . numgen random mod 2 map @endpoints4-tcp\n"
    ));
    for line in [
        "endpoints4-tcp { 10.96.0.5 . 80 . 0 : 10.1.0.1 . 8080 }",
        "endpoints4-tcp { 10.96.0.5 . 80 . 1 : 10.1.0.2 . 8080 }",
        "endpoints4-tcp { 127.0.0.1 . 30080 . 1 : 10.1.0.2 . 8080 }",
        "service-ips4 { 10.96.0.5 . tcp . 80 : goto pick4-tcp-2 }",
        "service-ips4 { 127.0.0.1 . tcp . 30080 : goto pick4-tcp-2 }",
        "external4 { 127.0.0.1 . tcp . 30080 }",
        "hairpin4 { 10.1.0.1 . 10.1.0.1 }",
    ] {
        assert_eq!(lines(&script, &format!("add element inet kplane {line}")), 1, "{line}:\n{script}");
    }
    assert_eq!(lines(&script, "external"), 1, "the ClusterIP is not masqueraded:\n{script}");
    assert_eq!(lines(&script, "hairpin4"), 2, "one hairpin element per endpoint:\n{script}");
    assert!(cleanup.is_empty());

    // One endpoint goes: elements only, and a chain for the new endpoint count; the old one is
    // deleted afterwards.
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &eps[..1])));
    let (script, cleanup) = pass(&mut nft, &mut inc);
    assert_eq!(lines(&script, "delete element inet kplane endpoints4-tcp {"), 2, "{script}");
    assert_eq!(lines(&script, "add element inet kplane endpoints4-tcp {"), 0, "slot 0 stays:\n{script}");
    assert!(script.contains("delete element inet kplane hairpin4 { 10.1.0.2 . 10.1.0.2 }"), "{script}");
    assert!(script.contains("service-ips4 { 10.96.0.5 . tcp . 80 : goto pick4-tcp-1 }"), "{script}");
    assert_eq!(lines(&script, "add chain inet kplane pick4-tcp-1"), 1, "{script}");
    assert_eq!(
        cleanup.trim(),
        "flush chain inet kplane pick4-tcp-2\ndelete chain inet kplane pick4-tcp-2",
        "{cleanup}"
    );

    // externalTrafficPolicy Local: only the local endpoint, and only the node's own traffic masqueraded.
    let mut s = web();
    spec(&mut s).external_traffic_policy = Some("Local".into());
    inc.apply_service(Arc::new(s));
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &eps)));
    let (script, _) = pass(&mut nft, &mut inc);
    assert!(script.contains("delete element inet kplane external4 { 127.0.0.1 . tcp . 30080 }"), "{script}");
    assert!(script.contains("add element inet kplane external-local4 { 127.0.0.1 . tcp . 30080 }"), "{script}");
    assert!(script.contains("service-ips4 { 10.96.0.5 . tcp . 80 : goto pick4-tcp-2 }"), "{script}");
    assert!(!script.contains("service-ips4 { 127.0.0.1"), "the NodePort keeps pick4-tcp-1:\n{script}");

    // The Service goes: everything it held goes.
    inc.delete_service(&("ns".into(), "web".into()));
    pass(&mut nft, &mut inc);
    assert!(nft.model.installed().is_empty(), "{:?}", nft.model.installed());
}

#[test]
fn client_ip_affinity_checks_and_updates_a_set_per_endpoint() {
    let mut nft = Nftables::new(&config());
    let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
    let mut s = service("web", "fd00:96::5", vec![sport("http", 80, "UDP", None)]);
    spec(&mut s).session_affinity = Some("ClientIP".into());
    spec(&mut s).session_affinity_config =
        Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(60) }) });
    inc.apply_service(Arc::new(s));
    inc.apply_slice(Arc::new(slice("web", "http", "UDP", 53, &[("fd00::1", None, true), ("fd00::2", None, true)])));
    let (script, _) = pass(&mut nft, &mut inc);
    assert_eq!(lines(&script, "{ type ipv6_addr; flags dynamic,timeout; timeout 60s; }"), 2, "{script}");
    assert_eq!(lines(&script, "update @aff-"), 2, "{script}");
    assert_eq!(lines(&script, " ip6 saddr @aff-"), 2, "{script}");
    assert!(script.contains("meta l4proto udp dnat ip6 to [fd00::1]:53"), "{script}");
    assert!(script.contains("__fd00..1/53"), "colons are not allowed in names: {script}");
    assert!(script.contains("service-ips6 { fd00:96::5 . udp . 80 : goto svc-"), "{script}");
}

#[test]
fn new_connections_into_a_service_cidr_that_no_rule_dnated_are_dropped() {
    let cidrs: Vec<_> =
        ["10.96.3.4/16", "fd00:96::/112"].iter().filter_map(|c| desired::SourceRange::parse(c)).collect();
    let base = render::base(&cidrs);
    let check = "add rule inet kplane cluster-ips-check";
    assert!(base.contains(&format!("{check} ip daddr 10.96.0.0/16 fib daddr type != local drop\n")), "{base}");
    assert!(base.contains(&format!("{check} ip6 daddr fd00:96::/112 fib daddr type != local drop\n")), "{base}");
    // After DNAT: output at priority 0 (filter), and forward (after prerouting's DNAT).
    assert!(base.contains("filter-output-post-dnat { type filter hook output priority 0; policy accept; }"));
    assert!(base.contains("add rule inet kplane filter-output-post-dnat ct state new jump cluster-ips-check\n"));
    assert!(base.contains("add rule inet kplane filter-forward ct state new jump cluster-ips-check\n"));
    // Without CIDRs the chain only refuses unserved ports of ClusterIPs.
    let bare = render::base(&[]);
    assert_eq!(lines(&bare, check), 2, "{bare}");
    assert!(!bare.lines().any(|l| l.starts_with(check) && l.ends_with(" drop")), "{bare}");
    assert!(Nftables::new(&config()).model.full().contains(&format!("{check} ip daddr 10.96.0.0/16 ")));
}

#[test]
fn known_cluster_ips_refuse_unserved_ports_before_the_service_cidr_drop() {
    let base = Nftables::new(&config()).model.full();
    let check = "add rule inet kplane cluster-ips-check";
    let rules: Vec<&str> = base.lines().filter(|l| l.starts_with(check)).collect();
    assert_eq!(
        rules,
        [
            format!("{check} ip daddr @cluster-ips4 fib daddr type != local goto reject-chain"),
            format!("{check} ip6 daddr @cluster-ips6 fib daddr type != local goto reject-chain"),
            format!("{check} ip daddr 10.96.0.0/16 fib daddr type != local drop"),
            format!("{check} ip6 daddr fd00:96::/112 fib daddr type != local drop"),
        ],
        "refusals first (a ClusterIP is in a Service CIDR too):\n{base}"
    );
    assert!(base.contains("add set inet kplane cluster-ips4 { type ipv4_addr; }\n"), "{base}");
    assert!(base.contains("add set inet kplane cluster-ips6 { type ipv6_addr; }\n"), "{base}");

    let mut nft = Nftables::new(&config());
    let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
    // Two ports, no endpoints: one element for the address. Dual-stack: one per family.
    // Headless, or left to another proxy: none.
    let mut web = web();
    spec(&mut web).ports.as_mut().expect("ports").push(sport("dns", 53, "UDP", None));
    inc.apply_service(Arc::new(web));
    let mut dual = service("dual", "10.96.0.6", vec![sport("http", 80, "TCP", None)]);
    spec(&mut dual).cluster_ips = Some(vec!["10.96.0.6".into(), "fd00:96::6".into()]);
    inc.apply_service(Arc::new(dual));
    inc.apply_service(Arc::new(service("headless", "None", vec![sport("http", 80, "TCP", None)])));
    let mut other = service("other", "10.96.0.8", vec![sport("http", 80, "TCP", None)]);
    other.metadata.labels = Some([("service.kubernetes.io/service-proxy-name".into(), "other".into())].into());
    inc.apply_service(Arc::new(other));
    let (script, _) = pass(&mut nft, &mut inc);
    let elements: Vec<&str> = script.lines().filter(|l| l.contains(" cluster-ips")).collect();
    assert_eq!(
        elements,
        [
            "add element inet kplane cluster-ips4 { 10.96.0.5 }",
            "add element inet kplane cluster-ips4 { 10.96.0.6 }",
            "add element inet kplane cluster-ips6 { fd00:96::6 }",
        ],
        "{script}"
    );

    // Endpoints come and go: the address stays, untouched.
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &[("10.1.0.1", Some(NODE), true)])));
    let (script, _) = pass(&mut nft, &mut inc);
    assert!(script.contains("service-ips4 { 10.96.0.5 . tcp . 80 "), "{script}");
    assert_eq!(lines(&script, "cluster-ips"), 0, "{script}");

    // The Service goes: its address goes with its other elements, in the same transaction.
    inc.delete_service(&("ns".into(), "web".into()));
    let (script, _) = pass(&mut nft, &mut inc);
    assert_eq!(lines(&script, "delete element inet kplane cluster-ips4 { 10.96.0.5 }"), 1, "{script}");
    assert_eq!(lines(&script, "cluster-ips"), 1, "{script}");
    assert!(script.contains("delete element inet kplane service-ips4 { 10.96.0.5 . tcp . 80 }"), "{script}");
}

#[test]
fn an_endpoint_change_is_element_operations_only_and_chains_do_not_grow_with_services() {
    let mut nft = Nftables::new(&config());
    let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
    for i in 0..300 {
        let name = format!("s{i}");
        inc.apply_service(Arc::new(service(
            &name,
            &format!("10.96.{}.{}", i / 250, 1 + i % 250),
            vec![sport("http", 80, "TCP", None)],
        )));
        let n = 1 + i % 3;
        let eps: Vec<String> = (0..n).map(|j| format!("10.{}.{}.{}", 1 + j, i / 250, 1 + i % 250)).collect();
        let eps: Vec<(&str, Option<&str>, bool)> = eps.iter().map(|ip| (ip.as_str(), Some(NODE), true)).collect();
        inc.apply_slice(Arc::new(slice(&name, "http", "TCP", 8080, &eps)));
    }
    pass(&mut nft, &mut inc);
    // What nft reads before each transaction: the chains, not the elements. Three pick chains
    // (1, 2 and 3 endpoints) on top of the fixed ones, whatever the number of Services.
    let full = nft.model.full();
    assert_eq!(lines(&full, "add chain"), lines(&render::base(&[]), "add chain") + 3, "{}", &full[..2000]);
    assert_eq!(
        lines(&full, "add set") + lines(&full, "add map"),
        lines(&render::base(&[]), "add set") + lines(&render::base(&[]), "add map")
    );

    // s0's endpoint moves to another pod: the transaction is four element operations.
    inc.apply_slice(Arc::new(slice("s0", "http", "TCP", 8080, &[("10.1.9.9", Some(NODE), true)])));
    let (script, cleanup) = pass(&mut nft, &mut inc);
    assert!(script.lines().all(|l| l.starts_with("add element ") || l.starts_with("delete element ")), "{script}");
    assert_eq!(script.lines().count(), 4, "{script}");
    assert!(cleanup.is_empty(), "{cleanup}");
}

#[test]
fn source_ranges_become_disjoint_allow_elements_of_their_family() {
    let r = |s: &str| desired::SourceRange::parse(s).expect("range");
    let sources =
        [r("10.0.0.0/8"), r("10.200.0.5/24"), r("10.200.0.1/32"), r("fd00::/64"), r("192.0.2.7/24"), r("10.0.0.0/8")];
    let got = render::source_ranges(&sources, false);
    let want: Vec<(IpAddr, u8)> = vec![("10.0.0.0".parse().unwrap(), 8), ("192.0.2.0".parse().unwrap(), 24)];
    assert_eq!(got, want, "contained and repeated ranges go, host bits are cleared, IPv6 is left out");
    assert_eq!(render::source_ranges(&sources, true), vec![("fd00::".parse().unwrap(), 64)]);
}

/// A Service from a small space, so that shared addresses and endpoint moves are frequent.
fn random_service(rng: &mut StdRng, name: &str) -> Service {
    let node_port = rng.random_bool(0.4).then(|| 30000 + rng.random_range(0..3));
    let mut s =
        service(name, &format!("10.96.0.{}", rng.random_range(1..5)), vec![sport("http", 80, "TCP", node_port)]);
    if rng.random_bool(0.3) {
        spec(&mut s).external_ips = Some(vec![format!("10.50.0.{}", rng.random_range(1..3))]);
    }
    if rng.random_bool(0.3) {
        spec(&mut s).external_traffic_policy = Some("Local".into());
    }
    if rng.random_bool(0.3) {
        spec(&mut s).session_affinity = Some("ClientIP".into());
        let timeout = [10, 20][rng.random_range(0..2)];
        spec(&mut s).session_affinity_config =
            Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(timeout) }) });
    }
    s
}

#[test]
fn incremental_passes_end_where_a_rebuild_starts() {
    for seed in 0..30 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nft = Nftables::new(&config());
        nft.model.same_transaction = seed % 2 == 0;
        let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
        let mut services = std::collections::BTreeMap::new();
        let mut slices = std::collections::BTreeMap::new();
        for _ in 0..120 {
            let name = format!("s{}", rng.random_range(0..6));
            match rng.random_range(0..5) {
                0 | 1 => {
                    let s = random_service(&mut rng, &name);
                    inc.apply_service(Arc::new(s.clone()));
                    services.insert(name, s);
                }
                2 => {
                    inc.delete_service(&("ns".into(), name.clone()));
                    services.remove(&name);
                }
                3 => {
                    let eps: Vec<(String, Option<&str>, bool)> = (0..rng.random_range(0..3))
                        .map(|_| {
                            let ip = format!("10.1.0.{}", rng.random_range(1..4));
                            (ip, [Some(NODE), Some("node-b")][rng.random_range(0..2)], rng.random_bool(0.8))
                        })
                        .collect();
                    let eps: Vec<(&str, Option<&str>, bool)> =
                        eps.iter().map(|(i, n, r)| (i.as_str(), *n, *r)).collect();
                    let s = slice(&name, "http", "TCP", 8080, &eps);
                    inc.apply_slice(Arc::new(s.clone()));
                    slices.insert(name, s);
                }
                _ => {
                    let key = ("ns".to_string(), format!("{name}-http-IPv4"));
                    inc.delete_slice(&key);
                    slices.remove(&name);
                }
            }
            if rng.random_bool(0.5) {
                pass(&mut nft, &mut inc);
            }
        }
        pass(&mut nft, &mut inc);

        let mut fresh = Nftables::new(&config());
        let mut fresh_inc = Incremental::new(NODE, NODE_IPS.to_vec());
        for s in services.values() {
            fresh_inc.apply_service(Arc::new(s.clone()));
        }
        for s in slices.values() {
            fresh_inc.apply_slice(Arc::new(s.clone()));
        }
        pass(&mut fresh, &mut fresh_inc);
        assert_eq!(nft.model.installed(), &nft.model.wanted(), "seed {seed}: the kernel holds what is wanted");
        assert_eq!(nft.model.installed(), fresh.model.installed(), "seed {seed}");
        assert!(!fresh.model.full().contains("goto  "), "seed {seed}");
    }
}

/// Runs `f` on a thread in a network namespace of its own (gone with the thread), or returns
/// `None` when this process cannot make one (not root).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which ends after `f`.
        (unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0).then(f)
    })
    .join()
    .expect("the netns thread")
}

/// The scripts, in a kernel: every pass of random changes (IPv4 and IPv6, affinity, external
/// addresses, Local policies, source ranges that overlap) applies through the long-lived
/// libnftables context, a bad script fails without breaking it, and a rebuild applies.
#[test]
fn the_kernel_takes_every_transaction_through_one_library_context() {
    let ran = in_new_netns(|| {
        let mut nft = Nftables::new(&config());
        assert!(nft.nft.uses_library(), "libnftables loads (the nft program links it)");
        nft.nft.run_blocking(&nft.model.full()).expect("the empty table");
        let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
        let mut lb = service("lb", "fd00:96::7", vec![sport("http", 80, "UDP", Some(30070))]);
        spec(&mut lb).type_ = Some("LoadBalancer".into());
        spec(&mut lb).external_ips = Some(vec!["fd00:50::1".into()]);
        spec(&mut lb).load_balancer_source_ranges =
            Some(vec!["fd00:50::/64".into(), "fd00:50::1/128".into(), "10.0.0.0/8".into()]);
        inc.apply_service(Arc::new(lb));
        inc.apply_slice(Arc::new(slice("lb", "http", "UDP", 53, &[("fd00::1", None, true), ("fd00::2", None, true)])));
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..40 {
            let name = format!("s{}", rng.random_range(0..5));
            if round % 2 == 0 {
                let mut s = random_service(&mut rng, &name);
                if rng.random_bool(0.3) {
                    spec(&mut s).type_ = Some("LoadBalancer".into());
                    spec(&mut s).load_balancer_source_ranges =
                        Some(vec!["10.0.0.0/8".into(), "10.200.0.0/24".into(), "127.0.0.1/32".into()]);
                }
                inc.apply_service(Arc::new(s));
            } else {
                let n = rng.random_range(0..4);
                let eps: Vec<String> = (0..n).map(|_| format!("10.1.0.{}", rng.random_range(1..6))).collect();
                let eps: Vec<(&str, Option<&str>, bool)> =
                    eps.iter().map(|ip| (ip.as_str(), Some(NODE), true)).collect();
                inc.apply_slice(Arc::new(slice(&name, "http", "TCP", 8080, &eps)));
            }
            let flushed = inc.flush();
            nft.update(&flushed, &inc);
            let plan = nft.model.plan();
            nft.nft.run_blocking(&plan.script).unwrap_or_else(|e| panic!("round {round}: {e}\n{}", plan.script));
            nft.model.applied(plan);
            let cleanup = nft.model.cleanup();
            nft.nft.run_blocking(&cleanup.script).unwrap_or_else(|e| panic!("round {round}: {e}\n{}", cleanup.script));
            nft.model.cleaned(cleanup);
        }
        // A failed transaction changes nothing (the element of its first line is not there after),
        // and the context goes on. (libnftables 1.0.6 quotes the wrong line of a buffer in its
        // message, so only the error itself is checked.)
        let element = "element inet kplane endpoints4-tcp { 10.0.0.1 . 80 . 0 : 10.1.0.1 . 80 }";
        let err = nft.nft.run_blocking(&format!("add {element}\nadd element inet kplane nothing {{ 1 }}\n"));
        let err = err.expect_err("a missing set fails the transaction").to_string();
        assert!(err.contains("No such file or directory"), "nft's message: {err}");
        nft.nft.run_blocking(&format!("create {element}\ndelete {element}\n")).expect("nothing was applied");
        nft.nft.run_blocking(&nft.model.full()).expect("a rebuild after a failure");
        // The async path lends the context to a blocking thread and gets it back.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(nft.nft.run(&nft.model.full())).expect("a rebuild through the runtime");
        assert!(nft.nft.uses_library());
        nft.nft.run_blocking(&render::remove_table()).expect("the table goes");
    });
    if ran.is_none() {
        eprintln!("skipping: no network namespace of its own (not root)");
    }
}
