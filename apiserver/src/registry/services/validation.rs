//! Service validation, as upstream's `pkg/apis/core/validation/validation.go` (Kubernetes 1.33):
//! `ValidateService`, `ValidateServiceUpdate`, `ValidateServiceStatusUpdate` and their helpers
//! (`validateServicePort`, `ValidateServiceClusterIPsRelatedFields`, `validateUpgradeDowngrade*`,
//! `validateLoadBalancerClassField`, `validateServiceExternalTrafficPolicy`, `validateClientIPAffinityConfig`,
//! `ValidateNonSpecialIP`, `ValidateLoadBalancerStatus`).
//!
//! Upstream validates the internal type, where an unset string is `""`; here `None` and `Some("")` of a v1
//! string field are the same, while optional pointers (`ipFamilyPolicy`, `loadBalancerClass`, ...) keep the
//! difference between `None` and `Some("")`. Object metadata is validated by the generic store; only what
//! `ValidateService` adds beyond `ValidateObjectMeta` is checked here. Errors come in upstream's order, with its
//! field paths, types and messages, including its quirks (`spec.LoadBalancerSourceRanges`,
//! `allocateLoadBalancerNodePorts` without `spec.`, the loadBalancerClass errors reported twice on update).

use super::defaults::IpFamily;
use crate::error::FieldError;
use crate::validation::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_ip_for_legacy_field, is_valid_port_name,
    is_valid_port_num, validate_labels,
};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

pub(super) const TYPE_CLUSTER_IP: &str = "ClusterIP";
pub(super) const TYPE_NODE_PORT: &str = "NodePort";
pub(super) const TYPE_LOAD_BALANCER: &str = "LoadBalancer";
pub(super) const TYPE_EXTERNAL_NAME: &str = "ExternalName";
pub(super) const CLUSTER_IP_NONE: &str = "None";
pub(super) const AFFINITY_NONE: &str = "None";
pub(super) const AFFINITY_CLIENT_IP: &str = "ClientIP";
pub(super) const POLICY_CLUSTER: &str = "Cluster";
pub(super) const POLICY_LOCAL: &str = "Local";
pub(super) const SINGLE_STACK: &str = "SingleStack";
pub(super) const PREFER_DUAL_STACK: &str = "PreferDualStack";
pub(super) const REQUIRE_DUAL_STACK: &str = "RequireDualStack";
pub(super) const IP_MODE_VIP: &str = "VIP";
/// `core.MaxClientIPServiceAffinitySeconds`.
const MAX_CLIENT_IP_AFFINITY_SECONDS: i32 = 86400;

const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
const ANNOTATION_TOPOLOGY_AWARE_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
const ANNOTATION_LB_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

// Supported values, sorted as upstream's `sets.List` returns them.
const SUPPORTED_AFFINITY: &[&str] = &["ClientIP", "None"];
const SUPPORTED_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SUPPORTED_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SUPPORTED_TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const SUPPORTED_IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const SUPPORTED_IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const SUPPORTED_IP_MODES: &[&str] = &["Proxy", "VIP"];
const SUPPORTED_TRAFFIC_DISTRIBUTION: &[&str] = &["PreferClose"];

const LB_ONLY: &str = "may only be used when `type` is 'LoadBalancer'";
const NOT_CONFIGURED: &str = "not configured on this cluster";

/// What validation needs to know about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    /// The service IP families the cluster serves, primary first. A family in `spec.ipFamilies` that is not
    /// listed gives `spec.ipFamilies[i]: Invalid value: "IPv6": not configured on this cluster` (as
    /// `initIPFamilyFields`; headless selectorless services are exempt, as upstream). Empty: not checked.
    pub ip_families: Vec<IpFamily>,
    /// The `StrictIPCIDRValidation` feature gate (off by default in 1.33): reject IPs and CIDRs with leading
    /// zeros or IPv4-mapped IPv6 addresses in `clusterIPs`, `externalIPs` and `loadBalancerSourceRanges`.
    /// Values already present in the old object are accepted on update.
    pub strict_ip_validation: bool,
}

// ---------------------------------------------------------------------------------------------------------------
// Accessors shared with `defaults.rs`.

/// The spec, or an empty one (upstream's internal object always has a spec).
pub(super) fn spec_of(svc: &Service) -> Cow<'_, ServiceSpec> {
    match &svc.spec {
        Some(spec) => Cow::Borrowed(spec),
        None => Cow::Owned(ServiceSpec::default()),
    }
}

