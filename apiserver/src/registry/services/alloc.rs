//! ClusterIP and NodePort allocation for Services (`pkg/registry/core/service/storage/alloc.go`):
//! what a create or update allocates, what it releases on commit, and the repair pass that
//! rebuilds the allocators from the stored Services at start-up.

use super::defaults::IpFamily;
use super::validation::{is_headless, needs_health_check};
use crate::alloc::{AllocError, IpAllocator, PortAllocator};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::registry::Transaction;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The allocators of one cluster: one IP allocator per family (primary first) and the NodePorts.
pub struct Allocators {
    ips: Vec<IpAllocator>,
    ports: PortAllocator,
}

/// A value a Service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Held {
    Ip(IpAddr),
    Port(i32),
}

/// Shared allocators plus the cluster's families, as the Service strategy holds them.
#[derive(Clone)]
pub struct ServiceAllocators {
    inner: Arc<Mutex<Allocators>>,
    families: Vec<IpFamily>,
}

impl ServiceAllocators {
    pub fn new(service_cidrs: &[String], node_ports: (u16, u16)) -> Result<Self, AllocError> {
        let ips: Vec<IpAllocator> = service_cidrs.iter().map(|c| IpAllocator::parse(c)).collect::<Result<_, _>>()?;
        let families = ips.iter().map(IpAllocator::family).collect();
        let ports = PortAllocator::parse(&format!("{}-{}", node_ports.0, node_ports.1))?;
        Ok(Self { inner: Arc::new(Mutex::new(Allocators { ips, ports })), families })
    }

    /// The IP families the cluster serves, primary first.
    pub fn families(&self) -> &[IpFamily] {
        &self.families
    }

    fn lock(&self) -> MutexGuard<'_, Allocators> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self) -> AllocTxn {
        AllocTxn { allocators: self.clone(), allocated: Vec::new(), release_on_commit: Vec::new(), committed: false }
    }

    /// Allocates what a new Service needs (`allocateCreate`) and fills it in.
    pub fn allocate_create(&self, svc: &mut Service) -> ApiResult<AllocTxn> {
        let mut txn = self.begin();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let Some(spec) = svc.spec.as_mut() else { return Ok(txn) };
        txn.allocate_cluster_ips(spec, &[], &name)?;
        txn.allocate_node_ports(spec, &BTreeSet::new(), &name)?;
        txn.allocate_health_check(spec, None)?;
        Ok(txn)
    }

    /// Allocates what an update adds and schedules releases of what it drops (`allocateUpdate`).
    pub fn allocate_update(&self, new: &mut Service, old: &Service) -> ApiResult<AllocTxn> {
        let mut txn = self.begin();
        let name = new.metadata.name.clone().unwrap_or_default();
        let old_spec = old.spec.clone().unwrap_or_default();
        let old_held = held_by(&old_spec);
        let Some(spec) = new.spec.as_mut() else { return Ok(txn) };
        let old_ips: Vec<IpAddr> =
            old_held.iter().filter_map(|h| if let Held::Ip(ip) = h { Some(*ip) } else { None }).collect();
        let old_ports: BTreeSet<i32> =
            old_held.iter().filter_map(|h| if let Held::Port(p) = h { Some(*p) } else { None }).collect();
        txn.allocate_cluster_ips(spec, &old_ips, &name)?;
        txn.allocate_node_ports(spec, &old_ports, &name)?;
        let old_hc = needs_health_check(&old_spec).then_some(old_spec.health_check_node_port).flatten();
        txn.allocate_health_check(spec, old_hc)?;
        let new_held = held_by(spec);
        txn.release_on_commit = old_held.into_iter().filter(|h| !new_held.contains(h)).collect();
        Ok(txn)
    }

    /// Releases everything a deleted Service held (`afterDelete`).
    pub fn release(&self, svc: &Service) {
        let mut a = self.lock();
        for h in held_by(svc.spec.as_ref().unwrap_or(&ServiceSpec::default())) {
            a.release(h);
        }
    }

    /// Rebuilds the allocators from the stored Services (the repair controllers run once at
    /// start): returns, per Service, the values another Service already holds.
    pub fn restore(&self, services: &[Value]) -> Vec<(Value, String, String)> {
        let mut problems = Vec::new();
        let mut a = self.lock();
        let mut owners: BTreeMap<Held, String> = BTreeMap::new();
        for obj in services {
            let Ok(svc) = serde_json::from_value::<Service>(obj.clone()) else { continue };
            let who = format!(
                "{}/{}",
                svc.metadata.namespace.as_deref().unwrap_or(""),
                svc.metadata.name.as_deref().unwrap_or("")
            );
            // A port shared by two Service ports of one Service counts once.
            for h in held_by(svc.spec.as_ref().unwrap_or(&ServiceSpec::default())) {
                match owners.get(&h) {
                    Some(other) => {
                        let (reason, what) = match h {
                            Held::Ip(ip) => ("ClusterIPAlreadyAllocated", format!("Cluster IP {ip}")),
                            Held::Port(p) => ("PortAlreadyAllocated", format!("Port {p}")),
                        };
                        let message = format!(
                            "{what} was assigned to multiple services ({other} and {who}); please recreate service"
                        );
                        problems.push((obj.clone(), reason.to_string(), message));
                    }
                    None => {
                        let result = a.allocate(h);
                        if let Err(e) = result {
                            let (reason, what) = match h {
                                Held::Ip(ip) => ("ClusterIPOutOfRange", format!("Cluster IP {ip}")),
                                Held::Port(p) => ("PortOutOfRange", format!("Port {p}")),
                            };
                            problems.push((
                                obj.clone(),
                                reason.to_string(),
                                format!("{what} cannot be allocated: {e}"),
                            ));
                        }
                        owners.insert(h, who.clone());
                    }
                }
            }
        }
        problems
    }

    /// Addresses and NodePorts in use.
    pub fn used(&self) -> (usize, usize) {
        let a = self.lock();
        (a.ips.iter().map(IpAllocator::used).sum(), a.ports.used())
    }
}

