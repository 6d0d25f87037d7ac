//! Table-driven tests for Service defaulting, IP family initialisation, type transitions and validation
//! (spec `service-semantics.md` §1.2–§1.5 and §1.7; upstream's `defaults_test.go`, `validation_test.go`,
//! `strategy_test.go` and `alloc_test.go`).

use super::super::defaults::{IpFamily, drop_type_dependent_fields, init_ip_families, set_defaults};
use super::{ValidationContext, validate_service, validate_service_status_update, validate_service_update};
use crate::error::FieldError;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use std::collections::BTreeMap;

const V4: IpFamily = IpFamily::V4;
const V6: IpFamily = IpFamily::V6;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

// Messages built from the format helpers' upstream texts (kept as macros so the tables stay `'static`).
macro_rules! const_format_label {
    ($v:literal) => {
        concat!(
            "Invalid value: \"",
            $v,
            "\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    };
}
macro_rules! const_format_subdomain {
    ($v:literal) => {
        concat!(
            "Invalid value: \"",
            $v,
            "\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    };
}
macro_rules! const_format_qualified {
    ($v:literal) => {
        concat!(
            "Invalid value: \"",
            $v,
            "\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    };
}
macro_rules! const_format_label_value {
    ($v:literal) => {
        concat!(
            "Invalid value: \"",
            $v,
            "\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    };
}
macro_rules! const_format_ip {
    ($v:literal) => {
        concat!("Invalid value: \"", $v, "\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    };
}
macro_rules! const_format_cidr {
    ($v:literal) => {
        concat!("Invalid value: \"", $v, "\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    };
}

// ---------------------------------------------------------------------------------------------------------------
// Builders.

/// A valid, defaulted, allocated single-stack ClusterIP service.
fn base() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "svc", "namespace": "ns"},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": "web"},
            "clusterIP": "10.0.0.10",
            "clusterIPs": ["10.0.0.10"],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }))
    .expect("base service")
}

/// The base service made dual-stack (`RequireDualStack`, IPv4 primary).
fn dual() -> Service {
    let mut s = base();
    set_dual(&mut s);
    s
}

fn spec(s: &mut Service) -> &mut ServiceSpec {
    s.spec.get_or_insert_with(ServiceSpec::default)
}

fn port(s: &mut Service, i: usize) -> &mut ServicePort {
    &mut spec(s).ports.get_or_insert_with(Vec::new)[i]
}

fn st(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn add_port(s: &mut Service, name: &str, number: i32, protocol: &str) {
    spec(s).ports.get_or_insert_with(Vec::new).push(ServicePort {
        name: st(name),
        port: number,
        protocol: st(protocol),
        target_port: Some(IntOrString::Int(number)),
        ..Default::default()
    });
}

fn set_ips(s: &mut Service, ips: &[&str], families: &[&str]) {
    let sp = spec(s);
    sp.cluster_ip = ips.first().map(|s| s.to_string());
    sp.cluster_ips = strs(ips);
    sp.ip_families = strs(families);
}

fn set_dual(s: &mut Service) {
    set_ips(s, &["10.0.0.10", "fd00::10"], &["IPv4", "IPv6"]);
    spec(s).ip_family_policy = st("RequireDualStack");
}

fn set_headless(s: &mut Service) {
    set_ips(s, &["None"], &["IPv4"]);
}

fn set_np(s: &mut Service) {
    let sp = spec(s);
    sp.type_ = st("NodePort");
    sp.external_traffic_policy = st("Cluster");
}

fn set_lb(s: &mut Service) {
    let sp = spec(s);
    sp.type_ = st("LoadBalancer");
    sp.external_traffic_policy = st("Cluster");
    sp.allocate_load_balancer_node_ports = Some(true);
}

fn set_lb_local(s: &mut Service, hc: i32) {
    set_lb(s);
    let sp = spec(s);
    sp.external_traffic_policy = st("Local");
    sp.health_check_node_port = Some(hc);
}

fn set_external_name(s: &mut Service) {
    let sp = spec(s);
    sp.type_ = st("ExternalName");
    sp.external_name = st("db.example.com");
    sp.cluster_ip = None;
    sp.cluster_ips = None;
    sp.ip_families = None;
    sp.ip_family_policy = None;
}

fn set_external_ip(s: &mut Service, ip: &str) {
    let sp = spec(s);
    sp.external_ips = strs(&[ip]);
    sp.external_traffic_policy = st("Cluster");
}

fn annotate(s: &mut Service, k: &str, v: &str) {
    s.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(k.to_string(), v.to_string());
}

fn ingress(s: &mut Service, ip: Option<&str>, hostname: Option<&str>, mode: Option<&str>) {
    let status = s.status.get_or_insert_with(ServiceStatus::default);
    let lb = status.load_balancer.get_or_insert_with(LoadBalancerStatus::default);
    lb.ingress.get_or_insert_with(Vec::new).push(LoadBalancerIngress {
        ip: ip.map(str::to_string),
        hostname: hostname.map(str::to_string),
        ip_mode: mode.map(str::to_string),
        ..Default::default()
    });
}

fn dual_ctx() -> ValidationContext {
    ValidationContext { ip_families: vec![V4, V6], ..Default::default() }
}

type Want = &'static [(&'static str, &'static str, &'static str)];

fn render(errs: &[FieldError]) -> Vec<(String, String, String)> {
    errs.iter().map(|e| (e.field.clone(), e.kind.cause_reason().to_string(), e.body())).collect()
}

fn check(name: &str, errs: &[FieldError], want: Want) {
    let got = render(errs);
    let want: Vec<(String, String, String)> =
        want.iter().map(|(f, r, b)| (f.to_string(), r.to_string(), b.to_string())).collect();
    assert_eq!(got, want, "case {name}");
}

// ---------------------------------------------------------------------------------------------------------------
// §1.3 ValidateService.

struct Case {
    name: &'static str,
    mutate: fn(&mut Service),
    want: Want,
}

const INVALID: &str = "FieldValueInvalid";
const REQUIRED: &str = "FieldValueRequired";
const FORBIDDEN: &str = "FieldValueForbidden";
const DUPLICATE: &str = "FieldValueDuplicate";
const NOT_SUPPORTED: &str = "FieldValueNotSupported";

fn validate_cases() -> Vec<Case> {
    vec![
        // Valid variants.
        Case { name: "base is valid", mutate: |_| {}, want: &[] },
        Case { name: "dual-stack is valid", mutate: set_dual, want: &[] },
        Case {
            name: "headless without ports is valid",
            mutate: |s| {
                set_headless(s);
                spec(s).ports = None;
            },
            want: &[],
        },
        Case {
            name: "headless targetPort differing from port is tolerated",
            mutate: |s| {
                set_headless(s);
                port(s, 0).target_port = Some(IntOrString::Int(9999));
            },
            want: &[],
        },
        Case {
            name: "ExternalName with ports and a trailing dot is valid",
            mutate: |s| {
                set_external_name(s);
                spec(s).external_name = st("db.example.com.");
            },
            want: &[],
        },
        Case {
            name: "53/TCP and 53/UDP may coexist",
            mutate: |s| {
                add_port(s, "dns-tcp", 53, "TCP");
                add_port(s, "dns-udp", 53, "UDP");
            },
            want: &[],
        },
        Case {
            name: "same nodePort on different protocols is legal",
            mutate: |s| {
                set_np(s);
                add_port(s, "dns-udp", 53, "UDP");
                port(s, 0).node_port = Some(30053);
                port(s, 1).node_port = Some(30053);
            },
            want: &[],
        },
        Case {
            name: "space-padded source ranges are tolerated",
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_source_ranges = strs(&[" 10.0.0.0/8 ", "fd00::/64"]);
            },
            want: &[],
        },
        // Annotations.
        Case {
            name: "topology-mode differs from topology-aware-hints",
            mutate: |s| {
                annotate(s, "service.kubernetes.io/topology-aware-hints", "Disabled");
                annotate(s, "service.kubernetes.io/topology-mode", "Auto");
            },
            want: &[(
                "metadata.annotations[service.kubernetes.io/topology-mode]",
                INVALID,
                "Invalid value: \"Auto\": must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            )],
        },
        // spec.ports.
        Case {
            name: "no ports",
            mutate: |s| spec(s).ports = None,
            want: &[("spec.ports", REQUIRED, "Required value")],
        },
        // Type-specific.
        Case {
            name: "headless LoadBalancer",
            mutate: |s| {
                set_lb(s);
                set_headless(s);
            },
            want: &[(
                "spec.clusterIPs[0]",
                INVALID,
                "Invalid value: \"None\": may not be set to 'None' for LoadBalancer services",
            )],
        },
        Case {
            name: "headless NodePort",
            mutate: |s| {
                set_np(s);
                set_headless(s);
            },
            want: &[(
                "spec.clusterIPs[0]",
                INVALID,
                "Invalid value: \"None\": may not be set to 'None' for NodePort services",
            )],
        },
        Case {
            name: "ExternalName with clusterIPs",
            mutate: |s| {
                set_external_name(s);
                spec(s).cluster_ip = st("10.0.0.10");
                spec(s).cluster_ips = strs(&["10.0.0.10"]);
            },
            want: &[("spec.clusterIPs", FORBIDDEN, "Forbidden: may not be set for ExternalName services")],
        },
        Case {
            name: "ExternalName with ipFamilies",
            mutate: |s| {
                set_external_name(s);
                spec(s).ip_families = strs(&["IPv4"]);
            },
            want: &[("spec.ipFamilies", FORBIDDEN, "Forbidden: may not be set for ExternalName services")],
        },
        Case {
            name: "ExternalName with ipFamilyPolicy",
            mutate: |s| {
                set_external_name(s);
                spec(s).ip_family_policy = st("SingleStack");
            },
            want: &[("spec.ipFamilyPolicy", FORBIDDEN, "Forbidden: may not be set for ExternalName services")],
        },
        Case {
            name: "ExternalName without externalName",
            mutate: |s| {
                set_external_name(s);
                spec(s).external_name = st(".");
            },
            want: &[("spec.externalName", REQUIRED, "Required value")],
        },
        Case {
            name: "ExternalName with a bad name (only one trailing dot is stripped)",
            mutate: |s| {
                set_external_name(s);
                spec(s).external_name = st("db..");
            },
            want: &[("spec.externalName", INVALID, const_format_subdomain!("db."))],
        },
        // Ports.
        Case {
            name: "second port without a name",
            mutate: |s| {
                add_port(s, "", 81, "TCP");
                port(s, 1).name = None;
            },
            want: &[("spec.ports[1].name", REQUIRED, "Required value")],
        },
        Case {
            name: "port name not a DNS-1123 label",
            mutate: |s| port(s, 0).name = st("HTTP"),
            want: &[("spec.ports[0].name", INVALID, const_format_label!("HTTP"))],
        },
        Case {
            name: "duplicate port name",
            mutate: |s| add_port(s, "http", 81, "TCP"),
            want: &[("spec.ports[1].name", DUPLICATE, "Duplicate value: \"http\"")],
        },
        Case {
            name: "port 0",
            mutate: |s| port(s, 0).port = 0,
            want: &[("spec.ports[0].port", INVALID, "Invalid value: 0: must be between 1 and 65535, inclusive")],
        },
        Case {
            name: "port 65536",
            mutate: |s| port(s, 0).port = 65536,
            want: &[("spec.ports[0].port", INVALID, "Invalid value: 65536: must be between 1 and 65535, inclusive")],
        },
        Case {
            name: "no protocol",
            mutate: |s| port(s, 0).protocol = None,
            want: &[("spec.ports[0].protocol", REQUIRED, "Required value")],
        },
        Case {
            name: "unsupported protocol",
            mutate: |s| port(s, 0).protocol = st("HTTP"),
            want: &[(
                "spec.ports[0].protocol",
                NOT_SUPPORTED,
                "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            )],
        },
        Case {
            name: "targetPort out of range",
            mutate: |s| port(s, 0).target_port = Some(IntOrString::Int(70000)),
            want: &[(
                "spec.ports[0].targetPort",
                INVALID,
                "Invalid value: 70000: must be between 1 and 65535, inclusive",
            )],
        },
        Case {
            name: "targetPort int 0 (not defaulted)",
            mutate: |s| port(s, 0).target_port = Some(IntOrString::Int(0)),
            want: &[("spec.ports[0].targetPort", INVALID, "Invalid value: 0: must be between 1 and 65535, inclusive")],
        },
        Case {
            name: "targetPort name not an IANA_SVC_NAME",
            mutate: |s| port(s, 0).target_port = Some(IntOrString::String("-http".into())),
            want: &[(
                "spec.ports[0].targetPort",
                INVALID,
                "Invalid value: \"-http\": must not begin or end with a hyphen",
            )],
        },
        Case {
            name: "appProtocol not a qualified name",
            mutate: |s| port(s, 0).app_protocol = st("bad proto"),
            want: &[("spec.ports[0].appProtocol", INVALID, const_format_qualified!("bad proto"))],
        },
        // Selector.
        Case {
            name: "selector value not a label value",
            mutate: |s| {
                spec(s).selector = Some(BTreeMap::from([("app".to_string(), "bad value!".to_string())]));
            },
            want: &[("spec.selector", INVALID, const_format_label_value!("bad value!"))],
        },
        // Session affinity.
        Case {
            name: "no sessionAffinity",
            mutate: |s| spec(s).session_affinity = None,
            want: &[("spec.sessionAffinity", REQUIRED, "Required value")],
        },
        Case {
            name: "unsupported sessionAffinity",
            mutate: |s| spec(s).session_affinity = st("Sticky"),
            want: &[(
                "spec.sessionAffinity",
                NOT_SUPPORTED,
                "Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
            )],
        },
        Case {
            name: "ClientIP without sessionAffinityConfig",
            mutate: |s| spec(s).session_affinity = st("ClientIP"),
            want: &[("spec.sessionAffinityConfig", REQUIRED, "Required value: when session affinity type is ClientIP")],
        },
        Case {
            name: "ClientIP without clientIP",
            mutate: |s| {
                spec(s).session_affinity = st("ClientIP");
                spec(s).session_affinity_config = Some(SessionAffinityConfig { client_ip: None });
            },
            want: &[(
                "spec.sessionAffinityConfig.clientIP",
                REQUIRED,
                "Required value: when session affinity type is ClientIP",
            )],
        },
        Case {
            name: "ClientIP without timeoutSeconds",
            mutate: |s| {
                spec(s).session_affinity = st("ClientIP");
                spec(s).session_affinity_config =
                    Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: None }) });
            },
            want: &[(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                REQUIRED,
                "Required value: when session affinity type is ClientIP",
            )],
        },
        Case {
            name: "ClientIP timeout 0",
            mutate: |s| {
                spec(s).session_affinity = st("ClientIP");
                spec(s).session_affinity_config =
                    Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(0) }) });
            },
            want: &[(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                INVALID,
                "Invalid value: 0: must be greater than 0 and less than 86400",
            )],
        },
        Case {
            name: "ClientIP timeout above a day",
            mutate: |s| {
                spec(s).session_affinity = st("ClientIP");
                spec(s).session_affinity_config =
                    Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(86401) }) });
            },
            want: &[(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                INVALID,
                "Invalid value: 86401: must be greater than 0 and less than 86400",
            )],
        },
        Case {
            name: "sessionAffinityConfig with None",
            mutate: |s| {
                spec(s).session_affinity_config =
                    Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(10) }) });
            },
            want: &[(
                "spec.sessionAffinityConfig",
                FORBIDDEN,
                "Forbidden: must not be set when session affinity is None",
            )],
        },
        // ClusterIP family fields.
        Case {
            name: "clusterIP without clusterIPs",
            mutate: |s| spec(s).cluster_ips = None,
            want: &[("spec.clusterIPs", REQUIRED, "Required value")],
        },
        Case {
            name: "clusterIPs[0] differs from clusterIP",
            mutate: |s| spec(s).cluster_ips = strs(&["10.0.0.11"]),
            want: &[("spec.clusterIPs", INVALID, "Invalid value: [\"10.0.0.11\"]: first value must match `clusterIP`")],
        },
        Case {
            name: "clusterIPs without clusterIP",
            mutate: |s| spec(s).cluster_ip = None,
            want: &[(
                "spec.clusterIPs",
                INVALID,
                "Invalid value: [\"10.0.0.10\"]: must be empty when `clusterIP` is not specified",
            )],
        },
        Case {
            name: "unsupported ipFamily",
            mutate: |s| spec(s).ip_families = strs(&["IPv5"]),
            want: &[(
                "spec.ipFamilies[0]",
                NOT_SUPPORTED,
                "Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
            )],
        },
        Case {
            name: "duplicate ipFamily",
            mutate: |s| spec(s).ip_families = strs(&["IPv4", "IPv4"]),
            want: &[("spec.ipFamilies[1]", DUPLICATE, "Duplicate value: \"IPv4\"")],
        },
        Case {
            name: "unsupported ipFamilyPolicy",
            mutate: |s| spec(s).ip_family_policy = st("DualStack"),
            want: &[(
                "spec.ipFamilyPolicy",
                NOT_SUPPORTED,
                "Unsupported value: \"DualStack\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
            )],
        },
        Case {
            name: "None not alone",
            mutate: |s| set_ips(s, &["None", "10.0.0.10"], &["IPv4"]),
            want: &[(
                "spec.clusterIPs",
                INVALID,
                "Invalid value: [\"None\",\"10.0.0.10\"]: 'None' must be the first and only value",
            )],
        },
        Case {
            name: "clusterIPs entry not an IP",
            mutate: |s| set_ips(s, &["10.0.0.300"], &["IPv4"]),
            want: &[("spec.clusterIPs[0]", INVALID, const_format_ip!("10.0.0.300"))],
        },
        Case {
            name: "three clusterIPs",
            mutate: |s| {
                set_dual(s);
                spec(s).cluster_ips = strs(&["10.0.0.10", "fd00::10", "10.0.0.11"]);
            },
            want: &[(
                "spec.clusterIPs",
                INVALID,
                "Invalid value: [\"10.0.0.10\",\"fd00::10\",\"10.0.0.11\"]: may only hold up to 2 values",
            )],
        },
        Case {
            name: "two clusterIPs of one family",
            mutate: |s| {
                set_dual(s);
                set_ips(s, &["10.0.0.10", "10.0.0.11"], &["IPv4", "IPv6"]);
            },
            want: &[
                (
                    "spec.clusterIPs",
                    INVALID,
                    "Invalid value: [\"10.0.0.10\",\"10.0.0.11\"]: may specify no more than one IP for each IP family",
                ),
                (
                    "spec.clusterIPs[1]",
                    INVALID,
                    "Invalid value: \"10.0.0.11\": expected an IPv6 value as indicated by `ipFamilies[1]`",
                ),
            ],
        },
        Case {
            name: "clusterIP of the wrong family",
            mutate: |s| set_ips(s, &["fd00::1"], &["IPv4"]),
            want: &[(
                "spec.clusterIPs[0]",
                INVALID,
                "Invalid value: \"fd00::1\": expected an IPv4 value as indicated by `ipFamilies[0]`",
            )],
        },
        // External IPs.
        Case {
            name: "externalIP not an IP",
            mutate: |s| set_external_ip(s, "1.2.3"),
            want: &[("spec.externalIPs[0]", INVALID, const_format_ip!("1.2.3"))],
        },
        Case {
            name: "externalIP unspecified",
            mutate: |s| set_external_ip(s, "0.0.0.0"),
            want: &[("spec.externalIPs[0]", INVALID, "Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)")],
        },
        Case {
            name: "externalIP loopback",
            mutate: |s| set_external_ip(s, "127.0.0.1"),
            want: &[(
                "spec.externalIPs[0]",
                INVALID,
                "Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            )],
        },
        Case {
            name: "externalIP IPv6 loopback",
            mutate: |s| set_external_ip(s, "::1"),
            want: &[(
                "spec.externalIPs[0]",
                INVALID,
                "Invalid value: \"::1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            )],
        },
        Case {
            name: "externalIP link-local",
            mutate: |s| set_external_ip(s, "169.254.169.254"),
            want: &[(
                "spec.externalIPs[0]",
                INVALID,
                "Invalid value: \"169.254.169.254\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            )],
        },
        Case {
            name: "externalIP link-local multicast",
            mutate: |s| set_external_ip(s, "ff02::1"),
            want: &[(
                "spec.externalIPs[0]",
                INVALID,
                "Invalid value: \"ff02::1\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
            )],
        },
        Case {
            name: "externalIP IPv4-mapped loopback (sloppy parse)",
            mutate: |s| set_external_ip(s, "::ffff:127.0.0.1"),
            want: &[(
                "spec.externalIPs[0]",
                INVALID,
                "Invalid value: \"::ffff:127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            )],
        },
        // Type.
        Case { name: "no type", mutate: |s| spec(s).type_ = None, want: &[("spec.type", REQUIRED, "Required value")] },
        Case {
            name: "unsupported type",
            mutate: |s| spec(s).type_ = st("Foo"),
            want: &[(
                "spec.type",
                NOT_SUPPORTED,
                "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            )],
        },
        // NodePorts.
        Case {
            name: "nodePort on ClusterIP",
            mutate: |s| port(s, 0).node_port = Some(30080),
            want: &[("spec.ports[0].nodePort", FORBIDDEN, "Forbidden: may not be used when `type` is 'ClusterIP'")],
        },
        Case {
            name: "duplicate nodePort",
            mutate: |s| {
                set_np(s);
                add_port(s, "https", 443, "TCP");
                port(s, 0).node_port = Some(30080);
                port(s, 1).node_port = Some(30080);
            },
            want: &[("spec.ports[1].nodePort", DUPLICATE, "Duplicate value: 30080")],
        },
        Case {
            name: "duplicate port",
            mutate: |s| add_port(s, "http2", 80, "TCP"),
            want: &[(
                "spec.ports[1]",
                DUPLICATE,
                "Duplicate value: {\"Name\":\"\",\"Protocol\":\"TCP\",\"AppProtocol\":null,\"Port\":80,\"TargetPort\":0,\"NodePort\":0}",
            )],
        },
        // loadBalancerSourceRanges.
        Case {
            name: "source ranges on ClusterIP",
            mutate: |s| spec(s).load_balancer_source_ranges = strs(&["10.0.0.0/8"]),
            want: &[(
                "spec.LoadBalancerSourceRanges",
                FORBIDDEN,
                "Forbidden: may only be used when `type` is 'LoadBalancer'",
            )],
        },
        Case {
            name: "source range not a CIDR",
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_source_ranges = strs(&["10.0.0.0/8", "10.0.0.0/33"]);
            },
            want: &[("spec.LoadBalancerSourceRanges[1]", INVALID, const_format_cidr!("10.0.0.0/33"))],
        },
        Case {
            name: "source-ranges annotation with a bad CIDR",
            mutate: |s| {
                set_lb(s);
                annotate(s, "service.beta.kubernetes.io/load-balancer-source-ranges", "10.0.0.0/8, bad");
            },
            want: &[(
                "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]",
                INVALID,
                const_format_cidr!("bad"),
            )],
        },
        Case {
            name: "source-ranges annotation on ClusterIP",
            mutate: |s| annotate(s, "service.beta.kubernetes.io/load-balancer-source-ranges", "10.0.0.0/8"),
            want: &[(
                "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]",
                FORBIDDEN,
                "Forbidden: may only be used when `type` is 'LoadBalancer'",
            )],
        },
        // allocateLoadBalancerNodePorts.
        Case {
            name: "allocateLoadBalancerNodePorts on ClusterIP",
            mutate: |s| spec(s).allocate_load_balancer_node_ports = Some(true),
            want: &[(
                "spec.allocateLoadBalancerNodePorts",
                FORBIDDEN,
                "Forbidden: may only be used when `type` is 'LoadBalancer'",
            )],
        },
        Case {
            name: "LoadBalancer without allocateLoadBalancerNodePorts",
            mutate: |s| {
                set_lb(s);
                spec(s).allocate_load_balancer_node_ports = None;
            },
            want: &[("allocateLoadBalancerNodePorts", REQUIRED, "Required value")],
        },
        // loadBalancerClass.
        Case {
            name: "loadBalancerClass on ClusterIP",
            mutate: |s| spec(s).load_balancer_class = st("example.com/internal-vip"),
            want: &[("spec.loadBalancerClass", FORBIDDEN, "Forbidden: may only be used when `type` is 'LoadBalancer'")],
        },
        Case {
            name: "loadBalancerClass not a qualified name",
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_class = st("bad proto");
            },
            want: &[("spec.loadBalancerClass", INVALID, const_format_qualified!("bad proto"))],
        },
        // externalTrafficPolicy and healthCheckNodePort.
        Case {
            name: "externalTrafficPolicy on an internal ClusterIP",
            mutate: |s| spec(s).external_traffic_policy = st("Cluster"),
            want: &[(
                "spec.externalTrafficPolicy",
                INVALID,
                "Invalid value: \"Cluster\": may only be set for externally-accessible services",
            )],
        },
        Case {
            name: "NodePort without externalTrafficPolicy",
            mutate: |s| {
                set_np(s);
                spec(s).external_traffic_policy = None;
            },
            want: &[("spec.externalTrafficPolicy", REQUIRED, "Required value")],
        },
        Case {
            name: "ClusterIP with externalIPs needs externalTrafficPolicy",
            mutate: |s| spec(s).external_ips = strs(&["192.0.2.1"]),
            want: &[("spec.externalTrafficPolicy", REQUIRED, "Required value")],
        },
        Case {
            name: "unsupported externalTrafficPolicy",
            mutate: |s| {
                set_np(s);
                spec(s).external_traffic_policy = st("Global");
            },
            want: &[(
                "spec.externalTrafficPolicy",
                NOT_SUPPORTED,
                "Unsupported value: \"Global\": supported values: \"Cluster\", \"Local\"",
            )],
        },
        Case {
            name: "healthCheckNodePort without LoadBalancer+Local",
            mutate: |s| {
                set_lb(s);
                spec(s).health_check_node_port = Some(30001);
            },
            want: &[(
                "spec.healthCheckNodePort",
                INVALID,
                "Invalid value: 30001: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            )],
        },
        Case {
            name: "LoadBalancer+Local without healthCheckNodePort",
            mutate: |s| set_lb_local(s, 0),
            want: &[("spec.healthCheckNodePort", REQUIRED, "Required value")],
        },
        Case {
            name: "healthCheckNodePort out of range",
            mutate: |s| set_lb_local(s, 70000),
            want: &[(
                "spec.healthCheckNodePort",
                INVALID,
                "Invalid value: 70000: must be between 1 and 65535, inclusive",
            )],
        },
        // internalTrafficPolicy and trafficDistribution.
        Case {
            name: "no internalTrafficPolicy",
            mutate: |s| spec(s).internal_traffic_policy = None,
            want: &[("spec.internalTrafficPolicy", REQUIRED, "Required value")],
        },
        Case {
            name: "ExternalName may omit internalTrafficPolicy",
            mutate: |s| {
                set_external_name(s);
                spec(s).internal_traffic_policy = None;
            },
            want: &[],
        },
        Case {
            name: "unsupported internalTrafficPolicy",
            mutate: |s| spec(s).internal_traffic_policy = st("Global"),
            want: &[(
                "spec.internalTrafficPolicy",
                NOT_SUPPORTED,
                "Unsupported value: \"Global\": supported values: \"Cluster\", \"Local\"",
            )],
        },
        Case {
            name: "unsupported trafficDistribution",
            mutate: |s| spec(s).traffic_distribution = st("PreferSameZone"),
            want: &[(
                "spec.trafficDistribution",
                NOT_SUPPORTED,
                "Unsupported value: \"PreferSameZone\": supported values: \"PreferClose\"",
            )],
        },
        Case {
            name: "PreferClose is supported",
            mutate: |s| spec(s).traffic_distribution = st("PreferClose"),
            want: &[],
        },
    ]
}

#[test]
fn message_macros_match_the_shared_helpers() {
    // The macros above spell out upstream's texts; they must agree with `crate::validation`'s helpers.
    assert_eq!(crate::validation::is_dns1123_label("HTTP"), vec![DNS1123_LABEL_MSG.to_string()]);
    assert_eq!(crate::validation::is_dns1123_subdomain("db."), vec![DNS1123_SUBDOMAIN_MSG.to_string()]);
    assert_eq!(crate::validation::is_qualified_name("bad proto"), vec![QUALIFIED_NAME_MSG.to_string()]);
    assert_eq!(crate::validation::is_valid_label_value("bad value!"), vec![LABEL_VALUE_MSG.to_string()]);
    assert_eq!(crate::validation::is_valid_port_num(0), vec![PORT_RANGE.to_string()]);
    assert!(const_format_label!("HTTP").ends_with(DNS1123_LABEL_MSG));
    assert!(const_format_subdomain!("db.").ends_with(DNS1123_SUBDOMAIN_MSG));
    assert!(const_format_qualified!("x").ends_with(QUALIFIED_NAME_MSG));
    assert!(const_format_label_value!("x").ends_with(LABEL_VALUE_MSG));
    assert!(const_format_ip!("x").ends_with(IP_MSG));
    assert!(const_format_cidr!("x").ends_with(CIDR_MSG));
}

#[test]
fn validate_service_rows() {
    let ctx = dual_ctx();
    let cases = validate_cases();
    assert!(cases.len() >= 70, "{} cases", cases.len());
    for case in cases {
        let mut s = base();
        (case.mutate)(&mut s);
        check(case.name, &validate_service(&s, &ctx), case.want);
    }
}

#[test]
fn ip_family_not_served_by_the_cluster() {
    let v4_only = ValidationContext { ip_families: vec![V4], ..Default::default() };
    let mut s = base();
    set_ips(&mut s, &["fd00::10"], &["IPv6"]);
    check(
        "IPv6 on an IPv4 cluster",
        &validate_service(&s, &v4_only),
        &[("spec.ipFamilies[0]", INVALID, "Invalid value: \"IPv6\": not configured on this cluster")],
    );
    // Headless selectorless services may carry both families even on a single-stack cluster.
    let mut s = base();
    set_ips(&mut s, &["None"], &["IPv4", "IPv6"]);
    spec(&mut s).selector = None;
    spec(&mut s).ip_family_policy = st("RequireDualStack");
    check("headless selectorless", &validate_service(&s, &v4_only), &[]);
    // An update that keeps the families is not re-checked.
    let mut old = base();
    set_ips(&mut old, &["fd00::10"], &["IPv6"]);
    let mut new = old.clone();
    new.metadata.labels = Some(BTreeMap::from([("a".to_string(), "b".to_string())]));
    check("unchanged families", &validate_service_update(&new, &old, &v4_only), &[]);
}

#[test]
fn strict_ip_validation_gate() {
    let strict = ValidationContext { strict_ip_validation: true, ..dual_ctx() };
    let mut s = base();
    set_external_ip(&mut s, "192.000.2.1");
    // Sloppy by default (gate off): leading zeros are accepted.
    check("sloppy", &validate_service(&s, &dual_ctx()), &[]);
    check(
        "strict",
        &validate_service(&s, &strict),
        &[("spec.externalIPs[0]", INVALID, "Invalid value: \"192.000.2.1\": must not have leading 0s")],
    );
    // On update, a value the old object already had is accepted.
    check("ratchet", &validate_service_update(&s, &s.clone(), &strict), &[]);
    let mut s = base();
    set_lb(&mut s);
    spec(&mut s).load_balancer_source_ranges = strs(&["10.0.0.1/8"]);
    check("sloppy cidr", &validate_service(&s, &dual_ctx()), &[]);
    check(
        "strict cidr",
        &validate_service(&s, &strict),
        &[(
            "spec.LoadBalancerSourceRanges[0]",
            INVALID,
            "Invalid value: \"10.0.0.1/8\": must not have bits set beyond the prefix length",
        )],
    );
}

// ---------------------------------------------------------------------------------------------------------------
// §1.4 ValidateServiceUpdate.

struct UpdateCase {
    name: &'static str,
    old: fn() -> Service,
    mutate: fn(&mut Service),
    want: Want,
}

fn update_cases() -> Vec<UpdateCase> {
    vec![
        UpdateCase { name: "no change", old: base, mutate: |_| {}, want: &[] },
        UpdateCase {
            name: "clusterIP changed",
            old: base,
            mutate: |s| set_ips(s, &["10.0.0.11"], &["IPv4"]),
            want: &[("spec.clusterIPs[0]", INVALID, "Invalid value: [\"10.0.0.11\"]: may not change once set")],
        },
        UpdateCase {
            name: "secondary clusterIP changed",
            old: dual,
            mutate: |s| set_ips(s, &["10.0.0.10", "fd00::11"], &["IPv4", "IPv6"]),
            want: &[(
                "spec.clusterIPs[1]",
                INVALID,
                "Invalid value: [\"10.0.0.10\",\"fd00::11\"]: may not change once set",
            )],
        },
        UpdateCase {
            name: "primary clusterIP unset",
            old: base,
            mutate: |s| {
                spec(s).cluster_ip = None;
                spec(s).cluster_ips = None;
            },
            want: &[("spec.clusterIPs[0]", INVALID, "Invalid value: null: primary clusterIP can not be unset")],
        },
        UpdateCase {
            name: "downgrade changing the primary",
            old: dual,
            mutate: |s| {
                set_ips(s, &["10.0.0.11"], &["IPv4"]);
                spec(s).ip_family_policy = st("SingleStack");
            },
            want: &[("spec.clusterIPs[0]", INVALID, "Invalid value: [\"10.0.0.11\"]: may not change once set")],
        },
        UpdateCase {
            name: "downgrade without SingleStack",
            old: dual,
            mutate: |s| spec(s).cluster_ips = strs(&["10.0.0.10"]),
            want: &[(
                "spec.ipFamilyPolicy",
                INVALID,
                "Invalid value: \"RequireDualStack\": must be set to 'SingleStack' when releasing the secondary clusterIP",
            )],
        },
        UpdateCase {
            name: "downgrade with SingleStack",
            old: dual,
            mutate: |s| {
                set_ips(s, &["10.0.0.10"], &["IPv4"]);
                spec(s).ip_family_policy = st("SingleStack");
            },
            want: &[],
        },
        UpdateCase { name: "upgrade keeping the primary", old: base, mutate: set_dual, want: &[] },
        UpdateCase {
            name: "upgrade changing the primary",
            old: base,
            mutate: |s| {
                set_dual(s);
                set_ips(s, &["10.0.0.11", "fd00::11"], &["IPv4", "IPv6"]);
            },
            want: &[(
                "spec.clusterIPs[0]",
                INVALID,
                "Invalid value: [\"10.0.0.11\",\"fd00::11\"]: may not change once set",
            )],
        },
        UpdateCase {
            name: "ipFamilies swapped (each change reported at ipFamilies[0])",
            old: dual,
            mutate: |s| spec(s).ip_families = strs(&["IPv6", "IPv4"]),
            want: &[
                ("spec.ipFamilies[0]", INVALID, "Invalid value: [\"IPv6\",\"IPv4\"]: may not change once set"),
                ("spec.ipFamilies[0]", INVALID, "Invalid value: [\"IPv6\",\"IPv4\"]: may not change once set"),
                (
                    "spec.clusterIPs[0]",
                    INVALID,
                    "Invalid value: \"10.0.0.10\": expected an IPv6 value as indicated by `ipFamilies[0]`",
                ),
                (
                    "spec.clusterIPs[1]",
                    INVALID,
                    "Invalid value: \"fd00::10\": expected an IPv4 value as indicated by `ipFamilies[1]`",
                ),
            ],
        },
        UpdateCase {
            name: "ipFamilies downgraded changing the primary without SingleStack",
            old: dual,
            mutate: |s| spec(s).ip_families = strs(&["IPv6"]),
            want: &[
                ("spec.ipFamilies[0]", INVALID, "Invalid value: [\"10.0.0.10\",\"fd00::10\"]: may not change once set"),
                (
                    "spec.ipFamilyPolicy",
                    INVALID,
                    "Invalid value: \"RequireDualStack\": must be set to 'SingleStack' when releasing the secondary ipFamily",
                ),
                (
                    "spec.clusterIPs[0]",
                    INVALID,
                    "Invalid value: \"10.0.0.10\": expected an IPv6 value as indicated by `ipFamilies[0]`",
                ),
            ],
        },
        UpdateCase {
            name: "primary ipFamily unset",
            old: base,
            mutate: |s| set_ips(s, &[], &[]),
            want: &[
                ("spec.clusterIPs[0]", INVALID, "Invalid value: []: primary clusterIP can not be unset"),
                ("spec.ipFamilies[0]", INVALID, "Invalid value: []: primary ipFamily can not be unset"),
            ],
        },
        UpdateCase {
            name: "ipFamilies upgraded changing the primary",
            old: base,
            mutate: |s| {
                spec(s).ip_families = strs(&["IPv6", "IPv4"]);
                spec(s).ip_family_policy = st("PreferDualStack");
            },
            want: &[
                ("spec.ipFamilies[0]", INVALID, "Invalid value: [\"10.0.0.10\"]: may not change once set"),
                (
                    "spec.clusterIPs[0]",
                    INVALID,
                    "Invalid value: \"10.0.0.10\": expected an IPv6 value as indicated by `ipFamilies[0]`",
                ),
            ],
        },
        UpdateCase {
            name: "headless to headless may change families",
            old: || {
                let mut s = base();
                set_headless(&mut s);
                s
            },
            mutate: |s| {
                set_headless(s);
                spec(s).ip_families = strs(&["IPv6"]);
            },
            want: &[],
        },
        UpdateCase {
            name: "headless to ClusterIP is rejected by clusterIPs immutability",
            old: || {
                let mut s = base();
                set_headless(&mut s);
                s
            },
            mutate: |s| set_ips(s, &["10.0.0.10"], &["IPv4"]),
            want: &[("spec.clusterIPs[0]", INVALID, "Invalid value: [\"10.0.0.10\"]: may not change once set")],
        },
        UpdateCase {
            name: "ExternalName to ClusterIP skips the clusterIPs rules",
            old: || {
                let mut s = base();
                set_external_name(&mut s);
                s
            },
            mutate: |s| *s = base(),
            want: &[],
        },
        UpdateCase {
            name: "healthCheckNodePort changed",
            old: || {
                let mut s = base();
                set_lb_local(&mut s, 30001);
                s
            },
            mutate: |s| set_lb_local(s, 30002),
            want: &[("spec.healthCheckNodePort", FORBIDDEN, "Forbidden: field is immutable")],
        },
        UpdateCase {
            name: "loadBalancerClass changed",
            old: || {
                let mut s = base();
                set_lb(&mut s);
                spec(&mut s).load_balancer_class = st("example.com/a");
                s
            },
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_class = st("example.com/b");
            },
            want: &[("spec.loadBalancerClass", INVALID, "Invalid value: \"example.com/b\": may not change once set")],
        },
        UpdateCase {
            name: "loadBalancerClass set on an existing LoadBalancer",
            old: || {
                let mut s = base();
                set_lb(&mut s);
                s
            },
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_class = st("example.com/b");
            },
            want: &[("spec.loadBalancerClass", INVALID, "Invalid value: \"example.com/b\": may not change once set")],
        },
        UpdateCase {
            name: "loadBalancerClass set when becoming a LoadBalancer",
            old: base,
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_class = st("example.com/internal-vip");
            },
            want: &[],
        },
        UpdateCase {
            name: "bad loadBalancerClass is reported twice on update (as upstream)",
            old: base,
            mutate: |s| {
                set_lb(s);
                spec(s).load_balancer_class = st("bad proto");
            },
            want: &[
                ("spec.loadBalancerClass", INVALID, const_format_qualified!("bad proto")),
                ("spec.loadBalancerClass", INVALID, const_format_qualified!("bad proto")),
            ],
        },
    ]
}

#[test]
fn validate_service_update_rows() {
    let ctx = dual_ctx();
    for case in update_cases() {
        let old = (case.old)();
        let mut new = old.clone();
        (case.mutate)(&mut new);
        check(case.name, &validate_service_update(&new, &old, &ctx), case.want);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// §1.3 status.

#[test]
fn validate_status_rows() {
    let lb = || {
        let mut s = base();
        set_lb(&mut s);
        s
    };
    let cases: Vec<(&str, Service, Want)> = vec![
        ("valid ingress", with(lb(), |s| ingress(s, Some("192.0.2.1"), None, Some("VIP"))), &[]),
        ("proxy hostname", with(lb(), |s| ingress(s, None, Some("lb.example.com"), None)), &[]),
        (
            "ingress on ClusterIP",
            with(base(), |s| ingress(s, Some("192.0.2.1"), None, Some("VIP"))),
            &[(
                "status.loadBalancer.ingress",
                FORBIDDEN,
                "Forbidden: may only be used when `spec.type` is 'LoadBalancer'",
            )],
        ),
        (
            "bad ingress IP",
            with(lb(), |s| ingress(s, Some("192.0.2"), None, Some("VIP"))),
            &[("status.loadBalancer.ingress[0].ip", INVALID, const_format_ip!("192.0.2"))],
        ),
        (
            "ip without ipMode",
            with(lb(), |s| ingress(s, Some("192.0.2.1"), None, None)),
            &[(
                "status.loadBalancer.ingress[0].ipMode",
                REQUIRED,
                "Required value: must be specified when `ip` is set",
            )],
        ),
        (
            "ipMode without ip",
            with(lb(), |s| ingress(s, None, Some("lb.example.com"), Some("VIP"))),
            &[(
                "status.loadBalancer.ingress[0].ipMode",
                FORBIDDEN,
                "Forbidden: may not be specified when `ip` is not set",
            )],
        ),
        (
            "unsupported ipMode",
            with(lb(), |s| ingress(s, Some("192.0.2.1"), None, Some("Direct"))),
            &[(
                "status.loadBalancer.ingress[0].ipMode",
                NOT_SUPPORTED,
                "Unsupported value: \"Direct\": supported values: \"Proxy\", \"VIP\"",
            )],
        ),
        (
            "hostname not a DNS name",
            with(lb(), |s| ingress(s, None, Some("db.."), None)),
            &[("status.loadBalancer.ingress[0].hostname", INVALID, const_format_subdomain!("db.."))],
        ),
        (
            "hostname is an IP",
            with(lb(), |s| ingress(s, None, Some("192.0.2.1"), None)),
            &[(
                "status.loadBalancer.ingress[0].hostname",
                INVALID,
                "Invalid value: \"192.0.2.1\": must be a DNS name, not an IP address",
            )],
        ),
    ];
    for (name, new, want) in cases {
        check(name, &validate_service_status_update(&new, &lb()), want);
    }
}

fn with(mut s: Service, f: impl FnOnce(&mut Service)) -> Service {
    f(&mut s);
    s
}

// ---------------------------------------------------------------------------------------------------------------
// §1.2 defaults (upstream `defaults_test.go`).

fn defaulted(v: serde_json::Value) -> serde_json::Value {
    let mut s: Service = serde_json::from_value(v).expect("service");
    set_defaults(&mut s);
    serde_json::to_value(&s).expect("json")
}

#[test]
fn defaults_rows() {
    // An empty service: ClusterIP, affinity None, internalTrafficPolicy Cluster, nothing else.
    let d = defaulted(json!({"metadata": {"name": "x"}}));
    assert_eq!(
        d["spec"],
        json!({"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}),
        "empty"
    );

    // Ports: protocol TCP; targetPort = port when unset, 0 or "".
    let d = defaulted(json!({"spec": {"ports": [
        {"port": 80},
        {"port": 81, "targetPort": 0, "protocol": "UDP"},
        {"port": 82, "targetPort": ""},
        {"port": 83, "targetPort": "http"},
        {"port": 84, "targetPort": 8084, "protocol": ""},
    ]}}));
    let ports = &d["spec"]["ports"];
    assert_eq!(ports[0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
    assert_eq!(ports[1], json!({"port": 81, "protocol": "UDP", "targetPort": 81}));
    assert_eq!(ports[2], json!({"port": 82, "protocol": "TCP", "targetPort": 82}));
    assert_eq!(ports[3], json!({"port": 83, "protocol": "TCP", "targetPort": "http"}));
    assert_eq!(ports[4], json!({"port": 84, "protocol": "TCP", "targetPort": 8084}));

    // Session affinity.
    let d = defaulted(json!({"spec": {"sessionAffinity": "ClientIP"}}));
    assert_eq!(d["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    let d = defaulted(json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {}}}}));
    assert_eq!(d["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    let d = defaulted(
        json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}),
    );
    assert_eq!(d["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 60}}));
    let d = defaulted(json!({"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}));
    assert_eq!(d["spec"]["sessionAffinity"], "None");
    assert!(d["spec"].get("sessionAffinityConfig").is_none(), "config dropped for None");

    // externalTrafficPolicy for externally accessible services only.
    for (ty, ext_ips, want) in [
        ("NodePort", false, Some("Cluster")),
        ("LoadBalancer", false, Some("Cluster")),
        ("ClusterIP", true, Some("Cluster")),
        ("ClusterIP", false, None),
        ("ExternalName", false, None),
    ] {
        let mut v = json!({"spec": {"type": ty}});
        if ext_ips {
            v["spec"]["externalIPs"] = json!(["192.0.2.1"]);
        }
        let d = defaulted(v);
        assert_eq!(d["spec"]["externalTrafficPolicy"].as_str(), want, "{ty} externalIPs={ext_ips}");
    }
    let d = defaulted(json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local"}}));
    assert_eq!(d["spec"]["externalTrafficPolicy"], "Local");

    // internalTrafficPolicy: not for ExternalName; kept when set.
    let d = defaulted(json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}}));
    assert!(d["spec"].get("internalTrafficPolicy").is_none());
    let d = defaulted(json!({"spec": {"type": "NodePort", "internalTrafficPolicy": "Local"}}));
    assert_eq!(d["spec"]["internalTrafficPolicy"], "Local");

    // allocateLoadBalancerNodePorts: true for LoadBalancer when unset.
    let d = defaulted(json!({"spec": {"type": "LoadBalancer"}}));
    assert_eq!(d["spec"]["allocateLoadBalancerNodePorts"], true);
    let d = defaulted(json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false}}));
    assert_eq!(d["spec"]["allocateLoadBalancerNodePorts"], false);
    let d = defaulted(json!({"spec": {"type": "NodePort"}}));
    assert!(d["spec"].get("allocateLoadBalancerNodePorts").is_none());

    // Ingress ipMode VIP for LoadBalancer ingress with an IP.
    let status = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}, {"ip": "192.0.2.2", "ipMode": "Proxy"}]}});
    let d = defaulted(json!({"spec": {"type": "LoadBalancer"}, "status": status.clone()}));
    assert_eq!(
        d["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "192.0.2.1", "ipMode": "VIP"}, {"hostname": "lb.example.com"}, {"ip": "192.0.2.2", "ipMode": "Proxy"}])
    );
    let d = defaulted(json!({"spec": {"type": "NodePort"}, "status": status.clone()}));
    assert_eq!(d["status"], status, "no ipMode defaulting for non-LoadBalancer");

    // An empty selector reads back as unset (selectorless).
    let d = defaulted(json!({"spec": {"selector": {}}}));
    assert!(d["spec"].get("selector").is_none());
    let d = defaulted(json!({"spec": {"selector": {"app": "web"}}}));
    assert_eq!(d["spec"]["selector"], json!({"app": "web"}));
}

// ---------------------------------------------------------------------------------------------------------------
// §1.5 initIPFamilyFields.

fn svc_json(v: serde_json::Value) -> Service {
    serde_json::from_value(v).expect("service")
}

fn families_and_policy(s: &Service) -> (Vec<String>, Option<String>) {
    let sp = s.spec.as_ref().expect("spec");
    (sp.ip_families.clone().unwrap_or_default(), sp.ip_family_policy.clone())
}

#[test]
fn init_ip_families_defaults() {
    struct Init {
        name: &'static str,
        spec: serde_json::Value,
        cluster: &'static [IpFamily],
        families: &'static [&'static str],
        policy: &'static str,
    }
    let cases = [
        Init {
            name: "plain, v4 cluster",
            spec: json!({"selector": {"a": "b"}}),
            cluster: &[V4],
            families: &["IPv4"],
            policy: "SingleStack",
        },
        Init {
            name: "plain, v6 cluster",
            spec: json!({"selector": {"a": "b"}}),
            cluster: &[V6],
            families: &["IPv6"],
            policy: "SingleStack",
        },
        Init {
            name: "plain, dual cluster",
            spec: json!({"selector": {"a": "b"}}),
            cluster: &[V4, V6],
            families: &["IPv4"],
            policy: "SingleStack",
        },
        Init {
            name: "headless selectorless, dual cluster",
            spec: json!({"clusterIP": "None", "clusterIPs": ["None"]}),
            cluster: &[V4, V6],
            families: &["IPv4", "IPv6"],
            policy: "RequireDualStack",
        },
        Init {
            name: "headless selectorless, single-stack cluster",
            spec: json!({"clusterIP": "None", "clusterIPs": ["None"]}),
            cluster: &[V6],
            families: &["IPv6", "IPv4"],
            policy: "RequireDualStack",
        },
        Init {
            name: "headless selectorless, SingleStack",
            spec: json!({"clusterIP": "None", "clusterIPs": ["None"], "ipFamilyPolicy": "SingleStack"}),
            cluster: &[V4, V6],
            families: &["IPv4"],
            policy: "SingleStack",
        },
        Init {
            name: "headless with selector",
            spec: json!({"clusterIP": "None", "clusterIPs": ["None"], "selector": {"a": "b"}}),
            cluster: &[V4, V6],
            families: &["IPv4"],
            policy: "SingleStack",
        },
        Init {
            name: "PreferDualStack, dual cluster",
            spec: json!({"ipFamilyPolicy": "PreferDualStack"}),
            cluster: &[V6, V4],
            families: &["IPv6", "IPv4"],
            policy: "PreferDualStack",
        },
        Init {
            name: "PreferDualStack, single-stack cluster",
            spec: json!({"ipFamilyPolicy": "PreferDualStack"}),
            cluster: &[V4],
            families: &["IPv4"],
            policy: "PreferDualStack",
        },
        Init {
            name: "RequireDualStack with a requested family",
            spec: json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}),
            cluster: &[V4, V6],
            families: &["IPv6", "IPv4"],
            policy: "RequireDualStack",
        },
        Init {
            name: "families inferred from clusterIPs",
            spec: json!({"clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "10.0.0.10"], "ipFamilyPolicy": "PreferDualStack"}),
            cluster: &[V4, V6],
            families: &["IPv6", "IPv4"],
            policy: "PreferDualStack",
        },
    ];
    for case in cases {
        let mut v = json!({"metadata": {"name": "svc"}, "spec": case.spec});
        v["spec"]["type"] = json!("ClusterIP");
        let mut s = svc_json(v);
        assert_eq!(init_ip_families(&mut s, None, case.cluster), Ok(()), "{}", case.name);
        let want = (case.families.iter().map(|f| f.to_string()).collect(), Some(case.policy.to_string()));
        assert_eq!(families_and_policy(&s), want, "{}", case.name);
    }

    // ExternalName is left alone.
    let mut s = svc_json(json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}}));
    assert_eq!(init_ip_families(&mut s, None, &[V4, V6]), Ok(()));
    assert_eq!(families_and_policy(&s), (vec![], None));
}

#[test]
fn init_ip_families_errors() {
    let cases: Vec<(&str, serde_json::Value, &[IpFamily], Want)> = vec![
        (
            "SingleStack with two clusterIPs",
            json!({"clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.10", "fd00::10"], "ipFamilyPolicy": "SingleStack"}),
            &[V4, V6],
            &[(
                "spec.ipFamilyPolicy",
                INVALID,
                "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            )],
        ),
        (
            "SingleStack with two families",
            json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "SingleStack"}),
            &[V4, V6],
            &[(
                "spec.ipFamilyPolicy",
                INVALID,
                "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            )],
        ),
        (
            "clusterIP of an unconfigured family",
            json!({"clusterIP": "fd00::10", "clusterIPs": ["fd00::10"]}),
            &[V4],
            &[("spec.clusterIPs[0]", INVALID, "Invalid value: [\"fd00::10\"]: IPv6 is not configured on this cluster")],
        ),
        (
            "RequireDualStack on a single-stack cluster",
            json!({"ipFamilyPolicy": "RequireDualStack"}),
            &[V4],
            &[(
                "spec.ipFamilyPolicy",
                INVALID,
                "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
            )],
        ),
        (
            "family not configured",
            json!({"ipFamilies": ["IPv6"]}),
            &[V4],
            &[("spec.ipFamilies[0]", INVALID, "Invalid value: \"IPv6\": not configured on this cluster")],
        ),
        (
            "pre-validation failure",
            json!({"clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.11"]}),
            &[V4],
            &[("spec.clusterIPs", INVALID, "Invalid value: [\"10.0.0.11\"]: first value must match `clusterIP`")],
        ),
    ];
    for (name, spec_json, cluster, want) in cases {
        let mut s = svc_json(json!({"metadata": {"name": "svc"}, "spec": spec_json}));
        let errs = init_ip_families(&mut s, None, cluster).expect_err(name);
        check(name, &errs, want);
    }
}

#[test]
fn init_ip_families_on_update() {
    // A missing policy is taken from the old object.
    let old = dual();
    let mut new = dual();
    spec(&mut new).ip_family_policy = None;
    assert_eq!(init_ip_families(&mut new, Some(&old), &[V4, V6]), Ok(()));
    assert_eq!(spec(&mut new).ip_family_policy, st("RequireDualStack"));

    // Releasing the secondary clusterIP needs SingleStack.
    let mut new = dual();
    spec(&mut new).ip_family_policy = None;
    spec(&mut new).cluster_ips = strs(&["10.0.0.10"]);
    let errs = init_ip_families(&mut new, Some(&old), &[V4, V6]).expect_err("release IP");
    check(
        "release IP",
        &errs,
        &[(
            "spec.ipFamilyPolicy",
            INVALID,
            "Invalid value: \"RequireDualStack\": must be 'SingleStack' to release the secondary cluster IP",
        )],
    );
    let mut new = dual();
    spec(&mut new).ip_families = strs(&["IPv4"]);
    let errs = init_ip_families(&mut new, Some(&old), &[V4, V6]).expect_err("release family");
    check(
        "release family",
        &errs,
        &[(
            "spec.ipFamilyPolicy",
            INVALID,
            "Invalid value: \"RequireDualStack\": must be 'SingleStack' to release the secondary IP family",
        )],
    );

    // SingleStack with clusterIPs and families unchanged trims both to the primary.
    let mut new = dual();
    spec(&mut new).ip_family_policy = st("SingleStack");
    assert_eq!(init_ip_families(&mut new, Some(&old), &[V4, V6]), Ok(()));
    assert_eq!(spec(&mut new).cluster_ips, strs(&["10.0.0.10"]));
    assert_eq!(spec(&mut new).ip_families, strs(&["IPv4"]));

    // An unchanged PreferDualStack service is not upgraded when the cluster becomes dual-stack.
    let mut old = base();
    spec(&mut old).ip_family_policy = st("PreferDualStack");
    let mut new = old.clone();
    assert_eq!(init_ip_families(&mut new, Some(&old), &[V4, V6]), Ok(()));
    assert_eq!(spec(&mut new).ip_families, strs(&["IPv4"]));
    // ... nor downgraded when it stops being one.
    let mut old = dual();
    spec(&mut old).ip_family_policy = st("PreferDualStack");
    let mut new = old.clone();
    assert_eq!(init_ip_families(&mut new, Some(&old), &[V4]), Ok(()));
    assert_eq!(spec(&mut new).ip_families, strs(&["IPv4", "IPv6"]));

    // ExternalName → ClusterIP: initialised as on create.
    let mut old = base();
    set_external_name(&mut old);
    let mut new = base();
    set_ips(&mut new, &[], &[]);
    spec(&mut new).ip_family_policy = None;
    assert_eq!(init_ip_families(&mut new, Some(&old), &[V6, V4]), Ok(()));
    assert_eq!(families_and_policy(&new), (vec!["IPv6".to_string()], st("SingleStack")));
}

// ---------------------------------------------------------------------------------------------------------------
// §1.7 dropTypeDependentFields.

fn node_ports(s: &Service) -> Vec<Option<i32>> {
    s.spec
        .as_ref()
        .and_then(|sp| sp.ports.as_ref())
        .map(|ps| ps.iter().map(|p| p.node_port).collect())
        .unwrap_or_default()
}

fn lb_with_everything() -> Service {
    let mut s = base();
    set_lb_local(&mut s, 30001);
    spec(&mut s).load_balancer_class = st("example.com/internal-vip");
    port(&mut s, 0).node_port = Some(30080);
    ingress(&mut s, Some("192.0.2.1"), None, Some("VIP"));
    s
}

#[test]
fn type_transitions() {
    // ClusterIP → ExternalName with the old IPs echoed back: IPs, families and policy wiped.
    let old = base();
    let mut new = old.clone();
    spec(&mut new).type_ = st("ExternalName");
    spec(&mut new).external_name = st("db.example.com");
    drop_type_dependent_fields(&mut new, &old);
    let sp = spec(&mut new);
    assert_eq!((sp.cluster_ip.clone(), sp.cluster_ips.clone()), (None, None));
    assert_eq!((sp.ip_families.clone(), sp.ip_family_policy.clone()), (None, None));
    assert_eq!(validate_service_update(&new, &old, &dual_ctx()), vec![]);

    // → ExternalName with a changed clusterIP: kept for validation to reject.
    let mut new = old.clone();
    spec(&mut new).type_ = st("ExternalName");
    set_ips(&mut new, &["10.0.0.11"], &["IPv4"]);
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(spec(&mut new).cluster_ips, strs(&["10.0.0.11"]));

    // NodePort → ClusterIP: nodePorts and externalTrafficPolicy wiped.
    let mut old = base();
    set_np(&mut old);
    port(&mut old, 0).node_port = Some(30080);
    let mut new = old.clone();
    spec(&mut new).type_ = st("ClusterIP");
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(node_ports(&new), vec![None]);
    assert_eq!(spec(&mut new).external_traffic_policy, None);
    assert_eq!(validate_service_update(&new, &old, &dual_ctx()), vec![]);

    // ... unless a net-new nodePort was asked for.
    let mut new = old.clone();
    spec(&mut new).type_ = st("ClusterIP");
    port(&mut new, 0).node_port = Some(30081);
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(node_ports(&new), vec![Some(30081)]);

    // LoadBalancer → ClusterIP: HC port, allocateLoadBalancerNodePorts, class and LB status cleared.
    let old = lb_with_everything();
    let mut new = old.clone();
    spec(&mut new).type_ = st("ClusterIP");
    drop_type_dependent_fields(&mut new, &old);
    let sp = spec(&mut new).clone();
    assert_eq!(sp.health_check_node_port, None);
    assert_eq!(sp.allocate_load_balancer_node_ports, None);
    assert_eq!(sp.load_balancer_class, None);
    assert_eq!(sp.external_traffic_policy, None);
    assert_eq!(node_ports(&new), vec![None]);
    assert_eq!(serde_json::to_value(&new.status).expect("json"), json!({"loadBalancer": {}}));
    assert_eq!(validate_service_update(&new, &old, &dual_ctx()), vec![]);

    // LoadBalancer → NodePort: nodePorts and externalTrafficPolicy kept, LB-only fields dropped.
    let mut new = old.clone();
    set_np(&mut new);
    spec(&mut new).external_traffic_policy = st("Local");
    drop_type_dependent_fields(&mut new, &old);
    let sp = spec(&mut new).clone();
    assert_eq!(node_ports(&new), vec![Some(30080)]);
    assert_eq!(sp.external_traffic_policy, st("Local"));
    assert_eq!((sp.health_check_node_port, sp.allocate_load_balancer_node_ports), (None, None));
    assert_eq!(sp.load_balancer_class, None);
    assert_eq!(serde_json::to_value(&new.status).expect("json"), json!({"loadBalancer": {}}));

    // A changed class or allocateLoadBalancerNodePorts is left for validation to reject.
    let mut new = old.clone();
    spec(&mut new).type_ = st("ClusterIP");
    spec(&mut new).load_balancer_class = st("example.com/other");
    spec(&mut new).allocate_load_balancer_node_ports = Some(false);
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(spec(&mut new).load_balancer_class, st("example.com/other"));
    assert_eq!(spec(&mut new).allocate_load_balancer_node_ports, Some(false));

    // LoadBalancer → LoadBalancer: status kept.
    let mut new = old.clone();
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(new, old);

    // ClusterIP with externalIPs → without: externalTrafficPolicy wiped.
    let mut old = base();
    set_external_ip(&mut old, "192.0.2.1");
    let mut new = old.clone();
    spec(&mut new).external_ips = None;
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(spec(&mut new).external_traffic_policy, None);

    // ClusterIP → NodePort: nothing dropped.
    let old = base();
    let mut new = old.clone();
    set_np(&mut new);
    let before = new.clone();
    drop_type_dependent_fields(&mut new, &old);
    assert_eq!(new.spec, before.spec);
}

#[test]
fn defaults_then_init_give_a_valid_service() {
    for (cluster, body) in [
        (&[V4][..], json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
        (&[V4, V6][..], json!({"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]})),
        (&[V4, V6][..], json!({"clusterIP": "None", "clusterIPs": ["None"]})),
        (&[V4][..], json!({"type": "ExternalName", "externalName": "db.example.com"})),
    ] {
        let mut s = svc_json(json!({"metadata": {"name": "svc"}, "spec": body.clone()}));
        set_defaults(&mut s);
        assert_eq!(init_ip_families(&mut s, None, cluster), Ok(()), "{body}");
        let sp = spec(&mut s);
        // Stand in for the allocator.
        if sp.type_.as_deref() != Some("ExternalName") && sp.cluster_ip.is_none() {
            sp.cluster_ip = st("10.0.0.10");
            sp.cluster_ips = strs(&["10.0.0.10"]);
        }
        if sp.type_.as_deref() == Some("LoadBalancer") {
            for p in sp.ports.iter_mut().flatten() {
                p.node_port = Some(30080);
            }
        }
        let ctx = ValidationContext { ip_families: cluster.to_vec(), ..Default::default() };
        assert_eq!(validate_service(&s, &ctx), vec![], "{body}");
    }
}
