//! The pod rules the Endpoints, EndpointSlice and mirroring controllers share: which pods count,
//! readiness, named targetPort resolution, the hostname rule, which pod changes matter and the
//! `last-change-trigger-time` tracker. Follows `k8s.io/endpointslice/util/controller_utils.go`,
//! `util/trigger_time_tracker.go` and `utils.go` (`FindPort`). Pure functions only.

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// `endpoints.kubernetes.io/last-change-trigger-time`.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// `service.kubernetes.io/headless`, on Endpoints and slices of a Service without a ClusterIP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// `kubernetes.io/service-name`.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// `topology.kubernetes.io/zone`, read from Nodes.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// `control-plane.alpha.kubernetes.io/leader`: Endpoints used as leader-election locks.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// The selector the endpoint controllers act on: none for ExternalName Services and Services
/// without a selector (their endpoints are written by users).
pub fn service_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

/// Whether a set-based equality selector matches `labels` (an empty selector matches everything).
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// `isServiceIPSet`: a ClusterIP other than `None`.
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && ip != "None"
}

fn phase_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// `ShouldPodBeInEndpoints`: not terminal, has an IP, and not terminating unless `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if phase_terminal(pod) {
        return false;
    }
    let status = pod.status.as_ref();
    let has_ip = status.and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty())
        || status.and_then(|s| s.pod_ips.as_ref()).is_some_and(|ips| !ips.is_empty());
    if !has_ip {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Pod condition `Ready` with status `True`.
pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`), parsed as `ParseIPSloppy` does.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| parse_ip_sloppy(&ip.ip)).collect(),
        _ => status.pod_ip.as_deref().and_then(parse_ip_sloppy).into_iter().collect(),
    }
}

/// An IP as Go's `ParseIPSloppy`: IPv4 octets may carry leading zeros (read as decimal).
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let octets: Vec<&str> = s.split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    let mut out = [0u8; 4];
    for (o, part) in out.iter_mut().zip(&octets) {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = part.parse().ok()?;
    }
    Some(IpAddr::V4(Ipv4Addr::from(out)))
}

/// `FindPort`: an int targetPort as is; a named one is the first container port with that name
/// and the service port's protocol, in containers then sidecar (restartPolicy Always) init
/// containers. `None` when nothing matches: the port is left out for this pod.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.target_port.as_ref() {
        Some(IntOrString::Int(n)) => Some(*n),
        // The API defaults targetPort to port; an object that skipped defaulting behaves the same.
        None => Some(port.port),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .flat_map(|c| c.ports.iter().flatten());
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .chain(sidecars)
                .find(|p| p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                .map(|p| p.container_port)
        }
    }
}

/// `ShouldSetHostname`: the pod has a hostname and its subdomain is the Service's name.
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    !hostname.is_empty()
        && spec.and_then(|s| s.subdomain.as_deref()) == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace
}

/// What a pod update means for the Services selecting it (`podEndpointsChanged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodChange {
    /// Something an endpoint shows changed: deletion, readiness, IPs, phase.
    pub endpoint: bool,
    /// Labels or hostname/subdomain changed: membership may differ.
    pub membership: bool,
}

/// Compares two versions of a pod; a resync with the same resourceVersion changes nothing.
pub fn pod_change(old: &Pod, new: &Pod) -> PodChange {
    if old.metadata.resource_version.is_some() && old.metadata.resource_version == new.metadata.resource_version {
        return PodChange::default();
    }
    let host = |p: &Pod| p.spec.as_ref().map(|s| (s.hostname.clone(), s.subdomain.clone()));
    let membership = old.metadata.labels != new.metadata.labels || host(old) != host(new);
    let ips = |p: &Pod| {
        p.status.as_ref().and_then(|s| s.pod_ips.as_ref()).map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>())
    };
    let ip = |p: &Pod| p.status.as_ref().and_then(|s| s.pod_ip.clone());
    let endpoint = old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || is_pod_ready(old) != is_pod_ready(new)
        || ips(old) != ips(new)
        || ip(old) != ip(new)
        || phase_terminal(old) != phase_terminal(new)
        || old.spec.as_ref().and_then(|s| s.node_name.as_ref()) != new.spec.as_ref().and_then(|s| s.node_name.as_ref());
    PodChange { endpoint, membership }
}