/// A v1 string field as upstream's internal `string`: unset is `""`.
pub(super) fn str_of(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// A v1 list field as upstream's internal slice: unset is empty.
pub(super) fn list_of<T>(v: &Option<Vec<T>>) -> &[T] {
    v.as_deref().unwrap_or(&[])
}

/// A string list as the JSON bad value of an error (`null` when unset, as a nil Go slice).
fn list_value(v: &Option<Vec<String>>) -> Value {
    match v {
        Some(items) => Value::from(items.clone()),
        None => Value::Null,
    }
}

/// An optional string as the bad value of an error (`null` for a nil pointer).
fn opt_value(v: &Option<String>) -> Value {
    match v {
        Some(s) => Value::from(s.as_str()),
        None => Value::Null,
    }
}

fn node_port_of(p: &ServicePort) -> i32 {
    p.node_port.unwrap_or(0)
}

/// `isHeadlessService`: `clusterIPs == ["None"]`.
pub(super) fn is_headless(spec: &ServiceSpec) -> bool {
    matches!(list_of(&spec.cluster_ips), [only] if only == CLUSTER_IP_NONE)
}

/// `apiservice.ExternallyAccessible`: NodePort, LoadBalancer, or ClusterIP with external IPs.
pub(super) fn externally_accessible(spec: &ServiceSpec) -> bool {
    let t = str_of(&spec.type_);
    t == TYPE_LOAD_BALANCER || t == TYPE_NODE_PORT || (t == TYPE_CLUSTER_IP && !list_of(&spec.external_ips).is_empty())
}

/// `apiservice.NeedsHealthCheck`: LoadBalancer with `externalTrafficPolicy: Local`.
pub(super) fn needs_health_check(spec: &ServiceSpec) -> bool {
    str_of(&spec.type_) == TYPE_LOAD_BALANCER && str_of(&spec.external_traffic_policy) == POLICY_LOCAL
}

// ---------------------------------------------------------------------------------------------------------------
// IP parsing (`netutils.ParseIPSloppy`, `ParseCIDRSloppy`, `net.IP` predicates).

/// `netutils.ParseIPSloppy` (Go's pre-1.17 `net.ParseIP`): the strict grammar, except that decimal octets and hex
/// groups may carry leading zeros. An IPv4-mapped IPv6 address comes back as IPv4, as Go's `To4()` sees it.
pub(super) fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    match crate::validation::parse_ip_sloppy(s)? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// The family of an IP as `netutils.IsIPv6String` decides it (IPv4-mapped IPv6 counts as IPv4).
pub(super) fn family_of(ip: &str) -> Option<IpFamily> {
    parse_ip_sloppy(ip).map(|a| if a.is_ipv4() { IpFamily::V4 } else { IpFamily::V6 })
}

fn is_ipv6_string(ip: &str) -> bool {
    family_of(ip) == Some(IpFamily::V6)
}

/// `IsValidIPForLegacyField`.
fn validate_ip_legacy(path: &str, value: &str, strict: bool, valid_old: &[&str]) -> Vec<FieldError> {
    is_valid_ip_for_legacy_field(value, strict, valid_old)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

/// `IsValidCIDRForLegacyField`: `ParseCIDRSloppy`, then (when strict) `netip.ParsePrefix`'s rules.
fn validate_cidr_legacy(path: &str, value: &str, strict: bool, valid_old: &[&str]) -> Vec<FieldError> {
    if valid_old.contains(&value) {
        return Vec::new();
    }
    let invalid = |m: &str| vec![FieldError::invalid(path, value, m)];
    let Some((addr, bits)) = value.split_once('/') else {
        return invalid("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    };
    // Go's old ParseCIDR: an IPv4 literal has 32 bits, anything else (even IPv4-mapped IPv6) 128.
    let max_bits = if addr.contains(':') { 128 } else { 32 };
    let ok = parse_ip_sloppy(addr).is_some()
        && !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && bits.parse::<u32>().is_ok_and(|n| n <= max_bits);
    if !ok {
        return invalid("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    }
    if !strict {
        return Vec::new();
    }
    let strict_addr = addr.parse::<IpAddr>();
    let Ok(strict_addr) = strict_addr else {
        return invalid("must not have leading 0s in IP or prefix length");
    };
    if bits.len() > 1 && bits.starts_with('0') {
        return invalid("must not have leading 0s in IP or prefix length");
    }
    let n: u32 = bits.parse().unwrap_or(0);
    match strict_addr {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => invalid("must not have an IPv4-mapped IPv6 address"),
        IpAddr::V4(v4) => {
            let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            if u32::from(v4) & !mask != 0 { invalid("must not have bits set beyond the prefix length") } else { vec![] }
        }
        IpAddr::V6(v6) => {
            let mask = if n == 0 { 0 } else { u128::MAX << (128 - n) };
            if u128::from(v6) & !mask != 0 {
                invalid("must not have bits set beyond the prefix length")
            } else {
                vec![]
            }
        }
    }
}

/// `ValidateNonSpecialIP`: no unspecified, loopback, link-local or link-local multicast addresses.
fn validate_non_special_ip(value: &str, path: &str) -> Vec<FieldError> {
    let Some(ip) = parse_ip_sloppy(value) else {
        return vec![FieldError::invalid(path, value, "must be a valid IP address")];
    };
    let mut errs = Vec::new();
    let (unspecified, loopback, link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4 == Ipv4Addr::UNSPECIFIED,
                o[0] == 127,
                o[0] == 169 && o[1] == 254,
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (
                v6.is_unspecified(),
                v6.is_loopback(),
                o[0] == 0xfe && o[1] & 0xc0 == 0x80,
                o[0] == 0xff && o[1] & 0x0f == 0x02,
            )
        }
    };
    if unspecified {
        errs.push(FieldError::invalid(path, value, format!("may not be unspecified ({value})")));
    }
    if loopback {
        errs.push(FieldError::invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    if link_local {
        errs.push(FieldError::invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------------------------------
// ValidateService.

/// `ValidateService` (create; also the second half of [`validate_service_update`]).
pub fn validate_service(svc: &Service, ctx: &ValidationContext) -> Vec<FieldError> {
    validate_service_with_old(svc, None, ctx)
}

fn validate_service_with_old(svc: &Service, old: Option<&Service>, ctx: &ValidationContext) -> Vec<FieldError> {
    let spec = spec_of(svc);
    let old_spec = old.map(spec_of);
    let mut errs = Vec::new();

    // Annotations: topology-mode must agree with the deprecated topology-aware-hints.
    if let Some(annotations) = &svc.metadata.annotations
        && let (Some(hints), Some(mode)) =
            (annotations.get(ANNOTATION_TOPOLOGY_AWARE_HINTS), annotations.get(ANNOTATION_TOPOLOGY_MODE))
        && hints != mode
    {
        errs.push(FieldError::invalid(
            format!("metadata.annotations[{ANNOTATION_TOPOLOGY_MODE}]"),
            mode.as_str(),
            format!("must match annotations[{ANNOTATION_TOPOLOGY_AWARE_HINTS}] when both are specified"),
        ));
    }

    let ty = str_of(&spec.type_);
    let ports = list_of(&spec.ports);
    let headless = is_headless(&spec);

    if ports.is_empty() && !headless && ty != TYPE_EXTERNAL_NAME {
        errs.push(FieldError::required("spec.ports", ""));
    }

    match ty {
        TYPE_LOAD_BALANCER | TYPE_NODE_PORT if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                CLUSTER_IP_NONE,
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        TYPE_EXTERNAL_NAME => {
            if !list_of(&spec.cluster_ips).is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if !list_of(&spec.ip_families).is_empty() {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            // The value (a CNAME) may have one trailing dot to denote it as fully qualified.
            let external_name = str_of(&spec.external_name);
            let cname = external_name.strip_suffix('.').unwrap_or(external_name);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                errs.extend(
                    is_dns1123_subdomain(cname).into_iter().map(|m| FieldError::invalid("spec.externalName", cname, m)),
                );
            }
        }
        _ => {}
    }

    let mut port_names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(port, ports.len() > 1, &mut port_names, &format!("spec.ports[{i}]")));
    }

    if let Some(selector) = &spec.selector {
        let labels: Map<String, Value> = selector.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        errs.extend(validate_labels(&labels, "spec.selector"));
    }

    let affinity = str_of(&spec.session_affinity);
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if !SUPPORTED_AFFINITY.contains(&affinity) {
        errs.push(FieldError::not_supported("spec.sessionAffinity", affinity, SUPPORTED_AFFINITY));
    }
    if affinity == AFFINITY_CLIENT_IP {
        errs.extend(validate_client_ip_affinity_config(&spec));
    } else if affinity == AFFINITY_NONE && spec.session_affinity_config.is_some() {
        errs.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            format!("must not be set when session affinity is {AFFINITY_NONE}"),
        ));
    }

    // dualstack <-> ClusterIPs <-> ipfamilies
    let old_cluster_ips: Vec<&str> = match &old_spec {
        Some(o) => list_of(&o.cluster_ips).iter().map(String::as_str).collect(),
        None => Vec::new(),
    };
    errs.extend(cluster_ips_related_fields(&spec, ctx.strict_ip_validation, &old_cluster_ips));

    let old_external_ips: Vec<&str> = match &old_spec {
        Some(o) => list_of(&o.external_ips).iter().map(String::as_str).collect(),
        None => Vec::new(),
    };
    for (i, ip) in list_of(&spec.external_ips).iter().enumerate() {
        let path = format!("spec.externalIPs[{i}]");
        let ip_errs = validate_ip_legacy(&path, ip, ctx.strict_ip_validation, &old_external_ips);
        if ip_errs.is_empty() {
            errs.extend(validate_non_special_ip(ip, &path));
        } else {
            errs.extend(ip_errs);
        }
    }

    if ty.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !SUPPORTED_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SUPPORTED_TYPES));
    }

    if ty == TYPE_CLUSTER_IP {
        for (i, port) in ports.iter().enumerate() {
            if node_port_of(port) != 0 {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    // Duplicate nodePorts, keyed by (protocol, nodePort).
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let node_port = node_port_of(port);
        if node_port == 0 {
            continue;
        }
        if !node_ports.insert((str_of(&port.protocol), node_port)) {
            errs.push(FieldError::duplicate(format!("spec.ports[{i}].nodePort"), node_port));
        }
    }

    // Duplicate ports, keyed by (protocol, port); the bad value is that key as a `core.ServicePort`.
    let mut seen_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = str_of(&port.protocol);
        if !seen_ports.insert((protocol, port.port)) {
            let key = json!({
                "Name": "", "Protocol": protocol, "AppProtocol": null, "Port": port.port, "TargetPort": 0, "NodePort": 0,
            });
            errs.push(FieldError::duplicate(format!("spec.ports[{i}]"), key));
        }
    }

    // loadBalancerSourceRanges, or the annotation when the field is empty.
    let ranges = list_of(&spec.load_balancer_source_ranges);
    let annotation_ranges = svc.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_LB_SOURCE_RANGES));
    if !ranges.is_empty() {
        let path = "spec.LoadBalancerSourceRanges";
        if ty != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(path, LB_ONLY));
        }
        let old_ranges: Vec<&str> = match &old_spec {
            Some(o) => list_of(&o.load_balancer_source_ranges).iter().map(|s| s.trim()).collect(),
            None => Vec::new(),
        };
        for (i, value) in ranges.iter().enumerate() {
            // Historically these values may be space-padded.
            let value = value.trim();
            errs.extend(validate_cidr_legacy(&format!("{path}[{i}]"), value, ctx.strict_ip_validation, &old_ranges));
        }
    } else if let Some(value) = annotation_ranges {
        let path = format!("metadata.annotations[{ANNOTATION_LB_SOURCE_RANGES}]");
        if ty != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(&path, LB_ONLY));
        }
        let value = value.trim();
        if !value.is_empty() {
            for cidr in value.split(',') {
                errs.extend(validate_cidr_legacy(&path, cidr.trim(), ctx.strict_ip_validation, &[]));
            }
        }
    }

    if spec.allocate_load_balancer_node_ports.is_some() && ty != TYPE_LOAD_BALANCER {
        errs.push(FieldError::forbidden("spec.allocateLoadBalancerNodePorts", LB_ONLY));
    }
    if ty == TYPE_LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }

    errs.extend(validate_load_balancer_class(None, &spec));
    errs.extend(validate_external_traffic_policy(&spec));
    errs.extend(validate_internal_traffic_policy(&spec));

    if let Some(td) = &spec.traffic_distribution
        && !SUPPORTED_TRAFFIC_DISTRIBUTION.contains(&td.as_str())
    {
        errs.push(FieldError::not_supported("spec.trafficDistribution", td.as_str(), SUPPORTED_TRAFFIC_DISTRIBUTION));
    }

    // Families the cluster does not serve (upstream reports these from `initIPFamilyFields`). An update that
    // keeps the families unchanged is not re-checked, so a cluster that dropped a family does not lock
    // existing services.
    let families_unchanged = old_spec.as_ref().is_some_and(|o| list_of(&o.ip_families) == list_of(&spec.ip_families));
    let headless_selectorless =
        str_of(&spec.cluster_ip) == CLUSTER_IP_NONE && spec.selector.as_ref().is_none_or(|s| s.is_empty());
    if !ctx.ip_families.is_empty() && ty != TYPE_EXTERNAL_NAME && !headless_selectorless && !families_unchanged {
        for (i, family) in list_of(&spec.ip_families).iter().enumerate() {
            if let Some(f) = IpFamily::parse(family)
                && !ctx.ip_families.contains(&f)
            {
                errs.push(FieldError::invalid(format!("spec.ipFamilies[{i}]"), family.as_str(), NOT_CONFIGURED));
            }
        }
    }

    errs
}

