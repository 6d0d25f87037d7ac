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
    ProxyConfig { node_name: NODE.into(), node_ips: NODE_IPS.to_vec(), ..ProxyConfig::default() }
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

    // Endpoints arrive: the rejects go, DNAT chains and dispatch elements come; nothing else.
    let eps = [("10.1.0.1", Some(NODE), true), ("10.1.0.2", Some("node-b"), true)];
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &eps)));
    let (script, cleanup) = pass(&mut nft, &mut inc);
    assert!(!script.contains("table"), "a partial sync touches no table: {script}");
    assert_eq!(lines(&script, "delete element inet kplane no-endpoint-services4"), 2, "{script}");
    assert_eq!(lines(&script, "meta l4proto tcp dnat ip to 10.1.0.1:8080"), 1, "one endpoint chain each:\n{script}");
    assert_eq!(lines(&script, "numgen random mod 2 == 0 goto ep-"), 2, "a ClusterIP and a NodePort chain:\n{script}");
    assert!(script.contains("add rule inet kplane ext-") && script.contains(" jump mark-for-masquerade\n"));
    let element = script.lines().find(|l| l.contains("service-ips4 { 10.96.0.5 . tcp . 80 : goto svc-"));
    assert!(element.is_some(), "{script}");
    assert!(script.contains("service-ips4 { 127.0.0.1 . tcp . 30080 : goto ext-"), "{script}");
    assert!(cleanup.is_empty());

    // One endpoint goes: elements repointed (the ClusterIP straight at the endpoint chain left, the
    // NodePort at a new chain, as it masquerades first), old chains deleted afterwards.
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &eps[..1])));
    let (script, cleanup) = pass(&mut nft, &mut inc);
    assert_eq!(lines(&script, "delete element"), 2, "{script}");
    assert_eq!(lines(&script, "add element"), 2, "{script}");
    assert!(script.contains("service-ips4 { 10.96.0.5 . tcp . 80 : goto ep-"), "{script}");
    assert_eq!(lines(&script, "add chain"), 1, "only the NodePort's chain is new:\n{script}");
    assert_eq!(lines(&cleanup, "delete chain"), 3, "two dispatch chains and 10.1.0.2's:\n{cleanup}");
    assert!(cleanup.contains("__10.1.0.2/8080"), "{cleanup}");

    // externalTrafficPolicy Local: only the local endpoint, and only the node's own traffic masqueraded.
    let mut s = web();
    spec(&mut s).external_traffic_policy = Some("Local".into());
    inc.apply_service(Arc::new(s));
    inc.apply_slice(Arc::new(slice("web", "http", "TCP", 8080, &eps)));
    let (script, _) = pass(&mut nft, &mut inc);
    assert!(script.contains("fib saddr type local jump mark-for-masquerade"), "{script}");
    let ext: Vec<&str> = script.lines().filter(|l| l.contains("add rule inet kplane ext-")).collect();
    assert!(ext.iter().any(|l| l.contains(" goto ep-")) && !ext.iter().any(|l| l.contains("numgen")), "{ext:?}");

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
