//! The sync loop: reflectors over Services, EndpointSlices and this Node; on every change the
//! desired state is recomputed and only the difference applied (new listeners opened, gone ones
//! closed, changed endpoint sets swapped in for new connections), as `proxier.go::syncProxyRules`.

use crate::affinity::Affinity;
use crate::balance::Route;
use crate::desired::{self, Conflict, Desired, Listen, RouteSpec, ServicePortName};
use crate::endpoints::ZONE_LABEL;
use crate::events::Events;
use crate::health::{ProxyHealth, ServiceHealth, ServiceHealthServers, TO_BE_DELETED_TAINT};
use crate::listener::{Listener, Shared};
use crate::{ProxyConfig, ProxyError};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The listeners in effect and what they were built from.
#[derive(Default)]
struct Applied {
    listeners: HashMap<Listen, Active>,
    /// One table per Service port with affinity, shared by its listeners.
    affinity: HashMap<ServicePortName, Arc<Affinity>>,
    conflicts: Vec<Conflict>,
}

struct Active {
    spec: RouteSpec,
    route: watch::Sender<Arc<Route>>,
    _listener: Listener,
}

/// Starts the reflectors; the returned future runs the loop (after the first complete lists).
pub(crate) async fn start(
    client: kube::Client,
    config: ProxyConfig,
    shared: Shared,
    synced: watch::Sender<bool>,
    health: Arc<ProxyHealth>,
) -> Result<impl Future<Output = ()>, ProxyError> {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    // Fail fast when the API cannot be reached or read, rather than retrying silently forever.
    services.list_metadata(&kube::api::ListParams::default().limit(1)).await?;

    let changed = Arc::new(Notify::new());
    let mut health_servers =
        ServiceHealthServers::new(config.node_ips.clone(), health.clone(), health_bind_failures(shared.events.clone()));
    let selector = watcher::Config::default().labels(desired::LABEL_SELECTOR);
    let node_selector = watcher::Config::default().fields(&format!("metadata.name={}", config.node_name));
    let (service_store, w1) = reflect(services, selector.clone(), &changed, &health);
    let (slice_store, w2) = reflect(slices, selector, &changed, &health);
    let (node_store, w3) = reflect(nodes, node_selector, &changed, &health);
    Ok(async move {
        let watchers = [tokio::spawn(w1), tokio::spawn(w2), tokio::spawn(w3)];
        let _abort = AbortAll(watchers);
        if service_store.wait_until_ready().await.is_err() || slice_store.wait_until_ready().await.is_err() {
            return;
        }
        let mut applied = Applied::default();
        loop {
            let node = node_store.state().into_iter().find(|n| n.metadata.name.as_deref() == Some(&config.node_name));
            let zone = node.as_ref().and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned());
            health.set_node_eligible(node.as_deref().is_none_or(eligible));
            let node = desired::Node { name: &config.node_name, zone: zone.as_deref(), ips: &config.node_ips };
            let mut want = desired::desired(&service_store.state(), &slice_store.state(), node);
            want.routes.retain(|listen, _| !config.reserved.contains(&listen.addr));
            health_servers.apply(&want.health);
            applied.apply(want, &shared);
            health.updated();
            synced.send_replace(true);
            changed.notified().await;
            // Let a burst of events (a Service and its slices) land before the next pass.
            tokio::time::sleep(config.min_sync_interval).await;
        }
    })
}

/// Whether a node may take traffic: not being deleted, not tainted for removal (`proxy_health.go`).
fn eligible(node: &Node) -> bool {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    node.metadata.deletion_timestamp.is_none() && !taints.into_iter().flatten().any(|t| t.key == TO_BE_DELETED_TAINT)
}

/// A health-check port that cannot be opened: a Warning on its Service, as kube-proxy records.
fn health_bind_failures(events: Option<Events>) -> crate::health::BindFailure {
    Arc::new(move |svc: &ServiceHealth, port: u16, error: &std::io::Error| {
        let Some(events) = &events else { return };
        let note = format!(
            "node {} failed to start healthcheck \"{}/{}\" on port {port}: {error}",
            events.node(),
            svc.namespace,
            svc.name
        );
        events.warn(&svc.namespace, &svc.name, "FailedToStartServiceHealthcheck", note);
    })
}

struct AbortAll<const N: usize>([tokio::task::JoinHandle<()>; N]);

impl<const N: usize> Drop for AbortAll<N> {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A store kept by a watcher, and the future driving it (which pokes `changed` on each event).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
    health: &Arc<ProxyHealth>,
) -> (Store<K>, impl Future<Output = ()> + use<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let changed = changed.clone();
    (store, drive(stream, changed, health.clone()))
}

async fn drive<S, T>(stream: S, changed: Arc<Notify>, health: Arc<ProxyHealth>)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watch failed; retrying");
        }
        health.queued();
        changed.notify_one();
    }
}