/// `validateServicePort`.
fn validate_service_port(
    sp: &ServicePort,
    require_name: bool,
    names: &mut HashSet<String>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(&sp.name);
    let name_path = format!("{path}.name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else if !name.is_empty() {
        errs.extend(is_dns1123_label(name).into_iter().map(|m| FieldError::invalid(&name_path, name, m)));
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&name_path, name));
        }
    }

    for m in is_valid_port_num(i64::from(sp.port)) {
        errs.push(FieldError::invalid(format!("{path}.port"), sp.port, m));
    }

    let protocol = str_of(&sp.protocol);
    if protocol.is_empty() {
        errs.push(FieldError::required(format!("{path}.protocol"), ""));
    } else if !SUPPORTED_PROTOCOLS.contains(&protocol) {
        errs.push(FieldError::not_supported(format!("{path}.protocol"), protocol, SUPPORTED_PROTOCOLS));
    }

    // `ValidatePortNumOrName`; an unset targetPort is the zero IntOrString (int 0).
    let target_path = format!("{path}.targetPort");
    match &sp.target_port {
        None => errs.extend(is_valid_port_num(0).into_iter().map(|m| FieldError::invalid(&target_path, 0, m))),
        Some(IntOrString::Int(n)) => {
            errs.extend(is_valid_port_num(i64::from(*n)).into_iter().map(|m| FieldError::invalid(&target_path, *n, m)))
        }
        Some(IntOrString::String(s)) => {
            errs.extend(is_valid_port_name(s).into_iter().map(|m| FieldError::invalid(&target_path, s.as_str(), m)))
        }
    }

    if let Some(app_protocol) = &sp.app_protocol {
        let p = format!("{path}.appProtocol");
        errs.extend(
            is_qualified_name(app_protocol).into_iter().map(|m| FieldError::invalid(&p, app_protocol.as_str(), m)),
        );
    }

    // A targetPort on a headless service that differs from `port` is tolerated in v1.
    errs
}

