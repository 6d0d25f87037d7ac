//! LoadBalancer IP address management: gives each Service of type LoadBalancer that is ours
//! (no `loadBalancerClass`, or `kplane.dev/lb`) an ingress IP per IP family from the pool, as
//! MetalLB's controller does (`controller/service.go`: requested IPs via `spec.loadBalancerIP` or
//! the `metallb.io/loadBalancerIPs` annotation, lowest free address otherwise, `IPAllocated` /
//! `AllocationFailed` events), and clears the status when a Service stops being ours, as the
//! cloud service controller does. The proxy then serves those IPs.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The class kplane answers to besides none at all.
pub const CLASS: &str = "kplane.dev/lb";
/// Annotations that request addresses (MetalLB's current and former spelling), comma-separated.
const REQUEST_ANNOTATIONS: [&str; 2] = ["metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"];

/// One range of addresses to hand out (`--lb-pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Pool {
    fn bits(&self) -> u32 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    fn base(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        to_u128(self.network) >> host_bits.min(127) << host_bits.min(127)
    }

    fn size(&self) -> u128 {
        1u128.checked_shl(self.bits() - u32::from(self.prefix)).unwrap_or(u128::MAX)
    }

    /// Whether `ip` is one this pool hands out: inside it, and not its network or IPv4
    /// broadcast address (MetalLB's `avoidBuggyIPs`, which also keeps `.0` off loopback).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.network.is_ipv4() {
            return false;
        }
        let offset = to_u128(ip).wrapping_sub(self.base());
        let last = self.size() - 1;
        offset <= last && (self.size() <= 2 || (offset != 0 && !(ip.is_ipv4() && offset == last)))
    }

    fn nth(&self, offset: u128) -> IpAddr {
        from_u128(self.base() + offset, self.network.is_ipv4())
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Which addresses are whose: pure bookkeeping, no IO.
#[derive(Debug, Default)]
struct Allocations {
    /// Service key (`namespace/name`) → its addresses.
    by_service: HashMap<String, Vec<IpAddr>>,
    owner: HashMap<IpAddr, String>,
}

impl Allocations {
    fn release(&mut self, key: &str) {
        for ip in self.by_service.remove(key).unwrap_or_default() {
            self.owner.remove(&ip);
        }
    }

    fn free_for(&self, ip: IpAddr, key: &str) -> bool {
        self.owner.get(&ip).is_none_or(|o| o == key)
    }

    fn assign(&mut self, key: &str, ips: Vec<IpAddr>) {
        self.release(key);
        for ip in &ips {
            self.owner.insert(*ip, key.to_string());
        }
        if !ips.is_empty() {
            self.by_service.insert(key.to_string(), ips);
        }
    }

    /// The lowest free address of `pool` (MetalLB hands out addresses in order).
    fn lowest_free(&self, pool: &Pool, key: &str) -> Option<IpAddr> {
        let end = pool.size().min(1 << 24); // a bound on the scan for huge IPv6 pools
        (0..end).map(|o| pool.nth(o)).find(|ip| pool.contains(*ip) && self.free_for(*ip, key))
    }
}

/// What a Service should have, given the pools and who holds what.
fn desired(pools: &[Pool], allocs: &Allocations, key: &str, svc: &Service) -> Result<Vec<IpAddr>, String> {
    let requested = requested_ips(svc)?;
    if !requested.is_empty() {
        for ip in &requested {
            if !pools.iter().any(|p| p.contains(*ip)) {
                return Err(format!("requested IP {ip} is not in any pool of this cluster"));
            }
            if !allocs.free_for(*ip, key) {
                let holder = allocs.owner.get(ip).map(String::as_str).unwrap_or_default();
                return Err(format!("requested IP {ip} is already allocated to {holder}"));
            }
        }
        return Ok(requested);
    }
    let held = allocs.by_service.get(key).cloned().unwrap_or_default();
    let families = svc.spec.as_ref().and_then(|s| s.ip_families.clone()).unwrap_or_else(|| vec!["IPv4".into()]);
    let mut out = Vec::new();
    for fam in &families {
        if let Some(ip) = held.iter().find(|ip| family(**ip) == fam && pools.iter().any(|p| p.contains(**ip))) {
            out.push(*ip);
            continue;
        }
        let Some(pool) = pools.iter().find(|p| family(p.network) == fam) else {
            continue; // no pool for this family: the Service gets the others
        };
        match allocs.lowest_free(pool, key) {
            Some(ip) => out.push(ip),
            None => return Err(format!("no available IPs in pool {}/{}", pool.network, pool.prefix)),
        }
    }
    if out.is_empty() {
        return Err(format!("no pool for the Service's IP families {families:?}"));
    }
    Ok(out)
}

/// `spec.loadBalancerIP`, or the addresses of the request annotation.
fn requested_ips(svc: &Service) -> Result<Vec<IpAddr>, String> {
    let annotation = REQUEST_ANNOTATIONS.iter().find_map(|a| svc.annotations().get(*a));
    let spec_ip = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_ref()).filter(|s| !s.is_empty());
    let text = match (annotation, spec_ip) {
        (Some(a), _) => a.as_str(),
        (None, Some(ip)) => ip.as_str(),
        (None, None) => return Ok(Vec::new()),
    };
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpAddr>().map_err(|_| format!("invalid requested IP {s:?}")))
        .collect()
}

