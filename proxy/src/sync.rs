//! The sync loop: watchers over Services, EndpointSlices and this Node feed one queue; each pass
//! applies every queued event to the incremental desired state, which recomputes only the
//! Services they touch, and the listeners that changed are opened, closed or given new endpoints
//! (kube-proxy's change trackers + `syncProxyRules`, without its periodic full resync).

use crate::affinity::Affinity;
use crate::balance::Route;
use crate::desired::{Conflict, LABEL_SELECTOR, Listen, RouteSpec, ServicePortName};
use crate::endpoints::ZONE_LABEL;
use crate::events::Events;
use crate::health::{ProxyHealth, ServiceHealth, ServiceHealthServers, TO_BE_DELETED_TAINT};
use crate::incremental::{Change, Incremental, Key};
use crate::listener::{Listener, Shared};
use crate::{ProxyConfig, ProxyError};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The listeners in effect.
#[derive(Default)]
struct Applied {
    listeners: HashMap<Listen, Active>,
    /// One table per Service port and timeout, shared by its listeners (with a count of them),
    /// so ClusterIP and NodePort agree.
    affinity: HashMap<(ServicePortName, Duration), (Arc<Affinity>, usize)>,
    /// The conflicts reported, per listener.
    conflicts: HashMap<Listen, Vec<Conflict>>,
}

struct Active {
    spec: RouteSpec,
    route: watch::Sender<Arc<Route>>,
    _listener: Listener,
}

/// One watch event, from whichever watcher. (Sizes differ, but each lives only in the queue.)
#[allow(clippy::large_enum_variant)]
enum Update {
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
    Node(watcher::Event<Node>),
}

/// Starts the watchers; the returned future runs the loop.
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
    // nftables mode: rules in kplane's table instead of listeners (fails here without root/nft).
    let mut nftables = match config.mode {
        crate::ProxyMode::Nftables => Some(crate::nftables::Nftables::start(&config).await?),
        crate::ProxyMode::Userspace => None,
    };

    let mut health_servers =
        ServiceHealthServers::new(config.node_ips.clone(), health.clone(), health_bind_failures(shared.events.clone()));
    let selector = watcher::Config::default().labels(LABEL_SELECTOR);
    let node_selector = watcher::Config::default().fields(&format!("metadata.name={}", config.node_name));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watchers = [
        tokio::spawn(forward(services, selector.clone(), tx.clone(), health.clone(), Update::Service)),
        tokio::spawn(forward(slices, selector, tx.clone(), health.clone(), Update::Slice)),
        tokio::spawn(forward(nodes, node_selector, tx, health.clone(), Update::Node)),
    ];
    Ok(async move {
        let _abort = AbortAll(watchers);
        let mut state = State::new(&config);
        let mut applied = Applied::default();
        while let Some(first) = rx.recv().await {
            state.handle(first);
            // Everything already queued goes into this pass.
            while let Ok(next) = rx.try_recv() {
                state.handle(next);
            }
            if !state.listed() {
                continue; // the first complete lists come before the first pass
            }
            let flushed = state.incremental.flush();
            health.set_node_eligible(state.node_eligible);
            health_servers.apply(&state.incremental.health());
            let in_effect = match nftables.as_mut() {
                Some(nft) => nft.sync(&flushed, &state.incremental).await,
                None => true,
            };
            let changes = flushed.changes.into_iter().filter(|(l, _)| !config.reserved.contains(&l.addr)).collect();
            if nftables.is_none() {
                applied.apply_changes(changes, &shared);
            }
            applied.report_conflicts(&flushed.affected, state.incremental.conflicts_on(&flushed.affected), &shared);
            if in_effect {
                health.updated();
            }
            synced.send_replace(true);
        }
    })
}

/// Watches `api` and forwards its events (wrapped by `wrap`) until the loop is gone.
async fn forward<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<Update>,
    health: Arc<ProxyHealth>,
    wrap: fn(watcher::Event<K>) -> Update,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => {
                health.queued();
                if tx.send(wrap(e)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        }
    }
}

/// What the loop knows: the incremental desired state, relist bookkeeping and the node.
struct State {
    incremental: Incremental,
    node_name: String,
    node_eligible: bool,
    /// Keys seen since a relist began (Services, slices); `None` outside a relist.
    relisting: (Option<HashSet<Key>>, Option<HashSet<Key>>),
    /// Whether Services and slices have each been listed once.
    listed_once: (bool, bool),
}