/// The Services (names, among `services` of the pod's namespace) to resync for a pod event:
/// old∪new when the pod's endpoint changed, else the symmetric difference when only membership
/// may have (`GetServicesToUpdateOnPodChange`). `old`/`new` are `None` for create/delete.
pub fn services_to_update<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    old: Option<&Pod>,
    new: Option<&Pod>,
) -> BTreeSet<String> {
    let matching = |pod: &Pod, services: &[&'a Service]| -> BTreeSet<String> {
        services
            .iter()
            .filter(|s| service_selector(s).is_some_and(|sel| selector_matches(sel, pod.metadata.labels.as_ref())))
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    };
    let services: Vec<&Service> = services.into_iter().collect();
    match (old, new) {
        (None, None) => BTreeSet::new(),
        (Some(p), None) | (None, Some(p)) => matching(p, &services),
        (Some(old), Some(new)) => {
            let change = pod_change(old, new);
            if !change.endpoint && !change.membership {
                return BTreeSet::new();
            }
            let now = matching(new, &services);
            if !change.membership {
                return now;
            }
            let before = matching(old, &services);
            if change.endpoint {
                now.union(&before).cloned().collect()
            } else {
                now.symmetric_difference(&before).cloned().collect()
            }
        }
    }
}

/// `lastTransitionTime` of the pod's Ready condition: when its endpoint last changed.
fn pod_trigger_time(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod).and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)
}

#[derive(Debug, Clone, Default)]
struct TriggerState {
    service: Option<Timestamp>,
    pods: HashMap<String, Timestamp>,
}

/// `TriggerTimeTracker`: the time of the earliest change not yet reflected in a Service's
/// endpoints, for `last-change-trigger-time`. One per controller; keyed by namespace/name.
#[derive(Debug, Default)]
pub struct TriggerTimeTracker {
    states: HashMap<(String, String), TriggerState>,
}