impl Allocators {
    fn ip_allocator(&mut self, ip: IpAddr) -> Option<&mut IpAllocator> {
        self.ips.iter_mut().find(|a| a.family() == IpFamily::of(ip))
    }

    fn allocate(&mut self, h: Held) -> Result<(), AllocError> {
        match h {
            Held::Ip(ip) => match self.ip_allocator(ip) {
                Some(a) => a.allocate(ip),
                None => Err(AllocError::MismatchedNetwork),
            },
            Held::Port(p) => self.ports.allocate(p),
        }
    }

    fn release(&mut self, h: Held) {
        match h {
            Held::Ip(ip) => {
                if let Some(a) = self.ip_allocator(ip) {
                    a.release(ip);
                }
            }
            Held::Port(p) => {
                self.ports.release(p);
            }
        }
    }
}

/// Everything a stored Service spec holds: cluster IPs, NodePorts, the health-check port.
fn held_by(spec: &ServiceSpec) -> BTreeSet<Held> {
    let mut out = BTreeSet::new();
    if spec.type_.as_deref() != Some("ExternalName") {
        for ip in spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                out.insert(Held::Ip(ip));
            }
        }
    }
    if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port.filter(|n| *n != 0) {
                out.insert(Held::Port(np));
            }
        }
    }
    if needs_health_check(spec)
        && let Some(hc) = spec.health_check_node_port.filter(|p| *p != 0)
    {
        out.insert(Held::Port(hc));
    }
    out
}

/// Allocations of one write: undone on drop unless committed; releases happen on commit.
pub struct AllocTxn {
    allocators: ServiceAllocators,
    allocated: Vec<Held>,
    release_on_commit: Vec<Held>,
    committed: bool,
}

impl AllocTxn {
    fn take(&mut self, h: Held) -> Result<(), AllocError> {
        self.allocators.lock().allocate(h)?;
        self.allocated.push(h);
        Ok(())
    }

    fn allocate_cluster_ips(&mut self, spec: &mut ServiceSpec, held: &[IpAddr], name: &str) -> ApiResult<()> {
        if spec.type_.as_deref() == Some("ExternalName") || is_headless(spec) {
            return Ok(());
        }
        let families: Vec<String> = spec.ip_families.clone().unwrap_or_default();
        let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        let requested = ips.clone();
        for (i, family) in families.iter().enumerate() {
            match ips.get(i).filter(|ip| !ip.is_empty()) {
                Some(ip) => {
                    let Ok(addr) = ip.parse::<IpAddr>() else { continue }; // validation reports it
                    if held.contains(&addr) {
                        continue;
                    }
                    self.take(Held::Ip(addr)).map_err(|e| {
                        ApiError::invalid(
                            "",
                            "Service",
                            name,
                            vec![FieldError::invalid(
                                "spec.clusterIPs",
                                Value::from(requested.clone()),
                                format!("failed to allocate IP {ip}: {e}"),
                            )],
                        )
                    })?;
                }
                None => {
                    let want = IpFamily::parse(family).unwrap_or(IpFamily::V4);
                    let mut a = self.allocators.lock();
                    let Some(allocator) = a.ips.iter_mut().find(|a| a.family() == want) else { continue };
                    let ip = allocator
                        .allocate_next()
                        .map_err(|e| ApiError::internal(format!("failed to allocate a serviceIP: {e}")))?;
                    drop(a);
                    self.allocated.push(Held::Ip(ip));
                    if i < ips.len() {
                        ips[i] = ip.to_string();
                    } else {
                        ips.push(ip.to_string());
                    }
                }
            }
        }
        if !ips.is_empty() {
            spec.cluster_ip = ips.first().cloned();
            spec.cluster_ips = Some(ips);
        }
        Ok(())
    }

