//! The nftables proxy mode (`--proxy-mode nftables`, root only): instead of listening, the proxy
//! writes kube-proxy's nftables ruleset into kplane's own table, `table inet kplane`, and the
//! kernel DNATs new connections to endpoints (upstream `pkg/proxy/nftables`).
//!
//! The sync loop, watchers and incremental desired state are the userspace mode's: each pass
//! hands over the listeners whose route changed and the Services recomputed, and only their
//! objects are re-rendered ([`render`]) and applied as one nft transaction ([`model`]), through a
//! libnftables context that lives as long as the proxy (else `nft -f -`, [`nft`]). Per-Service
//! state is map and set elements, so a change costs the same whatever the table's size.
//! The table is rebuilt whole at start and after a failed transaction, and deleted when the
//! proxy stops. No other table is read or written.

mod model;
mod nft;
pub(crate) mod render;

use crate::ProxyConfig;
use crate::desired::{self, Listen, Node};
use crate::incremental::{Flushed, Incremental, Key};
use k8s_openapi::api::core::v1::Service;
use model::Model;
use nft::{Nft, NftError};
use render::Id;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Pauses between rebuild attempts after a failed transaction.
const REBUILD_RETRIES: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2)];

/// kplane's nftables table, kept in step with the desired state.
pub(crate) struct Nftables {
    nft: Nft,
    node_name: String,
    node_ips: Vec<IpAddr>,
    reserved: Vec<SocketAddr>,
    model: Model,
    /// The objects each listener holds in the model.
    held: HashMap<Listen, Vec<Id>>,
    /// Every listener each Service has, with endpoints or not, and how many Services claim each:
    /// a claimed listener without a route rejects.
    claimed: HashMap<Key, Vec<Listen>>,
    claims: HashMap<Listen, usize>,
    /// The `cluster-ips` elements each Service holds in the model (one per ClusterIP).
    cluster_ips: HashMap<Key, Vec<Id>>,
    /// The kernel's table may differ from the model: rebuild it at the next pass.
    broken: bool,
    /// The table was written by this proxy, so dropping it removes the table.
    live: bool,
}

impl Nftables {
    /// Replaces any table left by an earlier run with an empty one; fails when nft cannot run
    /// (not root, no `nft`), so `--proxy-mode nftables` fails at start rather than serving nothing.
    pub(crate) async fn start(config: &ProxyConfig) -> Result<Self, crate::ProxyError> {
        let mut me = Self::new(config);
        me.rebuild().await.map_err(|e| crate::ProxyError::Nftables(e.to_string()))?;
        me.live = true;
        Ok(me)
    }

    /// The state before the first transaction (tests use it without a kernel).
    fn new(config: &ProxyConfig) -> Self {
        let mut me = Self {
            nft: Nft::default(),
            node_name: config.node_name.clone(),
            node_ips: config.node_ips.clone(),
            reserved: config.reserved.clone(),
            model: Model::default(),
            held: HashMap::new(),
            claimed: HashMap::new(),
            claims: HashMap::new(),
            cluster_ips: HashMap::new(),
            broken: false,
            live: false,
        };
        me.model.same_transaction = kernel_at_least(6, 2);
        me.model.service_cidrs = config.service_cidrs.clone();
        me
    }

    /// Applies one pass of the sync loop; false if the kernel could not be brought in step (the
    /// next pass rebuilds the table, and `/healthz` goes stale meanwhile).
    pub(crate) async fn sync(&mut self, flushed: &Flushed, incremental: &Incremental) -> bool {
        self.update(flushed, incremental);
        if self.broken {
            return self.rebuild_retrying().await;
        }
        let plan = self.model.plan();
        if !plan.script.is_empty() {
            if let Err(e) = self.nft.run(&plan.script).await {
                tracing::warn!(error = %e, "nftables transaction failed; rebuilding the table");
                return self.rebuild_retrying().await;
            }
            self.model.applied(plan);
        }
        let cleanup = self.model.cleanup();
        if !cleanup.script.is_empty() {
            match self.nft.run(&cleanup.script).await {
                Ok(()) => self.model.cleaned(cleanup),
                Err(e) => tracing::debug!(error = %e, "stale nftables chains stay until the next pass"),
            }
        }
        true
    }