impl TriggerTimeTracker {
    /// The trigger time for this sync (and records the state it saw). The first sync of a Service
    /// answers its creation time; later ones the minimum over pods whose Ready transition time
    /// advanced (and the Service's, if it changed); `None` when nothing did.
    pub fn compute<'a>(&mut self, service: &Service, pods: impl IntoIterator<Item = &'a Pod>) -> Option<Timestamp> {
        let key =
            (service.metadata.namespace.clone().unwrap_or_default(), service.metadata.name.clone().unwrap_or_default());
        let known = self.states.get(&key);
        let mut earliest: Option<Timestamp> = None;
        let mut now = TriggerState::default();
        for pod in pods {
            let (Some(name), Some(t)) = (pod.metadata.name.as_ref(), pod_trigger_time(pod)) else { continue };
            let before = known.and_then(|s| s.pods.get(name));
            if before.is_none_or(|b| t > *b) {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
            now.pods.insert(name.clone(), t);
        }
        now.service = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(t) = now.service
            && known.and_then(|s| s.service).is_none_or(|b| t > b)
        {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        let was_known = known.is_some();
        let created = now.service;
        self.states.insert(key, now);
        if was_known { earliest } else { created }
    }

    /// Forgets a deleted Service.
    pub fn delete(&mut self, namespace: &str, name: &str) {
        self.states.remove(&(namespace.to_string(), name.to_string()));
    }
}

/// RFC 3339 with nanoseconds as Go's `time.RFC3339Nano` (trailing zeros dropped), in UTC.
pub fn format_trigger_time(t: Timestamp) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("valid pod")
    }

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("valid service")
    }

    fn port(v: serde_json::Value) -> ServicePort {
        serde_json::from_value(v).expect("valid port")
    }

    #[test]
    fn which_pods_count() {
        let base = json!({"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.1", "phase": "Running"}});
        assert!(should_pod_be_in_endpoints(&pod(base.clone()), false));
        let mut no_ip = base.clone();
        no_ip["status"]["podIP"] = json!(null);
        assert!(!should_pod_be_in_endpoints(&pod(no_ip), true));
        let mut only_ips = base.clone();
        only_ips["status"] = json!({"podIPs": [{"ip": "10.0.0.1"}]});
        assert!(should_pod_be_in_endpoints(&pod(only_ips), false));
        for phase in ["Succeeded", "Failed"] {
            let mut done = base.clone();
            done["status"]["phase"] = json!(phase);
            assert!(!should_pod_be_in_endpoints(&pod(done), true));
        }
        let mut terminating = base;
        terminating["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert!(!should_pod_be_in_endpoints(&pod(terminating.clone()), false));
        assert!(should_pod_be_in_endpoints(&pod(terminating), true));
    }

    #[test]
    fn readiness_is_the_ready_condition() {
        let p = |s: &str| {
            pod(
                json!({"status": {"conditions": [{"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": s}]}}),
            )
        };
        assert!(is_pod_ready(&p("True")));
        assert!(!is_pod_ready(&p("False")));
        assert!(!is_pod_ready(&pod(json!({}))));
    }

    #[test]
    fn ips_are_parsed_sloppily() {
        assert_eq!(parse_ip_sloppy("010.000.001.002"), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(parse_ip_sloppy("fd00::0001"), Some("fd00::1".parse().unwrap()));
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.256"), None);
        let p = pod(json!({"status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}));
        assert_eq!(pod_ips(&p).len(), 2);
    }

    #[test]
    fn named_ports_match_name_and_protocol() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
                {"name": "b", "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 5353, "protocol": "TCP"}]}
            ],
            "initContainers": [
                {"name": "init", "ports": [{"name": "metrics", "containerPort": 1}]},
                {"name": "side", "restartPolicy": "Always", "ports": [{"name": "metrics", "containerPort": 9090}, {"name": "http", "containerPort": 1}]}
            ]
        }}));
        let find = |v| find_port(&p, &port(v));
        assert_eq!(find(json!({"port": 80, "targetPort": "http"})), Some(8080));
        assert_eq!(find(json!({"port": 53, "protocol": "UDP", "targetPort": "dns"})), Some(53));
        assert_eq!(find(json!({"port": 53, "protocol": "TCP", "targetPort": "dns"})), Some(5353));
        // Only sidecar init containers count.
        assert_eq!(find(json!({"port": 9, "targetPort": "metrics"})), Some(9090));
        assert_eq!(find(json!({"port": 80, "targetPort": "nope"})), None);
        assert_eq!(find(json!({"port": 80, "protocol": "SCTP", "targetPort": "http"})), None);
        // Ints are taken as they are, exposed or not.
        assert_eq!(find(json!({"port": 80, "targetPort": 1234})), Some(1234));
    }

    #[test]
    fn hostname_only_for_the_matching_subdomain() {
        let svc = service(json!({"metadata": {"name": "web", "namespace": "ns"}}));
        let p = |host: &str, sub: &str, ns: &str| {
            pod(json!({"metadata": {"namespace": ns}, "spec": {"containers": [], "hostname": host, "subdomain": sub}}))
        };
        assert!(should_set_hostname(&p("h", "web", "ns"), &svc));
        assert!(!should_set_hostname(&p("", "web", "ns"), &svc));
        assert!(!should_set_hostname(&p("h", "other", "ns"), &svc));
        assert!(!should_set_hostname(&p("h", "web", "elsewhere"), &svc));
    }

    #[test]
    fn selectors_skip_external_name_and_nil() {
        let sel = |v| service_selector(&service(v)).is_some();
        assert!(sel(json!({"spec": {"selector": {"a": "b"}}})));
        assert!(sel(json!({"spec": {"selector": {}}})));
        assert!(!sel(json!({"spec": {}})));
        assert!(!sel(json!({"spec": {"type": "ExternalName", "selector": {"a": "b"}}})));
        let labels = BTreeMap::from([("a".to_string(), "b".to_string()), ("c".to_string(), "d".to_string())]);
        assert!(selector_matches(&BTreeMap::from([("a".into(), "b".into())]), Some(&labels)));
        assert!(!selector_matches(&BTreeMap::from([("a".into(), "x".into())]), Some(&labels)));
        assert!(selector_matches(&BTreeMap::new(), None));
    }

    #[test]
    fn label_changes_resync_old_and_new_services() {
        let svcs = [
            service(json!({"metadata": {"name": "a"}, "spec": {"selector": {"app": "a"}}})),
            service(json!({"metadata": {"name": "b"}, "spec": {"selector": {"app": "b"}}})),
            service(json!({"metadata": {"name": "all"}, "spec": {"selector": {}}})),
            service(json!({"metadata": {"name": "none"}, "spec": {}})),
        ];
        let p = |rv: &str, app: &str, ready: &str| {
            pod(json!({"metadata": {"name": "p", "resourceVersion": rv, "labels": {"app": app}},
                "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": ready}]}}))
        };
        let names = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        assert_eq!(names(services_to_update(&svcs, None, Some(&p("1", "a", "True")))), ["a", "all"]);
        // Same resourceVersion: nothing.
        assert!(services_to_update(&svcs, Some(&p("1", "a", "True")), Some(&p("1", "b", "False"))).is_empty());
        // Labels only: the services gained or lost.
        assert_eq!(
            names(services_to_update(&svcs, Some(&p("1", "a", "True")), Some(&p("2", "b", "True")))),
            ["a", "b"]
        );
        // Labels and readiness: old ∪ new.
        assert_eq!(
            names(services_to_update(&svcs, Some(&p("1", "a", "True")), Some(&p("2", "b", "False")))),
            ["a", "all", "b"]
        );
        // Readiness only: the current ones.
        assert_eq!(
            names(services_to_update(&svcs, Some(&p("1", "a", "True")), Some(&p("2", "a", "False")))),
            ["a", "all"]
        );
        // An annotation-only update: nothing.
        let mut annotated = p("2", "a", "True");
        annotated.metadata.annotations = Some(BTreeMap::from([("x".into(), "y".into())]));
        assert!(services_to_update(&svcs, Some(&p("1", "a", "True")), Some(&annotated)).is_empty());
    }

    #[test]
    fn trigger_time_tracks_the_earliest_new_change() {
        let svc =
            service(json!({"metadata": {"name": "s", "namespace": "n", "creationTimestamp": "2024-01-01T00:00:00Z"}}));
        let p = |name: &str, t: &str| {
            pod(
                json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]}}),
            )
        };
        let ts = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut tracker = TriggerTimeTracker::default();
        let a = p("a", "2024-01-01T00:00:05Z");
        let b = p("b", "2024-01-01T00:00:07Z");
        // First sync: the Service's creation.
        assert_eq!(tracker.compute(&svc, [&a, &b]), Some(ts("2024-01-01T00:00:00Z")));
        // Nothing new: no trigger.
        assert_eq!(tracker.compute(&svc, [&a, &b]), None);
        // Two pods changed: the earlier.
        let a2 = p("a", "2024-01-01T00:00:09Z");
        let b2 = p("b", "2024-01-01T00:00:08Z");
        assert_eq!(tracker.compute(&svc, [&a2, &b2]), Some(ts("2024-01-01T00:00:08Z")));
        // A new pod counts.
        let c = p("c", "2024-01-01T00:00:10Z");
        assert_eq!(tracker.compute(&svc, [&a2, &b2, &c]), Some(ts("2024-01-01T00:00:10Z")));
        tracker.delete("n", "s");
        assert_eq!(tracker.compute(&svc, [&a2]), Some(ts("2024-01-01T00:00:00Z")));
        assert_eq!(format_trigger_time(ts("2024-01-01T00:00:00.120Z")), "2024-01-01T00:00:00.12Z");
    }
}