/// `validateClientIPAffinityConfig` and `validateAffinityTimeout`.
fn validate_client_ip_affinity_config(spec: &ServiceSpec) -> Vec<FieldError> {
    let detail = format!("when session affinity type is {AFFINITY_CLIENT_IP}");
    let Some(config) = &spec.session_affinity_config else {
        return vec![FieldError::required("spec.sessionAffinityConfig", detail)];
    };
    let Some(client_ip) = &config.client_ip else {
        return vec![FieldError::required("spec.sessionAffinityConfig.clientIP", detail)];
    };
    let path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
    let Some(timeout) = client_ip.timeout_seconds else {
        return vec![FieldError::required(path, detail)];
    };
    if timeout <= 0 || timeout > MAX_CLIENT_IP_AFFINITY_SECONDS {
        return vec![FieldError::invalid(
            path,
            timeout,
            format!("must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"),
        )];
    }
    Vec::new()
}

pub(super) fn cluster_ips_related_fields(spec: &ServiceSpec, strict: bool, valid_old_ips: &[&str]) -> Vec<FieldError> {
    // All of these must be unset for ExternalName, which ValidateService checks itself.
    if str_of(&spec.type_) == TYPE_EXTERNAL_NAME {
        return Vec::new();
    }
    let mut errs = Vec::new();
    let cluster_ip = str_of(&spec.cluster_ip);
    let cluster_ips = list_of(&spec.cluster_ips);
    let families = list_of(&spec.ip_families);
    let ips_value = || list_value(&spec.cluster_ips);

    // clusterIP and clusterIPs must agree.
    if !cluster_ip.is_empty() {
        match cluster_ips.first() {
            None => errs.push(FieldError::required("spec.clusterIPs", "")),
            Some(first) if first != cluster_ip => {
                errs.push(FieldError::invalid("spec.clusterIPs", ips_value(), "first value must match `clusterIP`"))
            }
            Some(_) => {}
        }
    } else if !cluster_ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            ips_value(),
            "must be empty when `clusterIP` is not specified",
        ));
    }

    // ipFamilies: IPv4 or IPv6, no duplicates.
    let mut seen = HashSet::new();
    for (i, family) in families.iter().enumerate() {
        let path = format!("spec.ipFamilies[{i}]");
        if !SUPPORTED_IP_FAMILIES.contains(&family.as_str()) {
            errs.push(FieldError::not_supported(&path, family.as_str(), SUPPORTED_IP_FAMILIES));
        }
        if !seen.insert(family.as_str()) {
            errs.push(FieldError::duplicate(&path, family.as_str()));
        }
    }

    // ipFamilyPolicy: nil is fine (defaulted by the registry).
    if let Some(policy) = &spec.ip_family_policy
        && !SUPPORTED_IP_FAMILY_POLICIES.contains(&policy.as_str())
    {
        errs.push(FieldError::not_supported("spec.ipFamilyPolicy", policy.as_str(), SUPPORTED_IP_FAMILY_POLICIES));
    }

    // clusterIPs: "None" only as the first and only value; everything else a valid IP.
    let mut has_invalid_ips = false;
    for (i, ip) in cluster_ips.iter().enumerate() {
        if i == 0 && ip == CLUSTER_IP_NONE {
            if cluster_ips.len() > 1 {
                has_invalid_ips = true;
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    ips_value(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let ip_errs = validate_ip_legacy(&format!("spec.clusterIPs[{i}]"), ip, strict, valid_old_ips);
        has_invalid_ips |= !ip_errs.is_empty();
        errs.extend(ip_errs);
    }

    if cluster_ips.len() > 2 {
        errs.push(FieldError::invalid("spec.clusterIPs", ips_value(), "may only hold up to 2 values"));
    }

    // Bad IPs would skew the dual-stack checks below.
    if has_invalid_ips {
        return errs;
    }

    // More than one IP must be one of each family (`netutils.IsDualStackIPStrings`).
    if cluster_ips.len() > 1 {
        let v6 = cluster_ips.iter().filter(|ip| is_ipv6_string(ip)).count();
        let dual_stack = v6 > 0 && v6 < cluster_ips.len();
        if !dual_stack {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                ips_value(),
                "may specify no more than one IP for each IP family",
            ));
        }
    }

    // Each clusterIP must match its family, where one was given.
    if !is_headless(spec) && !cluster_ips.is_empty() && !families.is_empty() {
        for (i, (ip, family)) in cluster_ips.iter().zip(families).enumerate() {
            let v6 = is_ipv6_string(ip);
            let expected = match family.as_str() {
                "IPv4" if v6 => "IPv4",
                "IPv6" if !v6 => "IPv6",
                _ => continue,
            };
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                ip.as_str(),
                format!("expected an {expected} value as indicated by `ipFamilies[{i}]`"),
            ));
        }
    }

    errs
}