fn key<K: kube::Resource>(o: &K) -> Key {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

impl State {
    fn new(config: &ProxyConfig) -> Self {
        Self {
            incremental: Incremental::new(&config.node_name, config.node_ips.clone()),
            node_name: config.node_name.clone(),
            node_eligible: true,
            relisting: (None, None),
            listed_once: (false, false),
        }
    }

    fn listed(&self) -> bool {
        self.listed_once.0 && self.listed_once.1
    }

    fn handle(&mut self, update: Update) {
        let inc = &mut self.incremental;
        match update {
            Update::Service(e) => match e {
                watcher::Event::Init => self.relisting.0 = Some(HashSet::new()),
                watcher::Event::InitApply(s) => {
                    self.relisting.0.get_or_insert_default().insert(key(&s));
                    inc.apply_service(Arc::new(s));
                }
                watcher::Event::Apply(s) => inc.apply_service(Arc::new(s)),
                watcher::Event::Delete(s) => inc.delete_service(&key(&s)),
                watcher::Event::InitDone => {
                    let seen = self.relisting.0.take().unwrap_or_default();
                    for gone in inc.keys().0.into_iter().filter(|k| !seen.contains(k)) {
                        inc.delete_service(&gone);
                    }
                    self.listed_once.0 = true;
                }
            },
            Update::Slice(e) => match e {
                watcher::Event::Init => self.relisting.1 = Some(HashSet::new()),
                watcher::Event::InitApply(s) => {
                    self.relisting.1.get_or_insert_default().insert(key(&s));
                    inc.apply_slice(Arc::new(s));
                }
                watcher::Event::Apply(s) => inc.apply_slice(Arc::new(s)),
                watcher::Event::Delete(s) => inc.delete_slice(&key(&s)),
                watcher::Event::InitDone => {
                    let seen = self.relisting.1.take().unwrap_or_default();
                    for gone in inc.keys().1.into_iter().filter(|k| !seen.contains(k)) {
                        inc.delete_slice(&gone);
                    }
                    self.listed_once.1 = true;
                }
            },
            Update::Node(e) => match e {
                watcher::Event::Apply(n) | watcher::Event::InitApply(n)
                    if n.metadata.name.as_deref() == Some(&self.node_name) =>
                {
                    inc.set_zone(n.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).cloned());
                    self.node_eligible = eligible(&n);
                }
                watcher::Event::Delete(_) => self.node_eligible = true,
                _ => {}
            },
        }
    }
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

impl Applied {
    /// Makes the running listeners match a complete desired set (tests; the loop uses changes).
    #[cfg(test)]
    fn apply(&mut self, want: crate::desired::Desired, shared: &Shared) {
        let mut changes: Vec<Change> =
            self.listeners.keys().filter(|l| !want.routes.contains_key(l)).map(|l| (*l, None)).collect();
        for (listen, spec) in want.routes {
            if self.listeners.get(&listen).is_none_or(|a| a.spec != spec) {
                changes.push((listen, Some(spec)));
            }
        }
        self.apply_changes(changes, shared);
    }

    /// Opens, updates and closes listeners as `changes` say; nothing else is touched.
    fn apply_changes(&mut self, changes: Vec<Change>, shared: &Shared) {
        for (listen, next) in changes {
            if let Some(old) =
                self.listeners.get(&listen).and_then(|a| a.spec.affinity.map(|t| (a.spec.service.clone(), t)))
            {
                self.release_affinity(&old);
            }
            let Some(spec) = next else {
                tracing::debug!(%listen, "closing listener");
                self.listeners.remove(&listen);
                continue;
            };
            let affinity = spec.affinity.map(|t| self.acquire_affinity(spec.service.clone(), t));
            let route = Arc::new(Route {
                service: spec.service.clone(),
                endpoints: spec.endpoints.clone(),
                affinity,
                sources: spec.sources.clone(),
            });
            match self.listeners.get_mut(&listen) {
                Some(active) => {
                    tracing::debug!(%listen, endpoints = ?spec.endpoints, "route changed");
                    active.route.send_replace(route);
                    active.spec = spec;
                }
                None => {
                    tracing::debug!(%listen, service = %spec.service, "opening listener");
                    let (tx, rx) = watch::channel(route);
                    let listener = Listener::spawn(listen, rx, shared);
                    self.listeners.insert(listen, Active { spec, route: tx, _listener: listener });
                }
            }
        }
    }

    fn acquire_affinity(&mut self, service: ServicePortName, timeout: Duration) -> Arc<Affinity> {
        let entry = self.affinity.entry((service, timeout)).or_insert_with(|| (Arc::new(Affinity::new(timeout)), 0));
        entry.1 += 1;
        entry.0.clone()
    }

    fn release_affinity(&mut self, key: &(ServicePortName, Duration)) {
        if let Some(entry) = self.affinity.get_mut(key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.affinity.remove(key);
            }
        }
    }

    /// Reports conflicts on `listens` that were not reported before, as Events on the Service
    /// that lost.
    fn report_conflicts(&mut self, listens: &[Listen], now: Vec<Conflict>, shared: &Shared) {
        let mut by_listen: HashMap<Listen, Vec<Conflict>> = HashMap::new();
        for c in now {
            by_listen.entry(c.listen).or_default().push(c);
        }
        for listen in listens {
            let current = by_listen.remove(listen).unwrap_or_default();
            let before = self.conflicts.remove(listen).unwrap_or_default();
            for c in current.iter().filter(|c| !before.contains(c)) {
                let note = format!("{} is already used by {}; the older Service keeps it", c.listen, c.kept);
                match &shared.events {
                    Some(events) => events.warn(&c.dropped.namespace, &c.dropped.name, "AddressConflict", note),
                    None => tracing::warn!(dropped = %c.dropped, "{note}"),
                }
            }
            if !current.is_empty() {
                self.conflicts.insert(*listen, current);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::TcpConnect;
    use crate::desired::Class;
    use crate::desired::Desired;
    use crate::endpoints::Protocol;
    use crate::udp::UdpSettings;
    use std::collections::BTreeMap;
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
            data: crate::runtime::DataPath::current(),
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