    fn allocate_node_ports(&mut self, spec: &mut ServiceSpec, held: &BTreeSet<i32>, name: &str) -> ApiResult<()> {
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        let auto = ty == "NodePort" || (ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false));
        if ty != "NodePort" && ty != "LoadBalancer" {
            return Ok(());
        }
        // Ports with the same number (53/TCP and 53/UDP) share one NodePort.
        let mut by_port: BTreeMap<i32, i32> = BTreeMap::new();
        let mut taken_here: BTreeSet<i32> = BTreeSet::new();
        let requested: Vec<(i32, i32)> =
            spec.ports.iter().flatten().map(|p| (p.port, p.node_port.unwrap_or(0))).collect();
        for (i, p) in spec.ports.iter_mut().flatten().enumerate() {
            let mut np = p.node_port.unwrap_or(0);
            if np == 0 && auto && !by_port.contains_key(&p.port) {
                // `findRequestedNodePort`: a later port with the same number that asks for a NodePort
                // shares it with this one (earlier ones would be in `by_port` already).
                np = requested[i..].iter().find(|(port, n)| *port == p.port && *n != 0).map_or(0, |(_, n)| *n);
            }
            if np != 0 {
                if held.contains(&np) || taken_here.contains(&np) && by_port.get(&p.port) == Some(&np) {
                    by_port.insert(p.port, np);
                    p.node_port = Some(np);
                    continue;
                }
                self.take(Held::Port(np)).map_err(|e| {
                    ApiError::invalid(
                        "",
                        "Service",
                        name,
                        vec![FieldError::invalid(format!("spec.ports[{i}].nodePort"), np, e.to_string())],
                    )
                })?;
                taken_here.insert(np);
                by_port.insert(p.port, np);
                p.node_port = Some(np);
            } else if auto {
                let np = match by_port.get(&p.port) {
                    Some(np) => *np,
                    None => {
                        let np = self
                            .allocators
                            .lock()
                            .ports
                            .allocate_next()
                            .map_err(|e| ApiError::internal(format!("failed to allocate a nodePort: {e}")))?;
                        self.allocated.push(Held::Port(np));
                        taken_here.insert(np);
                        by_port.insert(p.port, np);
                        np
                    }
                };
                p.node_port = Some(np);
            }
        }
        Ok(())
    }

    fn allocate_health_check(&mut self, spec: &mut ServiceSpec, held: Option<i32>) -> ApiResult<()> {
        if !needs_health_check(spec) {
            return Ok(());
        }
        match spec.health_check_node_port.filter(|p| *p != 0) {
            Some(p) if Some(p) == held => Ok(()),
            Some(p) => self
                .take(Held::Port(p))
                .map_err(|e| ApiError::internal(format!("failed to allocate requested HealthCheck NodePort {p}: {e}"))),
            None => {
                let p = self
                    .allocators
                    .lock()
                    .ports
                    .allocate_next()
                    .map_err(|e| ApiError::internal(format!("failed to allocate a HealthCheck NodePort 0: {e}")))?;
                self.allocated.push(Held::Port(p));
                spec.health_check_node_port = Some(p);
                Ok(())
            }
        }
    }
}

impl Transaction for AllocTxn {
    fn commit(mut self: Box<Self>) {
        let mut a = self.allocators.lock();
        for h in std::mem::take(&mut self.release_on_commit) {
            a.release(h);
        }
        drop(a);
        self.committed = true;
    }
}

impl Drop for AllocTxn {
    fn drop(&mut self) {
        if !self.committed {
            let mut a = self.allocators.lock();
            for h in self.allocated.drain(..) {
                a.release(h);
            }
        }
    }
}