/// `validateLoadBalancerClassField`: immutable LB→LB, LoadBalancer only, a qualified name.
fn validate_load_balancer_class(old: Option<&ServiceSpec>, spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let is_lb = |s: &ServiceSpec| str_of(&s.type_) == TYPE_LOAD_BALANCER;
    if let Some(old) = old
        && is_lb(old)
        && is_lb(spec)
        && old.load_balancer_class != spec.load_balancer_class
    {
        errs.push(FieldError::invalid(
            "spec.loadBalancerClass",
            opt_value(&spec.load_balancer_class),
            "may not change once set",
        ));
    }
    if let Some(class) = &spec.load_balancer_class {
        if is_lb(spec) {
            errs.extend(
                is_qualified_name(class)
                    .into_iter()
                    .map(|m| FieldError::invalid("spec.loadBalancerClass", class.as_str(), m)),
            );
        } else {
            errs.push(FieldError::forbidden("spec.loadBalancerClass", LB_ONLY));
        }
    }
    errs
}

/// `validateServiceExternalTrafficPolicy`: externalTrafficPolicy and healthCheckNodePort.
fn validate_external_traffic_policy(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let etp = str_of(&spec.external_traffic_policy);
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if !SUPPORTED_TRAFFIC_POLICIES.contains(&etp) {
        errs.push(FieldError::not_supported("spec.externalTrafficPolicy", etp, SUPPORTED_TRAFFIC_POLICIES));
    }

    let hc = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        errs.push(FieldError::required("spec.healthCheckNodePort", ""));
    } else {
        errs.extend(
            is_valid_port_num(i64::from(hc))
                .into_iter()
                .map(|m| FieldError::invalid("spec.healthCheckNodePort", hc, m)),
        );
    }
    errs
}