/// Whether kplane allocates for this Service.
fn is_ours(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    svc.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_deref()).is_none_or(|c| c == CLASS)
}

fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
}

fn key_of(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// The LB IPAM controller.
pub struct LbIpam {
    pools: Vec<Pool>,
    allocs: Allocations,
    /// Services that could not get their addresses, retried whenever addresses are freed.
    waiting: BTreeMap<String, Service>,
    recorder: Recorder,
    client: kube::Client,
}

impl LbIpam {
    pub fn new(client: kube::Client, pools: Vec<Pool>) -> Self {
        let reporter = Reporter { controller: "kplane-lb-ipam".into(), instance: None };
        Self {
            pools,
            allocs: Allocations::default(),
            waiting: BTreeMap::new(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    /// Watches Services until the server goes away. After each (re)list, addresses already in
    /// Services' status are kept first (oldest Service wins a duplicate), then the rest allocated.
    pub async fn run(mut self) {
        let api = Api::<Service>::all(self.client.clone());
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut relist: BTreeMap<String, Service> = BTreeMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(svc)) => {
                    relist.insert(key_of(&svc), svc);
                }
                Ok(watcher::Event::InitDone) => self.resync(std::mem::take(&mut relist)).await,
                Ok(watcher::Event::Apply(svc)) => self.reconcile(&svc).await,
                Ok(watcher::Event::Delete(svc)) => {
                    self.waiting.remove(&key_of(&svc));
                    self.release(&key_of(&svc)).await;
                }
                Err(e) => tracing::debug!(error = %e, "lb-ipam watch"),
            }
        }
    }

    /// Frees a Service's addresses and gives waiting Services another chance at them.
    async fn release(&mut self, key: &str) {
        if self.allocs.by_service.contains_key(key) {
            self.allocs.release(key);
            for svc in std::mem::take(&mut self.waiting).into_values() {
                Box::pin(self.reconcile(&svc)).await;
            }
        }
    }

    async fn resync(&mut self, services: BTreeMap<String, Service>) {
        self.allocs = Allocations::default();
        self.waiting.clear();
        let mut ours: Vec<&Service> = services.values().filter(|s| is_ours(s)).collect();
        ours.sort_by_key(|s| s.metadata.creation_timestamp.clone());
        for svc in &ours {
            let key = key_of(svc);
            let kept: Vec<IpAddr> = ingress_ips(svc)
                .into_iter()
                .filter(|ip| self.pools.iter().any(|p| p.contains(*ip)) && self.allocs.free_for(*ip, &key))
                .collect();
            self.allocs.assign(&key, kept);
        }
        for svc in services.values() {
            self.reconcile(svc).await;
        }
    }

    async fn reconcile(&mut self, svc: &Service) {
        let key = key_of(svc);
        let current = ingress_ips(svc);
        if !is_ours(svc) {
            self.waiting.remove(&key);
            self.release(&key).await;
            // A Service that was ours (its ingress is from our pool) and no longer is: clear it.
            let class_ours =
                svc.spec.as_ref().and_then(|s| s.load_balancer_class.as_deref()).is_none_or(|c| c == CLASS);
            if class_ours && !current.is_empty() && current.iter().all(|ip| self.pools.iter().any(|p| p.contains(*ip)))
            {
                self.write_status(svc, &[]).await;
            }
            return;
        }
        match desired(&self.pools, &self.allocs, &key, svc) {
            Ok(ips) => {
                self.waiting.remove(&key);
                let freed =
                    self.allocs.by_service.get(&key).is_some_and(|held| held.iter().any(|ip| !ips.contains(ip)));
                self.allocs.assign(&key, ips.clone());
                if ips != current && self.write_status(svc, &ips).await {
                    let list = ips.iter().map(|ip| format!("\"{ip}\"")).collect::<Vec<_>>().join(",");
                    let note = format!("Assigned IP [{list}]");
                    self.event(svc, EventType::Normal, "IPAllocated", note).await;
                }
                if freed {
                    for svc in std::mem::take(&mut self.waiting).into_values() {
                        Box::pin(self.reconcile(&svc)).await;
                    }
                }
            }
            Err(why) => {
                self.release(&key).await;
                self.waiting.insert(key.clone(), svc.clone());
                if !current.is_empty() {
                    self.write_status(svc, &[]).await;
                }
                let note = format!("Failed to allocate IP for \"{key}\": {why}");
                self.event(svc, EventType::Warning, "AllocationFailed", note).await;
            }
        }
    }

    /// Sets `status.loadBalancer.ingress` (ipMode VIP); returns whether it was written.
    async fn write_status(&self, svc: &Service, ips: &[IpAddr]) -> bool {
        let api = Api::<Service>::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"})).collect();
        let lb = if ingress.is_empty() { json!({}) } else { json!({"ingress": ingress}) };
        // The UID precondition keeps a stale event from writing onto a re-created Service.
        let patch = json!({"metadata": {"uid": svc.metadata.uid}, "status": {"loadBalancer": lb}});
        match api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(service = %key_of(svc), error = %e, "lb-ipam: writing status");
                false
            }
        }
    }

    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.into(), note: Some(note), action: "Allocate".into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &svc.object_ref(&())).await {
            tracing::debug!(error = %e, "lb-ipam: event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        let (a, p) = s.split_once('/').expect("cidr");
        Pool { network: a.parse().expect("ip"), prefix: p.parse().expect("prefix") }
    }

    fn lb(name: &str, spec: serde_json::Value) -> Service {
        let mut v = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"type": "LoadBalancer"}});
        if let (Some(s), Some(extra)) = (v["spec"].as_object_mut(), spec.as_object()) {
            s.extend(extra.clone());
        }
        serde_json::from_value(v).expect("service")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn pools_skip_network_and_broadcast() {
        let p = pool("127.240.0.0/30");
        assert!(!p.contains(ip("127.240.0.0")) && !p.contains(ip("127.240.0.3")));
        assert!(p.contains(ip("127.240.0.1")) && p.contains(ip("127.240.0.2")));
        assert!(!p.contains(ip("127.240.0.4")) && !p.contains(ip("::1")));
        assert!(pool("127.240.0.9/32").contains(ip("127.240.0.9")));
    }

    #[test]
    fn lowest_free_then_requested_then_exhausted() {
        let pools = [pool("127.240.0.0/30")];
        let mut a = Allocations::default();
        let first = desired(&pools, &a, "default/a", &lb("a", json!({}))).expect("allocates");
        assert_eq!(first, vec![ip("127.240.0.1")]);
        a.assign("default/a", first.clone());
        // Stable: asking again gives the same address.
        assert_eq!(desired(&pools, &a, "default/a", &lb("a", json!({}))), Ok(first));
        // A taken request fails; a free one is honoured; a request outside the pool fails.
        let taken = lb("b", json!({"loadBalancerIP": "127.240.0.1"}));
        assert!(
            desired(&pools, &a, "default/b", &taken).expect_err("taken").contains("already allocated to default/a")
        );
        let mut annotated = lb("b", json!({}));
        annotated.metadata.annotations = Some([(REQUEST_ANNOTATIONS[0].to_string(), "127.240.0.2".to_string())].into());
        assert_eq!(desired(&pools, &a, "default/b", &annotated), Ok(vec![ip("127.240.0.2")]));
        let outside = lb("b", json!({"loadBalancerIP": "10.0.0.1"}));
        assert!(desired(&pools, &a, "default/b", &outside).expect_err("outside").contains("not in any pool"));
        a.assign("default/b", vec![ip("127.240.0.2")]);
        let e = desired(&pools, &a, "default/c", &lb("c", json!({}))).expect_err("exhausted");
        assert!(e.contains("no available IPs"), "{e}");
        a.release("default/a");
        assert_eq!(desired(&pools, &a, "default/c", &lb("c", json!({}))), Ok(vec![ip("127.240.0.1")]));
    }

    #[test]
    fn dual_stack_gets_one_address_per_family_with_a_pool() {
        let pools = [pool("127.240.0.0/16"), pool("fd00:240::/112")];
        let a = Allocations::default();
        let svc = lb("d", json!({"ipFamilies": ["IPv6", "IPv4"]}));
        assert_eq!(desired(&pools, &a, "default/d", &svc), Ok(vec![ip("fd00:240::1"), ip("127.240.0.1")]));
        let only_v4 = [pool("127.240.0.0/16")];
        assert_eq!(desired(&only_v4, &a, "default/d", &svc), Ok(vec![ip("127.240.0.1")]));
        let v6_only = lb("e", json!({"ipFamilies": ["IPv6"]}));
        assert!(desired(&only_v4, &a, "default/e", &v6_only).is_err());
    }

    #[test]
    fn only_classless_or_kplane_load_balancers_are_ours() {
        assert!(is_ours(&lb("a", json!({}))));
        assert!(is_ours(&lb("a", json!({"loadBalancerClass": CLASS}))));
        assert!(!is_ours(&lb("a", json!({"loadBalancerClass": "example.com/internal-vip"}))));
        assert!(!is_ours(&lb("a", json!({"type": "ClusterIP"}))));
    }
}
