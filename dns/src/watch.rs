//! The zone kept current: kube-rs watchers over Services, EndpointSlices, Pods and Namespaces, each
//! event applied to the [`LiveZone`] for that one object as soon as it arrives (no rebuild, no
//! periodic resync; CoreDNS `controller.go`). A relist keeps the old objects until it is complete,
//! then drops those it did not list, so names that exist never answer NXDOMAIN meanwhile.

use crate::data::{self, ClusterData, Key, Touched};
use crate::prepared::LiveZone;
use crate::zone::{Zone, ZoneConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// The served zone and the tasks that keep it current (abort them to stop).
pub struct ZoneFeed {
    pub zone: Arc<LiveZone>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Start the watchers. The zone starts empty and unsynced; it is synced once every watcher has
/// listed.
pub fn start(client: Client, config: ZoneConfig) -> ZoneFeed {
    let zone = Arc::new(LiveZone::new(Zone::new(&config, ClusterData::default(), unix_now(), false)));
    let listed = Arc::new(AtomicUsize::new(0));
    let tasks = vec![
        follow::<Service>(Api::all(client.clone()), &zone, &listed),
        follow::<EndpointSlice>(Api::all(client.clone()), &zone, &listed),
        follow::<Pod>(Api::all(client.clone()), &zone, &listed),
        follow::<Namespace>(Api::all(client), &zone, &listed),
    ];
    ZoneFeed { zone, tasks }
}

/// How one kind of object goes into [`ClusterData`].
pub trait Indexed: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The key the data holds the object under.
    fn key(&self) -> Option<Key>;
    fn apply(&self, data: &mut ClusterData) -> Vec<Touched>;
    fn delete(key: &Key, data: &mut ClusterData) -> Vec<Touched>;
    /// The keys held now.
    fn held(data: &ClusterData) -> Vec<Key>;
}

impl Indexed for Service {
    fn key(&self) -> Option<Key> {
        data::key_of(&self.metadata)
    }
    fn apply(&self, data: &mut ClusterData) -> Vec<Touched> {
        data.apply_service(self)
    }
    fn delete(key: &Key, data: &mut ClusterData) -> Vec<Touched> {
        data.delete_service(key)
    }
    fn held(data: &ClusterData) -> Vec<Key> {
        data.service_keys().cloned().collect()
    }
}

impl Indexed for EndpointSlice {
    fn key(&self) -> Option<Key> {
        Some((self.metadata.namespace.clone()?, self.metadata.name.clone()?))
    }
    fn apply(&self, data: &mut ClusterData) -> Vec<Touched> {
        data.apply_slice(self)
    }
    fn delete(key: &Key, data: &mut ClusterData) -> Vec<Touched> {
        data.delete_slice(key)
    }
    fn held(data: &ClusterData) -> Vec<Key> {
        data.slice_keys().cloned().collect()
    }
}

impl Indexed for Pod {
    fn key(&self) -> Option<Key> {
        Some((self.metadata.namespace.clone()?, self.metadata.name.clone()?))
    }
    fn apply(&self, data: &mut ClusterData) -> Vec<Touched> {
        data.apply_pod(self);
        Vec::new()
    }
    fn delete(key: &Key, data: &mut ClusterData) -> Vec<Touched> {
        data.delete_pod(key);
        Vec::new()
    }
    fn held(data: &ClusterData) -> Vec<Key> {
        data.pod_keys().cloned().collect()
    }
}

impl Indexed for Namespace {
    fn key(&self) -> Option<Key> {
        Some((String::new(), self.metadata.name.as_ref()?.to_ascii_lowercase()))
    }
    fn apply(&self, data: &mut ClusterData) -> Vec<Touched> {
        data.apply_namespace(self)
    }
    fn delete(key: &Key, data: &mut ClusterData) -> Vec<Touched> {
        data.delete_namespace(&key.1)
    }
    fn held(data: &ClusterData) -> Vec<Key> {
        data.namespaces.iter().map(|n| (String::new(), n.clone())).collect()
    }
}

/// Apply one watcher event. `relisting` collects the keys of a relist in progress; at its end,
/// keys it did not list are deleted (all in one step). Returns true at the end of a listing.
pub fn handle<K: Indexed>(zone: &LiveZone, event: Event<K>, relisting: &mut Option<HashSet<Key>>) -> bool {
    match event {
        Event::Init => *relisting = Some(HashSet::new()),
        Event::InitApply(obj) => {
            if let (Some(seen), Some(key)) = (relisting.as_mut(), obj.key()) {
                seen.insert(key);
            }
            zone.update(unix_now(), |data| obj.apply(data));
        }
        Event::Apply(obj) => zone.update(unix_now(), |data| obj.apply(data)),
        Event::Delete(obj) => {
            if let Some(key) = obj.key() {
                zone.update(unix_now(), |data| K::delete(&key, data));
            }
        }
        Event::InitDone => {
            let seen = relisting.take().unwrap_or_default();
            zone.update(unix_now(), |data| {
                let stale: Vec<Key> = K::held(data).into_iter().filter(|k| !seen.contains(k)).collect();
                stale.iter().flat_map(|key| K::delete(key, data)).collect()
            });
            return true;
        }
    }
    false
}

/// A watcher for `K` feeding `zone`; the zone is synced when all four have listed once.
fn follow<K>(api: Api<K>, zone: &Arc<LiveZone>, listed: &Arc<AtomicUsize>) -> JoinHandle<()>
where
    K: Indexed,
    K::DynamicType: Default,
{
    let (zone, listed) = (zone.clone(), listed.clone());
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut relisting = None;
        let mut first = true;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if handle(&zone, event, &mut relisting) && std::mem::take(&mut first) {
                        // The four watchers: Services, EndpointSlices, Pods, Namespaces.
                        if listed.fetch_add(1, Ordering::SeqCst) + 1 == 4 {
                            zone.set_synced();
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), %error, "dns: watch failed; retrying")
                }
            }
        }
    })
}

/// The SOA serial: Unix seconds (wraps in 2106, as CoreDNS's does).
fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}
