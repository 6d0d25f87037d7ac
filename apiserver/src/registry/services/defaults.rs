//! Service defaulting: `SetDefaults_Service` (`pkg/apis/core/v1/defaults.go`, decode-time, on create and
//! update), `initIPFamilyFields` (`pkg/registry/core/service/storage/alloc.go`: ipFamilyPolicy and ipFamilies from
//! the cluster's families; the allocation itself lives elsewhere) and `dropTypeDependentFields`
//! (`pkg/registry/core/service/strategy.go`: what a type change wipes on update).

use super::validation::{
    AFFINITY_CLIENT_IP, AFFINITY_NONE, CLUSTER_IP_NONE, IP_MODE_VIP, POLICY_CLUSTER, PREFER_DUAL_STACK,
    REQUIRE_DUAL_STACK, SINGLE_STACK, TYPE_CLUSTER_IP, TYPE_EXTERNAL_NAME, TYPE_LOAD_BALANCER, TYPE_NODE_PORT,
    cluster_ips_related_fields, externally_accessible, family_of, list_of, spec_of, str_of,
};
use crate::error::FieldError;
use k8s_openapi::api::core::v1::{ClientIPConfig, Service, ServiceSpec, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::HashSet;

/// `v1.DefaultClientIPServiceAffinitySeconds` (3 hours).
pub const DEFAULT_CLIENT_IP_AFFINITY_SECONDS: i32 = 10800;

/// A service IP family (`core.IPFamily`): the allocators' own.
pub use crate::alloc::IpFamily;

fn is_empty(v: &Option<String>) -> bool {
    str_of(v).is_empty()
}

/// `SetDefaults_Service`: sessionAffinity `None` (config dropped) or ClientIP timeout 10800, type `ClusterIP`,
/// port protocol `TCP` and targetPort = port, externalTrafficPolicy `Cluster` when externally accessible,
/// internalTrafficPolicy `Cluster` (not for ExternalName), allocateLoadBalancerNodePorts `true` and ingress
/// ipMode `VIP` for LoadBalancer.
///
/// Also normalises an empty `spec.selector` (`{}`) to unset, as upstream's `omitempty` serialisation does:
/// a selectorless service must stay selectorless (an empty selector would otherwise match every pod).
pub fn set_defaults(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);

    if spec.selector.as_ref().is_some_and(|s| s.is_empty()) {
        spec.selector = None;
    }

    if is_empty(&spec.session_affinity) {
        spec.session_affinity = Some(AFFINITY_NONE.to_string());
    }
    match str_of(&spec.session_affinity) {
        AFFINITY_NONE => spec.session_affinity_config = None,
        AFFINITY_CLIENT_IP => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .is_some_and(|c| c.timeout_seconds.is_some());
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig { timeout_seconds: Some(DEFAULT_CLIENT_IP_AFFINITY_SECONDS) }),
                });
            }
        }
        _ => {}
    }

    if is_empty(&spec.type_) {
        spec.type_ = Some(TYPE_CLUSTER_IP.to_string());
    }

    for port in spec.ports.iter_mut().flatten() {
        if is_empty(&port.protocol) {
            port.protocol = Some("TCP".to_string());
        }
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(n)) => *n == 0,
            Some(IntOrString::String(s)) => s.is_empty(),
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }

    if externally_accessible(spec) && is_empty(&spec.external_traffic_policy) {
        spec.external_traffic_policy = Some(POLICY_CLUSTER.to_string());
    }

    let ty = str_of(&spec.type_).to_string();
    if spec.internal_traffic_policy.is_none() && [TYPE_NODE_PORT, TYPE_LOAD_BALANCER, TYPE_CLUSTER_IP].contains(&&*ty) {
        spec.internal_traffic_policy = Some(POLICY_CLUSTER.to_string());
    }

    if ty == TYPE_LOAD_BALANCER {
        if spec.allocate_load_balancer_node_ports.is_none() {
            spec.allocate_load_balancer_node_ports = Some(true);
        }
        let ingress = svc.status.as_mut().and_then(|s| s.load_balancer.as_mut()).and_then(|lb| lb.ingress.as_mut());
        for ing in ingress.into_iter().flatten() {
            if !is_empty(&ing.ip) && ing.ip_mode.is_none() {
                ing.ip_mode = Some(IP_MODE_VIP.to_string());
            }
        }
    }
}