/// `validateServiceInternalTrafficFieldsValue`.
fn validate_internal_traffic_policy(spec: &ServiceSpec) -> Vec<FieldError> {
    match &spec.internal_traffic_policy {
        None => {
            // Not forbidden on other types, for historical reasons.
            if [TYPE_NODE_PORT, TYPE_LOAD_BALANCER, TYPE_CLUSTER_IP].contains(&str_of(&spec.type_)) {
                vec![FieldError::required("spec.internalTrafficPolicy", "")]
            } else {
                Vec::new()
            }
        }
        Some(itp) if !SUPPORTED_TRAFFIC_POLICIES.contains(&itp.as_str()) => {
            vec![FieldError::not_supported("spec.internalTrafficPolicy", itp.as_str(), SUPPORTED_TRAFFIC_POLICIES)]
        }
        Some(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// ValidateServiceUpdate.

/// `ValidateServiceUpdate`: the upgrade/downgrade rules for clusterIPs and ipFamilies, loadBalancerClass and
/// healthCheckNodePort immutability, then [`validate_service`] on the new object. (Metadata update rules are the
/// generic store's.)
pub fn validate_service_update(new: &Service, old: &Service, ctx: &ValidationContext) -> Vec<FieldError> {
    let new_spec = spec_of(new);
    let old_spec = spec_of(old);
    let mut errs = Vec::new();
    errs.extend(validate_upgrade_downgrade_cluster_ips(&old_spec, &new_spec));
    errs.extend(validate_upgrade_downgrade_ip_families(&old_spec, &new_spec));
    errs.extend(validate_load_balancer_class(Some(&old_spec), &new_spec));
    // `validateServiceExternalTrafficFieldsUpdate`.
    if needs_health_check(&old_spec)
        && needs_health_check(&new_spec)
        && old_spec.health_check_node_port.unwrap_or(0) != new_spec.health_check_node_port.unwrap_or(0)
    {
        errs.push(FieldError::forbidden("spec.healthCheckNodePort", "field is immutable"));
    }
    errs.extend(validate_service_with_old(new, Some(old), ctx));
    errs
}

/// `validateUpgradeDowngradeClusterIPs`: clusterIPs[0] never changes; the secondary may be added, or released
/// with `ipFamilyPolicy: SingleStack`.
fn validate_upgrade_downgrade_cluster_ips(old: &ServiceSpec, new: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if str_of(&new.type_) == TYPE_EXTERNAL_NAME || str_of(&old.type_) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    if is_headless(old) && is_headless(new) {
        return errs;
    }
    let old_ips = list_of(&old.cluster_ips);
    let new_ips = list_of(&new.cluster_ips);
    let value = || list_value(&new.cluster_ips);
    if old_ips.len() == new_ips.len() {
        for (i, (o, n)) in old_ips.iter().zip(new_ips).enumerate() {
            if o != n {
                errs.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), value(), "may not change once set"));
            }
        }
    } else if old_ips.len() > new_ips.len() {
        if new_ips.is_empty() {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", value(), "primary clusterIP can not be unset"));
        }
        if let (Some(o), Some(n)) = (old_ips.first(), new_ips.first())
            && o != n
        {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", value(), "may not change once set"));
        }
        if new_ips.len() == 1 && new.ip_family_policy.as_deref() != Some(SINGLE_STACK) {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                opt_value(&new.ip_family_policy),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if let (Some(o), Some(n)) = (old_ips.first(), new_ips.first())
        && o != n
    {
        errs.push(FieldError::invalid("spec.clusterIPs[0]", value(), "may not change once set"));
    }
    errs
}

/// `validateUpgradeDowngradeIPFamilies`, including upstream's quirks: every changed index is reported at
/// `spec.ipFamilies[0]`, "primary ipFamily can not be unset" is keyed on clusterIPs being empty, and a changed
/// primary family reports the clusterIPs as the bad value.
fn validate_upgrade_downgrade_ip_families(old: &ServiceSpec, new: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if str_of(&new.type_) == TYPE_EXTERNAL_NAME || str_of(&old.type_) == TYPE_EXTERNAL_NAME {
        return errs;
    }
    // Changing to or from headless, or headless to headless, may change families freely.
    if is_headless(old) || is_headless(new) {
        return errs;
    }
    let old_families = list_of(&old.ip_families);
    let new_families = list_of(&new.ip_families);
    if old_families.len() == new_families.len() {
        for (o, n) in old_families.iter().zip(new_families) {
            if o != n {
                errs.push(FieldError::invalid(
                    "spec.ipFamilies[0]",
                    list_value(&new.ip_families),
                    "may not change once set",
                ));
            }
        }
    } else if old_families.len() > new_families.len() {
        if list_of(&new.cluster_ips).is_empty() {
            errs.push(FieldError::invalid(
                "spec.ipFamilies[0]",
                list_value(&new.ip_families),
                "primary ipFamily can not be unset",
            ));
        }
        if let (Some(n), Some(o)) = (new_families.first(), old_families.first())
            && n != o
        {
            errs.push(FieldError::invalid(
                "spec.ipFamilies[0]",
                list_value(&new.cluster_ips),
                "may not change once set",
            ));
        }
        if new_families.len() == 1 && new.ip_family_policy.as_deref() != Some(SINGLE_STACK) {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                opt_value(&new.ip_family_policy),
                "must be set to 'SingleStack' when releasing the secondary ipFamily",
            ));
        }
    } else if let (Some(o), Some(n)) = (old_families.first(), new_families.first())
        && o != n
    {
        errs.push(FieldError::invalid("spec.ipFamilies[0]", list_value(&new.cluster_ips), "may not change once set"));
    }
    errs
}

