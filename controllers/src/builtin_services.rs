//! The Services every cluster has from the start, kept present and current: `default/kubernetes`
//! with its Endpoints and EndpointSlice pointing at the API server
//! (`pkg/controlplane/controller/kubernetesservice`, the endpoint reconciler), and
//! `kube-system/kube-dns` (kubeadm's CoreDNS Service).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Where the built-in Services point.
#[derive(Debug, Clone)]
pub struct BuiltinServices {
    /// ClusterIP of `default/kubernetes` (the first address of the service range).
    pub kubernetes_ip: IpAddr,
    /// ClusterIP of `kube-system/kube-dns` (the tenth).
    pub dns_ip: IpAddr,
    /// The API server's own address and port, the `kubernetes` endpoint.
    pub apiserver: IpAddr,
    pub apiserver_port: u16,
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn port(name: &str, port: i32, protocol: &str, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(target)),
        ..Default::default()
    }
}

impl BuiltinServices {
    fn kubernetes_service(&self) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("kubernetes".into()),
                namespace: Some("default".into()),
                labels: labels(&[("component", "apiserver"), ("provider", "kubernetes")]),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(self.kubernetes_ip.to_string()),
                cluster_ips: Some(vec![self.kubernetes_ip.to_string()]),
                ip_family_policy: Some("SingleStack".into()),
                session_affinity: Some("None".into()),
                ports: Some(vec![port("https", 443, "TCP", i32::from(self.apiserver_port))]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn dns_service(&self) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("kube-dns".into()),
                namespace: Some("kube-system".into()),
                labels: labels(&[
                    ("k8s-app", "kube-dns"),
                    ("kubernetes.io/cluster-service", "true"),
                    ("kubernetes.io/name", "CoreDNS"),
                ]),
                annotations: labels(&[("prometheus.io/port", "9153"), ("prometheus.io/scrape", "true")]),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(self.dns_ip.to_string()),
                cluster_ips: Some(vec![self.dns_ip.to_string()]),
                selector: labels(&[("k8s-app", "kube-dns")]),
                ports: Some(vec![
                    port("dns", 53, "UDP", 53),
                    port("dns-tcp", 53, "TCP", 53),
                    port("metrics", 9153, "TCP", 9153),
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn kubernetes_endpoints(&self) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some("kubernetes".into()),
                namespace: Some("default".into()),
                labels: labels(&[("endpointslice.kubernetes.io/skip-mirror", "true")]),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress { ip: self.apiserver.to_string(), ..Default::default() }]),
                ports: Some(vec![EndpointPort {
                    name: Some("https".into()),
                    port: i32::from(self.apiserver_port),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                not_ready_addresses: None,
            }]),
        }
    }

    fn kubernetes_slice(&self) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("kubernetes".into()),
                namespace: Some("default".into()),
                labels: labels(&[("kubernetes.io/service-name", "kubernetes")]),
                ..Default::default()
            },
            address_type: if self.apiserver.is_ipv4() { "IPv4".into() } else { "IPv6".into() },
            endpoints: vec![Endpoint {
                addresses: vec![self.apiserver.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Default::default()
            }],
            ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
                name: Some("https".into()),
                port: Some(i32::from(self.apiserver_port)),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }
    }

    /// Creates whichever of the built-in objects is missing, and corrects the `kubernetes`
    /// endpoints if they point elsewhere.
    pub async fn ensure(&self, client: &kube::Client) -> Result<(), kube::Error> {
        ensure_exists(&Api::namespaced(client.clone(), "default"), self.kubernetes_service()).await?;
        ensure_exists(&Api::namespaced(client.clone(), "kube-system"), self.dns_service()).await?;
        ensure_current(&Api::namespaced(client.clone(), "default"), self.kubernetes_endpoints(), |e: &Endpoints| {
            e.subsets.clone()
        })
        .await?;
        ensure_current(&Api::namespaced(client.clone(), "default"), self.kubernetes_slice(), |s: &EndpointSlice| {
            (s.endpoints.clone(), s.ports.clone())
        })
        .await?;
        Ok(())
    }

    /// Ensures now, then again whenever one of the built-in objects changes, until the client's
    /// server goes away. Each watch names its one object, so the rest of the cluster's churn
    /// (10,000 Services, every endpoint flip in `default`) costs nothing here.
    pub async fn run(self, client: kube::Client) {
        if let Err(e) = self.ensure(&client).await {
            tracing::warn!(error = %e, "built-in services");
        }
        let mut changes = futures::stream::select_all([
            watch_one(Api::<Service>::namespaced(client.clone(), "default"), "kubernetes"),
            watch_one(Api::<Service>::namespaced(client.clone(), "kube-system"), "kube-dns"),
            watch_one(Api::<Endpoints>::namespaced(client.clone(), "default"), "kubernetes"),
            watch_one(Api::<EndpointSlice>::namespaced(client.clone(), "default"), "kubernetes"),
        ]);
        while changes.next().await.is_some() {
            // Coalesce a burst of events into one pass.
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(5), changes.next()).await {}
            if let Err(e) = self.ensure(&client).await {
                tracing::warn!(error = %e, "built-in services");
            }
        }
    }
}

/// The changes of one named object, as a stream of nothing but "something happened".
fn watch_one<K>(api: Api<K>, name: &str) -> futures::stream::BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(api, config).default_backoff().map(|_| ()).boxed()
}

async fn ensure_exists<K>(api: &Api<K>, want: K) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = want.meta().name.clone().unwrap_or_default();
    if api.get_opt(&name).await?.is_none() {
        match api.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn ensure_current<K, V: PartialEq>(api: &Api<K>, want: K, content: impl Fn(&K) -> V) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = want.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Some(current) if content(&current) == content(&want) => Ok(()),
        Some(current) => {
            let mut next = want;
            next.meta_mut().resource_version = current.meta().resource_version.clone();
            next.meta_mut().labels = current.meta().labels.clone().or(next.meta().labels.clone());
            api.replace(&name, &PostParams::default(), &next).await.map(|_| ())
        }
    }
}