    /// Rebuilds with a few quick retries (the loop only wakes for events); after that the next
    /// pass tries again.
    async fn rebuild_retrying(&mut self) -> bool {
        for delay in REBUILD_RETRIES {
            match self.rebuild().await {
                Ok(()) => return true,
                Err(e) => tracing::error!(error = %e, "cannot write kplane's nftables table; retrying"),
            }
            tokio::time::sleep(delay).await;
        }
        self.rebuild()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "cannot write kplane's nftables table"))
            .is_ok()
    }

    async fn rebuild(&mut self) -> Result<(), NftError> {
        let result = self.nft.run(&self.model.full()).await;
        self.broken = result.is_err();
        if result.is_ok() {
            self.model.rebuilt();
        }
        result
    }

    /// Re-renders the listeners whose route changed and every listener of the recomputed
    /// Services (a policy change may alter their rules without changing the route).
    fn update(&mut self, flushed: &Flushed, incremental: &Incremental) {
        let mut again: BTreeSet<Listen> = flushed.changes.iter().map(|(l, _)| *l).collect();
        let node = Node { name: &self.node_name, zone: None, ips: &self.node_ips };
        for key in &flushed.services {
            let service = incremental.service(key);
            let new = service.map(|s| desired::service_listens(s, node)).unwrap_or_default();
            for listen in self.claimed.remove(key).unwrap_or_default() {
                if let Some(n) = self.claims.get_mut(&listen) {
                    *n -= 1;
                    if *n == 0 {
                        self.claims.remove(&listen);
                    }
                }
                again.insert(listen);
            }
            for listen in &new {
                *self.claims.entry(*listen).or_default() += 1;
                again.insert(*listen);
            }
            for id in self.cluster_ips.remove(key).unwrap_or_default() {
                self.model.remove(&id);
            }
            let ips = service.map(|s| served_cluster_ips(s, &new)).unwrap_or_default();
            if !ips.is_empty() {
                let objects: Vec<_> = ips.into_iter().map(render::cluster_ip).collect();
                self.cluster_ips.insert(key.clone(), objects.iter().map(|o| o.id.clone()).collect());
                for object in objects {
                    self.model.add(object);
                }
            }
            if !new.is_empty() {
                self.claimed.insert(key.clone(), new);
            }
        }
        for listen in again {
            for id in self.held.remove(&listen).unwrap_or_default() {
                self.model.remove(&id);
            }
            if self.reserved.contains(&listen.addr) {
                continue; // served by something else in this process (the cluster DNS)
            }
            let objects = match incremental.routes().get(&listen) {
                Some(route) => {
                    let key = (route.service.namespace.clone(), route.service.name.clone());
                    let local = incremental.service(&key).is_some_and(|s| external_policy_local(s));
                    render::route(&listen, route, local)
                }
                None if self.claims.contains_key(&listen) => render::reject(&listen),
                None => continue,
            };
            self.held.insert(listen, objects.iter().map(|o| o.id.clone()).collect());
            for object in objects {
                self.model.add(object);
            }
        }
    }
}

impl Drop for Nftables {
    /// The proxy stopped: its table goes (connections already made keep their conntrack NAT).
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        if let Err(e) = self.nft.run_blocking(&render::remove_table()) {
            tracing::warn!(error = %e, "cannot remove kplane's nftables table");
        }
    }
}

/// Whether the running kernel is `major.minor` or later (`/proc/sys/kernel/osrelease`).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// The ClusterIPs of `service` that this proxy serves (some of its `listens` are on them): not
/// those of a headless Service, of one left to another proxy, or of one without a port here.
fn served_cluster_ips(service: &Service, listens: &[Listen]) -> Vec<IpAddr> {
    let mut ips = desired::cluster_ips(service);
    ips.retain(|ip| listens.iter().any(|l| l.addr.ip() == *ip));
    ips.sort();
    ips.dedup();
    ips
}

fn external_policy_local(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local")
}

#[cfg(test)]
mod tests;
