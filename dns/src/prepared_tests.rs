//! The zone kept current one event at a time equals the zone built from scratch: random sequences
//! of applies, deletes, missed events and relists (through `watch::handle`, as the watchers feed
//! it), checked after every step on the indexes and on every prepared answer.

use super::*;
use crate::watch::{Indexed, handle};
use crate::zone::ZoneConfig;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: &[&str] = &["ns0", "ns1", "ns2"];
const SERVICES: &[&str] = &["svc0", "svc1", "svc2", "svc3", "svc4"];
const SLICES: &[&str] = &["s0", "s1", "s2", "s3", "s4", "s5"];
const PODS: &[&str] = &["p0", "p1", "p2", "p3"];
const CLUSTER_IPS: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
const ENDPOINT_IPS: &[&str] = &["172.0.0.1", "172.0.0.2", "172.0.0.3", "172.0.0.4", "10.0.0.1"];

pub(crate) fn config() -> ZoneConfig {
    ZoneConfig { domain: "cluster.local".into(), ttl: 5, local_addrs: vec!["127.0.0.1:53".parse().expect("addr")] }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture object")
}

fn random_ports(rng: &mut Rng) -> Value {
    let all = [
        json!({"name": "http", "protocol": "TCP", "port": 80}),
        json!({"name": "dns", "protocol": "UDP", "port": 53}),
        json!({"port": 8080}),
    ];
    Value::Array(all.into_iter().filter(|_| rng.chance(60)).collect())
}

