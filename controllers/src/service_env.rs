//! The Service environment variables a pod's containers get (kubelet `getServiceEnvVarMap` in
//! `pkg/kubelet/kubelet_pods.go`, `pkg/kubelet/envvars/envvars.go`): which Services count, and
//! the Docker-link style names and values of each.
//!
//! Upstream gathers them in a Go map, so their order in a container is unspecified; here they
//! come Service by Service in name order, each Service's variables in `envvars.FromServices`
//! order, so the output is stable.

use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;

/// The Services whose variables every pod gets, from `default` (`masterServices`).
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// The variables, in order, for a pod in `namespace`: `default/kubernetes` always, and with
/// `enable_service_links` every Service of the namespace (a same-named one there overrides
/// `default/kubernetes`). Services without a ClusterIP (headless, ExternalName) give none.
///
/// ```
/// use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
/// use kube::api::ObjectMeta;
/// let svc = Service {
///     metadata: ObjectMeta { name: Some("kubernetes".into()), namespace: Some("default".into()), ..Default::default() },
///     spec: Some(ServiceSpec {
///         cluster_ip: Some("10.96.0.1".into()),
///         ports: Some(vec![ServicePort { name: Some("https".into()), port: 443, protocol: Some("TCP".into()), ..Default::default() }]),
///         ..Default::default()
///     }),
///     ..Default::default()
/// };
/// let vars = kplane_controllers::service_env::service_env(&[svc], "web", false);
/// assert_eq!(vars[0], ("KUBERNETES_SERVICE_HOST".to_string(), "10.96.0.1".to_string()));
/// assert_eq!(vars.len(), 8);
/// ```
pub fn service_env(services: &[Service], namespace: &str, enable_service_links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for svc in services.iter().filter(|s| cluster_ip(s).is_some()) {
        let (Some(name), ns) = (svc.metadata.name.as_deref(), svc.metadata.namespace.as_deref().unwrap_or("")) else {
            continue;
        };
        if ns == "default" && MASTER_SERVICES.contains(&name) {
            chosen.entry(name).or_insert(svc);
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, svc);
        }
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for svc in chosen.values() {
        for (name, value) in variables_of(svc) {
            // Upstream's map keeps one value per name.
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => out.push((name, value)),
            }
        }
    }
    out
}

/// `v1helper.IsServiceIPSet`: a ClusterIP that is neither empty nor `None`.
fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec.as_ref()?.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")
}