/// `initIPFamilyFields`: defaults `spec.ipFamilyPolicy` (the old value on update; `RequireDualStack` for a
/// headless selectorless service; else `SingleStack`) and `spec.ipFamilies` (from the clusterIPs given, else the
/// cluster's primary family, plus the other one when dual-stack is asked for and available), and rejects what the
/// cluster cannot serve. `cluster_families` are the cluster's service IP families, primary first. Not for
/// ExternalName. Errors are upstream's (HTTP 422, `Service "x" is invalid`).
pub fn init_ip_families(
    svc: &mut Service,
    old: Option<&Service>,
    cluster_families: &[IpFamily],
) -> Result<(), Vec<FieldError>> {
    let old_spec = old.map(spec_of);
    let old_spec = old_spec.as_deref();
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    if str_of(&spec.type_) == TYPE_EXTERNAL_NAME {
        return Ok(());
    }
    let Some(&primary) = cluster_families.first() else {
        return Ok(());
    };
    let configured = |f: &str| IpFamily::parse(f).is_some_and(|f| cluster_families.contains(&f));

    // A PreferDualStack service is never upgraded or downgraded just because the cluster changed.
    if let Some(old_spec) = old_spec
        && is_matching_prefer_dual_stack(spec, old_spec)
    {
        return Ok(());
    }

    // Infer a policy: the old one on update, dual-stack for headless selectorless, else single-stack.
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = match old_spec.and_then(|o| o.ip_family_policy.clone()) {
            Some(policy) => Some(policy),
            None if str_of(&spec.cluster_ip) == CLUSTER_IP_NONE && selectorless(spec) => {
                Some(REQUIRE_DUAL_STACK.to_string())
            }
            None => Some(SINGLE_STACK.to_string()),
        };
    }
    let policy = str_of(&spec.ip_family_policy).to_string();
    let policy_value = Value::from(policy.as_str());

    // Loose pre-validation, so that what follows need not consider corner cases.
    let errs = cluster_ips_related_fields(spec, false, &[]);
    if !errs.is_empty() {
        return Err(errs);
    }

    let mut errs = Vec::new();
    if let Some(old_spec) = old_spec {
        if policy == SINGLE_STACK {
            // Unchanged clusterIPs/ipFamilies with single-stack is clear intent to release the secondary.
            if list_of(&spec.cluster_ips) == list_of(&old_spec.cluster_ips)
                && let Some(ips) = spec.cluster_ips.as_mut()
            {
                ips.truncate(1);
            }
            if list_of(&spec.ip_families) == list_of(&old_spec.ip_families)
                && let Some(families) = spec.ip_families.as_mut()
            {
                families.truncate(1);
            }
        } else {
            let reduced = |new: &[String], old: &[String]| !new.is_empty() && new.len() < old.len();
            if reduced(list_of(&spec.cluster_ips), list_of(&old_spec.cluster_ips)) {
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    policy_value.clone(),
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if reduced(list_of(&spec.ip_families), list_of(&old_spec.ip_families)) {
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    policy_value.clone(),
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }

    if policy == SINGLE_STACK {
        if list_of(&spec.cluster_ips).len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy_value.clone(),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if list_of(&spec.ip_families).len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy_value.clone(),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }

    // Infer ipFamilies from the clusterIPs given.
    let cluster_ips = list_of(&spec.cluster_ips).to_vec();
    for (i, ip) in cluster_ips.iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        if i < list_of(&spec.ip_families).len() {
            continue;
        }
        match family_of(ip) {
            Some(family) if cluster_families.contains(&family) => {
                spec.ip_families.get_or_insert_with(Vec::new).push(family.as_str().to_string());
            }
            family => errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                cluster_ips.clone(),
                format!("{} is not configured on this cluster", family.map_or("unknown", IpFamily::as_str)),
            )),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }

    // Headless selectorless: the primary family, plus the other one unless single-stack, even on a single-stack
    // cluster. This returns before the dual-stack checks, which it is allowed to break.
    if str_of(&spec.cluster_ip) == CLUSTER_IP_NONE && selectorless(spec) {
        let families = spec.ip_families.get_or_insert_with(Vec::new);
        if families.is_empty() {
            families.push(primary.as_str().to_string());
        }
        if families.len() < 2 && policy != SINGLE_STACK {
            let other = if families[0] == IpFamily::V4.as_str() { IpFamily::V6 } else { IpFamily::V4 };
            families.push(other.as_str().to_string());
        }
        return Ok(());
    }

    if policy == REQUIRE_DUAL_STACK && cluster_families.len() < 2 {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            policy_value,
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, family) in list_of(&spec.ip_families).iter().enumerate() {
        if !configured(family) {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                family.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }

    let families = spec.ip_families.get_or_insert_with(Vec::new);
    if families.is_empty() {
        families.push(primary.as_str().to_string());
    }
    if policy != SINGLE_STACK
        && families.len() == 1
        && cluster_families.len() == 2
        && let Some(first) = IpFamily::parse(&families[0])
    {
        families.push(first.other().as_str().to_string());
    }
    Ok(())
}

fn selectorless(spec: &ServiceSpec) -> bool {
    spec.selector.as_ref().is_none_or(|s| s.is_empty())
}

/// `isMatchingPreferDualStackClusterIPFields`: an update of a PreferDualStack service (of a type that gets a
/// clusterIP) that keeps its type, policy, clusterIPs and ipFamilies.
fn is_matching_prefer_dual_stack(new: &ServiceSpec, old: &ServiceSpec) -> bool {
    let Some(policy) = &new.ip_family_policy else {
        return false;
    };
    let ty = str_of(&new.type_);
    ty == str_of(&old.type_)
        && [TYPE_CLUSTER_IP, TYPE_NODE_PORT, TYPE_LOAD_BALANCER].contains(&ty)
        && policy == PREFER_DUAL_STACK
        && old.ip_family_policy.as_deref().is_none_or(|p| p == PREFER_DUAL_STACK)
        && list_of(&new.cluster_ips) == list_of(&old.cluster_ips)
        && list_of(&new.ip_families) == list_of(&old.ip_families)
}

/// `dropTypeDependentFields` (runs on every update, after allocation, before validation): wipes what the new
/// type no longer uses, but only where the client left the old value unchanged (a changed value is left for
/// validation to report). Also clears `status.loadBalancer` for any type but LoadBalancer.
pub fn drop_type_dependent_fields(new: &mut Service, old: &Service) {
    let old_spec = spec_of(old);
    let spec = new.spec.get_or_insert_with(ServiceSpec::default);
    let old_ty = str_of(&old_spec.type_);
    let new_ty = str_of(&spec.type_).to_string();

    // needsClusterIP: anything but ExternalName ("None" counts as a value).
    if old_ty != TYPE_EXTERNAL_NAME && new_ty == TYPE_EXTERNAL_NAME {
        if str_of(&old_spec.cluster_ip) == str_of(&spec.cluster_ip)
            && list_of(&old_spec.cluster_ips) == list_of(&spec.cluster_ips)
        {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
        }
        if list_of(&old_spec.ip_families) == list_of(&spec.ip_families) {
            spec.ip_families = None;
        }
        if str_of(&old_spec.ip_family_policy) == str_of(&spec.ip_family_policy) {
            spec.ip_family_policy = None;
        }
    }

    // NodePorts: wiped if the new set adds no net-new value.
    let needs_node_port = |t: &str| t == TYPE_NODE_PORT || t == TYPE_LOAD_BALANCER;
    if needs_node_port(old_ty) && !needs_node_port(&new_ty) {
        let node_ports = |ports: &[k8s_openapi::api::core::v1::ServicePort]| -> HashSet<i32> {
            ports.iter().filter_map(|p| p.node_port).filter(|&n| n != 0).collect()
        };
        let old_ports = node_ports(list_of(&old_spec.ports));
        if node_ports(list_of(&spec.ports)).is_subset(&old_ports) {
            for port in spec.ports.iter_mut().flatten() {
                port.node_port = None;
            }
        }
    }

    // healthCheckNodePort: LoadBalancer with externalTrafficPolicy Local.
    let needs_hc = |s: &ServiceSpec| {
        str_of(&s.type_) == TYPE_LOAD_BALANCER && str_of(&s.external_traffic_policy) == super::validation::POLICY_LOCAL
    };
    if needs_hc(&old_spec)
        && !needs_hc(spec)
        && old_spec.health_check_node_port.unwrap_or(0) == spec.health_check_node_port.unwrap_or(0)
    {
        spec.health_check_node_port = None;
    }

    if old_ty == TYPE_LOAD_BALANCER && new_ty != TYPE_LOAD_BALANCER {
        if let (Some(o), Some(n)) = (old_spec.allocate_load_balancer_node_ports, spec.allocate_load_balancer_node_ports)
            && o == n
        {
            spec.allocate_load_balancer_node_ports = None;
        }
        if old_spec.load_balancer_class == spec.load_balancer_class {
            spec.load_balancer_class = None;
        }
    }

    if externally_accessible(&old_spec)
        && !externally_accessible(spec)
        && str_of(&old_spec.external_traffic_policy) == str_of(&spec.external_traffic_policy)
    {
        spec.external_traffic_policy = None;
    }

    if new_ty != TYPE_LOAD_BALANCER {
        new.status.get_or_insert_with(Default::default).load_balancer = Some(Default::default());
    }
}
