//! The zone kept current: kube-rs reflectors over Services, EndpointSlices, Pods and Namespaces, and a
//! task that rebuilds the [`Zone`] as soon as any of them changes (bursts coalesce; no periodic
//! resync) and publishes it on a `watch` channel (CoreDNS `controller.go`).

use crate::data::ClusterData;
use crate::zone::{Zone, ZoneConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The published zone and the tasks that keep it current (abort them to stop).
pub struct ZoneFeed {
    pub zone: watch::Receiver<Arc<Zone>>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Start the reflectors. The first zone is empty and unsynced; a synced one follows once every
/// reflector has listed.
pub fn start(client: Client, config: ZoneConfig) -> ZoneFeed {
    let changed = Arc::new(Notify::new());
    let modified = Arc::new(AtomicU32::new(unix_now()));
    let mut tasks = Vec::new();
    let services = reflect::<Service>(Api::all(client.clone()), &changed, &modified, &mut tasks);
    let slices = reflect::<EndpointSlice>(Api::all(client.clone()), &changed, &modified, &mut tasks);
    let pods = reflect::<Pod>(Api::all(client.clone()), &changed, &modified, &mut tasks);
    let namespaces = reflect::<Namespace>(Api::all(client), &changed, &modified, &mut tasks);

    let synced = Arc::new(AtomicBool::new(false));
    {
        let (services, slices, pods, namespaces) = (services.clone(), slices.clone(), pods.clone(), namespaces.clone());
        let (synced, changed) = (synced.clone(), changed.clone());
        tasks.push(tokio::spawn(async move {
            let ready = futures::future::try_join4(
                services.wait_until_ready(),
                slices.wait_until_ready(),
                pods.wait_until_ready(),
                namespaces.wait_until_ready(),
            )
            .await;
            if ready.is_ok() {
                synced.store(true, Ordering::SeqCst);
                changed.notify_one();
            }
        }));
    }

    let (tx, rx) = watch::channel(Arc::new(Zone::new(&config, ClusterData::default(), unix_now(), false)));
    tasks.push(tokio::spawn(async move {
        loop {
            changed.notified().await;
            let data = ClusterData::build(
                services.state().iter().map(Arc::as_ref),
                slices.state().iter().map(Arc::as_ref),
                pods.state().iter().map(Arc::as_ref),
                namespaces.state().iter().map(Arc::as_ref),
            );
            let zone = Zone::new(&config, data, modified.load(Ordering::SeqCst), synced.load(Ordering::SeqCst));
            if tx.send(Arc::new(zone)).is_err() {
                return;
            }
        }
    }));
    ZoneFeed { zone: rx, tasks }
}

/// A reflector for `K` whose every change stamps `modified` and wakes the rebuild.
fn reflect<K>(
    api: Api<K>,
    changed: &Arc<Notify>,
    modified: &Arc<AtomicU32>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default())).default_backoff();
    let (changed, modified) = (changed.clone(), modified.clone());
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The store swaps in a relist only at InitDone.
                Ok(Event::Init | Event::InitApply(_)) => {}
                Ok(_) => {
                    modified.store(unix_now(), Ordering::SeqCst);
                    changed.notify_one();
                }
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), %error, "dns: watch failed; retrying")
                }
            }
        }
    }));
    reader
}

/// The SOA serial: Unix seconds (wraps in 2106, as CoreDNS's does).
fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}