/// `makeEnvVariableName`: upper case, `-` → `_`.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// `net.JoinHostPort`: IPv6 literals are bracketed.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `envvars.FromServices` for one Service: `_SERVICE_HOST`, `_SERVICE_PORT`, one
/// `_SERVICE_PORT_<NAME>` per named port, then the Docker link variables.
fn variables_of(svc: &Service) -> Vec<(String, String)> {
    let (Some(ip), Some(name)) = (cluster_ip(svc), svc.metadata.name.as_deref()) else { return Vec::new() };
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    // Validation requires a port on a Service with a ClusterIP; upstream would index ports[0].
    let Some(first) = ports.first() else { return Vec::new() };
    let prefix = env_name(name);
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in ports {
        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)), p.port.to_string()));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let protocol = p.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let url = format!("{lower}://{}", join_host_port(ip, p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{upper}", p.port);
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        // Upstream lists the URL variable first.
        let at = out.len() - 3;
        out.insert(at, (port_prefix, url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some(ns.into()), ..Default::default() },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, port, proto)| ServicePort {
                            name: n.map(str::to_string),
                            port: *port,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn kubernetes() -> Service {
        svc("default", "kubernetes", "10.96.0.1", &[(Some("https"), 443, "TCP")])
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_kubernetes_example_of_the_spec() {
        assert_eq!(
            service_env(&[kubernetes()], "default", true),
            pairs(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
                ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
                ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
                ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
                ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
                ("KUBERNETES_PORT_443_TCP_PORT", "443"),
                ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ])
        );
    }

    #[test]
    fn conformance_fooservice_and_mangling() {
        let foo = svc("web", "fooservice", "10.0.0.11", &[(None, 8765, "TCP")]);
        let env = service_env(&[kubernetes(), foo], "web", true);
        let foo: Vec<_> = env.iter().filter(|(n, _)| n.starts_with("FOOSERVICE_")).cloned().collect();
        assert_eq!(
            foo,
            pairs(&[
                ("FOOSERVICE_SERVICE_HOST", "10.0.0.11"),
                ("FOOSERVICE_SERVICE_PORT", "8765"),
                ("FOOSERVICE_PORT", "tcp://10.0.0.11:8765"),
                ("FOOSERVICE_PORT_8765_TCP", "tcp://10.0.0.11:8765"),
                ("FOOSERVICE_PORT_8765_TCP_PROTO", "tcp"),
                ("FOOSERVICE_PORT_8765_TCP_PORT", "8765"),
                ("FOOSERVICE_PORT_8765_TCP_ADDR", "10.0.0.11"),
            ])
        );
        let dashed = svc("web", "foo-bar", "10.0.0.12", &[(Some("http-alt"), 80, "TCP"), (Some("dns"), 53, "UDP")]);
        let env = service_env(&[dashed], "web", true);
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "FOO_BAR_SERVICE_HOST",
                "FOO_BAR_SERVICE_PORT",
                "FOO_BAR_SERVICE_PORT_HTTP_ALT",
                "FOO_BAR_SERVICE_PORT_DNS",
                "FOO_BAR_PORT",
                "FOO_BAR_PORT_80_TCP",
                "FOO_BAR_PORT_80_TCP_PROTO",
                "FOO_BAR_PORT_80_TCP_PORT",
                "FOO_BAR_PORT_80_TCP_ADDR",
                "FOO_BAR_PORT_53_UDP",
                "FOO_BAR_PORT_53_UDP_PROTO",
                "FOO_BAR_PORT_53_UDP_PORT",
                "FOO_BAR_PORT_53_UDP_ADDR",
            ]
        );
        assert!(env.contains(&("FOO_BAR_PORT_53_UDP".into(), "udp://10.0.0.12:53".into())));
    }

    #[test]
    fn which_services_count() {
        let services = [
            kubernetes(),
            svc("web", "a", "10.0.0.2", &[(None, 80, "TCP")]),
            svc("other", "b", "10.0.0.3", &[(None, 80, "TCP")]),
            svc("web", "headless", "None", &[(None, 80, "TCP")]),
            svc("web", "external", "", &[(None, 80, "TCP")]),
        ];
        let hosts = |env: Vec<(String, String)>| -> Vec<String> {
            env.into_iter().filter(|(n, _)| n.ends_with("_SERVICE_HOST")).map(|(n, _)| n).collect()
        };
        assert_eq!(hosts(service_env(&services, "web", true)), ["A_SERVICE_HOST", "KUBERNETES_SERVICE_HOST"]);
        // enableServiceLinks: false keeps only the master services.
        assert_eq!(hosts(service_env(&services, "web", false)), ["KUBERNETES_SERVICE_HOST"]);
        assert_eq!(hosts(service_env(&services, "other", true)), ["B_SERVICE_HOST", "KUBERNETES_SERVICE_HOST"]);
    }

    #[test]
    fn a_same_named_service_overrides_default_kubernetes() {
        let mine = svc("web", "kubernetes", "10.0.0.9", &[(None, 8443, "TCP")]);
        for services in [vec![kubernetes(), mine.clone()], vec![mine.clone(), kubernetes()]] {
            let env = service_env(&services, "web", true);
            assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.0.0.9".into())), "{env:?}");
            assert!(!env.iter().any(|(n, _)| n == "KUBERNETES_SERVICE_PORT_HTTPS"));
            // Without service links the namespace's Service does not count.
            let env = service_env(&services, "web", false);
            assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())));
        }
    }

    #[test]
    fn ipv6_is_bracketed_in_urls_only() {
        let v6 = svc("web", "v6", "fd00::1", &[(None, 80, "TCP")]);
        let env = service_env(&[v6], "web", true);
        assert!(env.contains(&("V6_PORT".into(), "tcp://[fd00::1]:80".into())));
        assert!(env.contains(&("V6_PORT_80_TCP".into(), "tcp://[fd00::1]:80".into())));
        assert!(env.contains(&("V6_PORT_80_TCP_ADDR".into(), "fd00::1".into())));
        assert!(env.contains(&("V6_SERVICE_HOST".into(), "fd00::1".into())));
    }

    #[test]
    fn protocol_defaults_to_tcp_and_portless_services_give_nothing() {
        let mut s = svc("web", "p", "10.0.0.5", &[(None, 80, "SCTP")]);
        if let Some(p) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            p[0].protocol = None;
        }
        assert!(service_env(&[s], "web", true).contains(&("P_PORT".into(), "tcp://10.0.0.5:80".into())));
        let none = svc("web", "q", "10.0.0.6", &[]);
        assert!(service_env(&[none], "web", true).is_empty());
    }
}