impl Applied {
    /// Makes the running listeners match `want`, touching only what differs.
    fn apply(&mut self, want: Desired, shared: &Shared) {
        let Desired { routes, conflicts, health: _ } = want;
        self.listeners.retain(|listen, _| {
            let keep = routes.contains_key(listen);
            if !keep {
                tracing::debug!(%listen, "closing listener");
            }
            keep
        });
        // Affinity tables: kept while the Service port keeps the same timeout.
        let mut wanted_affinity: BTreeMap<&ServicePortName, Duration> = BTreeMap::new();
        for spec in routes.values() {
            if let Some(t) = spec.affinity {
                wanted_affinity.insert(&spec.service, t);
            }
        }
        self.affinity.retain(|name, table| wanted_affinity.get(name) == Some(&table.timeout()));
        for (name, timeout) in wanted_affinity {
            self.affinity.entry(name.clone()).or_insert_with(|| Arc::new(Affinity::new(timeout)));
        }

        for (listen, spec) in routes {
            let affinity = spec.affinity.and_then(|_| self.affinity.get(&spec.service).cloned());
            let route = || {
                Arc::new(Route {
                    service: spec.service.clone(),
                    endpoints: spec.endpoints.clone(),
                    affinity: affinity.clone(),
                    sources: spec.sources.clone(),
                })
            };
            match self.listeners.get_mut(&listen) {
                Some(active) if active.spec == spec && same_table(&active.route.borrow().affinity, &affinity) => {}
                Some(active) => {
                    tracing::debug!(%listen, endpoints = ?spec.endpoints, "endpoints changed");
                    active.route.send_replace(route());
                    active.spec = spec;
                }
                None => {
                    tracing::debug!(%listen, service = %spec.service, "opening listener");
                    let (tx, rx) = watch::channel(route());
                    let listener = Listener::spawn(listen, rx, shared);
                    self.listeners.insert(listen, Active { spec, route: tx, _listener: listener });
                }
            }
        }

        for c in &conflicts {
            if !self.conflicts.contains(c) {
                let note = format!("{} is already used by {}; the older Service keeps it", c.listen, c.kept);
                match &shared.events {
                    Some(events) => events.warn(&c.dropped.namespace, &c.dropped.name, "AddressConflict", note),
                    None => tracing::warn!(dropped = %c.dropped, "{note}"),
                }
            }
        }
        self.conflicts = conflicts;
    }
}

fn same_table(a: &Option<Arc<Affinity>>, b: &Option<Arc<Affinity>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::TcpConnect;
    use crate::desired::Class;
    use crate::endpoints::Protocol;
    use crate::udp::UdpSettings;
    use std::net::SocketAddr;
    use tokio::sync::Semaphore;

    fn listen(last: u8) -> Listen {
        Listen { addr: SocketAddr::from(([127, 0, 0, last], 0)), protocol: Protocol::Tcp }
    }

    fn spec(name: &str, endpoints: &[u8], affinity: Option<Duration>) -> RouteSpec {
        RouteSpec {
            service: ServicePortName {
                namespace: "ns".into(),
                name: name.into(),
                port: "".into(),
                protocol: Protocol::Tcp,
            },
            class: Class::Internal,
            endpoints: endpoints.iter().map(|i| SocketAddr::from(([127, 0, 1, *i], 80))).collect(),
            affinity,
            sources: Vec::new(),
        }
    }

    fn want(routes: Vec<(Listen, RouteSpec)>) -> Desired {
        Desired { routes: routes.into_iter().collect(), ..Desired::default() }
    }

    /// (task id, route) of each listener.
    fn snapshot(a: &Applied) -> BTreeMap<Listen, (tokio::task::Id, Arc<Route>)> {
        a.listeners.iter().map(|(l, act)| (*l, (act._listener.task_id(), act.route.borrow().clone()))).collect()
    }

    #[tokio::test]
    async fn apply_touches_only_what_changed() {
        let (_stop, shutdown) = watch::channel(());
        let shared = Shared {
            connect: TcpConnect { timeout: Duration::from_secs(1) },
            udp: UdpSettings { idle_timeout: Duration::from_secs(1), flows: Arc::new(Semaphore::new(8)) },
            shutdown,
            status: Default::default(),
            events: None,
        };
        let mut applied = Applied::default();
        applied.apply(want(vec![(listen(1), spec("a", &[1], None)), (listen(2), spec("b", &[2], None))]), &shared);
        let first = snapshot(&applied);
        assert_eq!(first.len(), 2);

        // The same again: nothing restarted, no new route sent.
        applied.apply(want(vec![(listen(1), spec("a", &[1], None)), (listen(2), spec("b", &[2], None))]), &shared);
        let same = snapshot(&applied);
        for (l, (id, route)) in &first {
            assert_eq!(same[l].0, *id);
            assert!(Arc::ptr_eq(&same[l].1, route));
        }

        // New endpoints for `a`: its listener keeps running with a new route; `b` untouched.
        applied.apply(want(vec![(listen(1), spec("a", &[1, 3], None)), (listen(2), spec("b", &[2], None))]), &shared);
        let changed = snapshot(&applied);
        assert_eq!(changed[&listen(1)].0, first[&listen(1)].0, "the listener is not reopened");
        assert_eq!(changed[&listen(1)].1.endpoints.len(), 2);
        assert!(Arc::ptr_eq(&changed[&listen(2)].1, &first[&listen(2)].1));

        // Affinity on: one table, kept across passes while the timeout stays.
        let sticky = || want(vec![(listen(1), spec("a", &[1, 3], Some(Duration::from_secs(10))))]);
        applied.apply(sticky(), &shared);
        let t1 = snapshot(&applied)[&listen(1)].1.affinity.clone().expect("affinity");
        applied.apply(sticky(), &shared);
        let t2 = snapshot(&applied)[&listen(1)].1.affinity.clone().expect("affinity");
        assert!(Arc::ptr_eq(&t1, &t2));
        assert_eq!(applied.listeners.len(), 1, "b's listener closed");
        assert_eq!(shared.status.lock().map(|s| s.len()).unwrap_or_default(), 1, "and gone from the status");

        // Affinity off: the table is dropped.
        applied.apply(want(vec![(listen(1), spec("a", &[1, 3], None))]), &shared);
        assert!(applied.affinity.is_empty());
        assert!(snapshot(&applied)[&listen(1)].1.affinity.is_none());
    }
}