// ---------------------------------------------------------------------------------------------------------------
// ValidateServiceStatusUpdate.

/// `ValidateServiceStatusUpdate`: `ValidateLoadBalancerStatus` on the new status against the new spec (with the
/// `AllowServiceLBStatusOnNonLB` gate off and `LoadBalancerIPMode` on, as in 1.33). Ingress `ports` are not
/// validated upstream. (Metadata update rules are the generic store's.)
pub fn validate_service_status_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let spec = spec_of(new);
    let ingress = ingress_of(new);
    let old_ips: Vec<&str> = ingress_of(old).iter().filter_map(|i| i.ip.as_deref()).collect();
    let mut errs = Vec::new();
    let path = "status.loadBalancer.ingress";
    if str_of(&spec.type_) != TYPE_LOAD_BALANCER && !ingress.is_empty() {
        errs.push(FieldError::forbidden(path, "may only be used when `spec.type` is 'LoadBalancer'"));
        return errs;
    }
    for (i, ing) in ingress.iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let ip = str_of(&ing.ip);
        if !ip.is_empty() {
            errs.extend(validate_ip_legacy(&format!("{idx}.ip"), ip, false, &old_ips));
        }
        match &ing.ip_mode {
            None if !ip.is_empty() => {
                errs.push(FieldError::required(format!("{idx}.ipMode"), "must be specified when `ip` is set"))
            }
            None => {}
            Some(_) if ip.is_empty() => {
                errs.push(FieldError::forbidden(format!("{idx}.ipMode"), "may not be specified when `ip` is not set"))
            }
            Some(mode) if !SUPPORTED_IP_MODES.contains(&mode.as_str()) => {
                errs.push(FieldError::not_supported(format!("{idx}.ipMode"), mode.as_str(), SUPPORTED_IP_MODES))
            }
            Some(_) => {}
        }
        let hostname = str_of(&ing.hostname);
        if !hostname.is_empty() {
            let hpath = format!("{idx}.hostname");
            errs.extend(is_dns1123_subdomain(hostname).into_iter().map(|m| FieldError::invalid(&hpath, hostname, m)));
            if parse_ip_sloppy(hostname).is_some() {
                errs.push(FieldError::invalid(&hpath, hostname, "must be a DNS name, not an IP address"));
            }
        }
    }
    errs
}

fn ingress_of(svc: &Service) -> &[LoadBalancerIngress] {
    svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).map_or(&[], |lb| list_of(&lb.ingress))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