fn random_service(rng: &mut Rng, ns: &str, name: &str) -> Service {
    let ip = rng.pick(CLUSTER_IPS);
    let spec = match rng.below(5) {
        0 | 1 => json!({"clusterIP": ip, "clusterIPs": [ip], "ports": random_ports(rng)}),
        2 => json!({"clusterIP": ip, "clusterIPs": [ip, "fd00::1"], "ports": random_ports(rng)}),
        3 => json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": random_ports(rng)}),
        _ => {
            let target = rng.pick(&["ext.example.test", "svc0.ns0.svc.cluster.local", "10.1.1.1"]);
            json!({"type": "ExternalName", "externalName": target})
        }
    };
    obj(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
}

fn random_slice(rng: &mut Rng, ns: &str, name: &str) -> EndpointSlice {
    let endpoints: Vec<Value> = (0..rng.below(4))
        .map(|_| {
            let mut ep = json!({"addresses": [rng.pick(ENDPOINT_IPS)]});
            if rng.chance(40) {
                ep["hostname"] = json!(rng.pick(&["web-0", "web-1"]));
            }
            match rng.below(3) {
                0 => ep["conditions"] = json!({"ready": true}),
                1 => ep["conditions"] = json!({"ready": false}),
                _ => {}
            }
            ep
        })
        .collect();
    let mut meta = json!({"name": name, "namespace": ns});
    if rng.chance(90) {
        meta["labels"] = json!({"kubernetes.io/service-name": rng.pick(SERVICES)});
    }
    let family = if rng.chance(90) { "IPv4" } else { "FQDN" };
    obj(json!({"metadata": meta, "addressType": family, "ports": random_ports(rng), "endpoints": endpoints}))
}

fn random_pod(rng: &mut Rng, ns: &str, name: &str) -> Pod {
    let mut meta = json!({"name": name, "namespace": ns});
    if rng.chance(20) {
        meta["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    }
    let ip = rng.pick(&["10.244.0.1", "10.244.0.2", "10.244.0.3"]);
    let status = if rng.chance(80) { json!({"podIP": ip, "podIPs": [{"ip": ip}]}) } else { json!({}) };
    obj(json!({"metadata": meta, "status": status}))
}

/// The objects that exist, and the watch state of each kind.
#[derive(Default)]
struct World {
    services: BTreeMap<Key, Service>,
    slices: BTreeMap<Key, EndpointSlice>,
    pods: BTreeMap<Key, Pod>,
    namespaces: BTreeMap<Key, Namespace>,
    relisting: [Option<HashSet<Key>>; 4],
    /// An event was not delivered (as when a watch breaks).
    missed: bool,
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

/// One change to one kind: a new version (delivered, or missed when `!tell`), or a deletion.
fn change<K: Indexed>(
    rng: &mut Rng,
    live: &LiveZone,
    objects: &mut BTreeMap<Key, K>,
    relisting: &mut Option<HashSet<Key>>,
    made: Option<(Key, K)>,
    tell: bool,
) {
    match made {
        Some((k, obj)) => {
            objects.insert(k, obj.clone());
            if tell {
                handle(live, Event::Apply(obj), relisting);
            }
        }
        None => {
            let keys: Vec<Key> = objects.keys().cloned().collect();
            if keys.is_empty() {
                return;
            }
            let k = &keys[rng.below(keys.len())];
            if let Some(obj) = objects.remove(k)
                && tell
            {
                handle(live, Event::Delete(obj), relisting);
            }
        }
    }
}

/// A relist of one kind: every object listed (in random order), then the end of the list.
fn relist<K: Indexed>(
    rng: &mut Rng,
    live: &LiveZone,
    objects: &BTreeMap<Key, K>,
    relisting: &mut Option<HashSet<Key>>,
) {
    handle::<K>(live, Event::Init, relisting);
    let mut listed: Vec<&K> = objects.values().collect();
    for i in (1..listed.len()).rev() {
        listed.swap(i, rng.below(i + 1));
    }
    for obj in listed {
        handle(live, Event::InitApply(obj.clone()), relisting);
    }
    handle::<K>(live, Event::InitDone, relisting);
}

fn step(rng: &mut Rng, live: &LiveZone, w: &mut World) {
    let tell = !rng.chance(5);
    w.missed |= !tell;
    let ns = rng.pick(NAMESPACES);
    let [rs, rsl, rp, rn] = &mut w.relisting;
    match rng.below(12) {
        0..=2 => {
            let name = rng.pick(SERVICES);
            let made = Some((key(ns, name), random_service(rng, ns, name)));
            change(rng, live, &mut w.services, rs, made, tell);
        }
        3 => change::<Service>(rng, live, &mut w.services, rs, None, tell),
        4..=5 => {
            let name = rng.pick(SLICES);
            let made = Some((key(ns, name), random_slice(rng, ns, name)));
            change(rng, live, &mut w.slices, rsl, made, tell);
        }
        6 => change::<EndpointSlice>(rng, live, &mut w.slices, rsl, None, tell),
        7 => {
            let name = rng.pick(PODS);
            let made = if rng.chance(70) { Some((key(ns, name), random_pod(rng, ns, name))) } else { None };
            change(rng, live, &mut w.pods, rp, made, tell);
        }
        8 => {
            let made = if rng.chance(75) { Some((key("", ns), obj(json!({"metadata": {"name": ns}})))) } else { None };
            change::<Namespace>(rng, live, &mut w.namespaces, rn, made, tell);
        }
        9 => relist(rng, live, &w.services, rs),
        10 => relist(rng, live, &w.slices, rsl),
        _ => match rng.below(2) {
            0 => relist(rng, live, &w.pods, rp),
            _ => relist(rng, live, &w.namespaces, rn),
        },
    }
}

#[test]
fn incremental_zone_equals_zone_built_from_scratch() {
    let mut prepared_seen = 0;
    for seed in 1..=20u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let live = LiveZone::new(Zone::new(&config(), ClusterData::default(), 1, true));
        let mut world = World::default();
        for i in 0..300 {
            step(&mut rng, &live, &mut world);
            // A missed event is made good by the next relist of every kind.
            if world.missed {
                relist(&mut rng, &live, &world.services, &mut world.relisting[0]);
                relist(&mut rng, &live, &world.slices, &mut world.relisting[1]);
                relist(&mut rng, &live, &world.pods, &mut world.relisting[2]);
                relist(&mut rng, &live, &world.namespaces, &mut world.relisting[3]);
                world.missed = false;
            }
            let data = ClusterData::build(
                world.services.values(),
                world.slices.values(),
                world.pods.values(),
                world.namespaces.values(),
            );
            let scratch = Zone::new(&config(), data.clone(), 1, true);
            let served = live.read();
            assert_eq!(served.zone.data(), &data, "seed {seed} step {i}: indexes");
            assert_eq!(served.prepared, Prepared::build(&scratch), "seed {seed} step {i}: prepared answers");
            prepared_seen += served.prepared.len();
        }
    }
    assert!(prepared_seen > 1000, "the random worlds prepare answers ({prepared_seen})");
}

#[test]
fn one_event_updates_one_service_whatever_the_cluster_size() {
    let namespace: Namespace = obj(json!({"metadata": {"name": "ns0"}}));
    let mut services = Vec::new();
    for i in 0..2000 {
        let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        let spec =
            json!({"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "protocol": "TCP", "port": 80}]});
        services.push(obj::<Service>(json!({"metadata": {"name": format!("s{i}"), "namespace": "ns0"}, "spec": spec})));
    }
    let data = ClusterData::build(&services, &[], &[], [&namespace]);
    let live = LiveZone::new(Zone::new(&config(), data, 1, true));
    let mut relisting = None;
    let name = Name::from_ascii("NEW.ns0.svc.cluster.local.").expect("name");
    assert!(live.read().prepared.get(&name, RecordType::A).is_none());
    let before = live.read().prepared.lookups();
    let new: Service = obj(json!({"metadata": {"name": "new", "namespace": "ns0"},
        "spec": {"clusterIP": "10.2.0.1", "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}}));
    handle(&live, Event::Apply(new), &mut relisting);
    // Answered right after its one event, having looked up only its own two names.
    let served = live.read();
    assert!(served.prepared.get(&name, RecordType::A).is_some());
    let srv = Name::from_ascii("_http._tcp.new.ns0.svc.cluster.local.").expect("name");
    assert!(served.prepared.get(&srv, RecordType::SRV).is_some());
    assert_eq!(served.prepared.lookups() - before, 6, "2 names x A, AAAA, SRV");
    assert_eq!(served.prepared.len(), 2 * 2001);
}
