//! A process pod's container environment as the kubelet builds it (`pkg/kubelet/kubelet_pods.go`
//! `makeEnvironmentVariables`, `podFieldSelectorRuntimeValue`; `pkg/fieldpath`; the `$(VAR)`
//! expansion of `third_party/forked/golang/expansion`), plus what the container runtime adds
//! (`HOSTNAME`) and what kplane adds for host processes (`POD_IP`, the host's `PATH`/`HOME`).

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, HashMap};

/// Why a container's environment could not be built. Its `Display` is the message the kubelet
/// puts in the `CreateContainerConfigError` waiting state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The kubelet's ConfigMap manager reports a missing object with the singular resource name.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound { key: String, namespace: String, name: String },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound { key: String, namespace: String, name: String },
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("{0}")]
    Lookup(String),
}

/// Where ConfigMaps, Secrets and Service variables come from (the node agent reads them
/// through its client; unit tests use maps). `Ok(None)` means the object does not exist.
pub trait EnvLookup: Send + Sync {
    /// The Service variables of spec §6 for this pod (namespace, `enableServiceLinks`).
    fn service_env(&self, pod: &Pod) -> BoxFuture<'_, Result<BTreeMap<String, String>, EnvError>>;
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConfigMap>, EnvError>>;
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Secret>, EnvError>>;
}

/// What the node knows that the pod object does not say.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub host_ips: Vec<String>,
    /// Node allocatable, the default for unset limits (`defaultPodLimitsForDownwardAPI`).
    pub allocatable: BTreeMap<String, Quantity>,
}

/// A built environment and the notes the kubelet turns into Events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// In definition order: envFrom and env (later ones replace earlier in place), then the
    /// Service variables not overridden.
    pub vars: Vec<(String, String)>,
    /// Warning Events (reason, message), e.g. `InvalidEnvironmentVariableNames`.
    pub warnings: Vec<(String, String)>,
}

impl ContainerEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An ordered map: insertion order kept, a later set replaces the value in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.vars[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.vars.len());
                self.vars.push((k, v));
            }
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.index.get(k).map(|&i| self.vars[i].1.as_str())
    }
}

/// `$(VAR)` expansion as upstream: `$$` is an escaped `$`, an unknown or unterminated reference
/// is left as written, any other `$x` is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        out.push_str(&input[copied..i]);
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match input[i + 2..].find(')') {
                Some(end) => {
                    let name = &input[i + 2..i + 2 + end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    i += 3 + end;
                }
                None => {
                    out.push_str("$(");
                    i += 2;
                }
            },
            _ => {
                // `$` followed by something else: both kept (the next char may be multi-byte).
                out.push('$');
                i += 1;
            }
        }
        copied = i;
    }
    out.push_str(&input[copied..]);
    out
}

/// Environment variable names the API accepts with `RelaxedEnvironmentVariableValidation`
/// (on by default in 1.33): printable ASCII but `=`.
pub fn is_env_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (32..=126).contains(&b) && b != b'=')
}

/// `name="value"` lines sorted by key, as `fieldpath.FormatMap` (Go `%q` quoting).
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    let Some(m) = m else { return String::new() };
    m.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `metadata.labels['key']` → ("metadata.labels", "key").
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let open = path.find("['")?;
    let rest = path[open + 2..].strip_suffix("']")?;
    Some((&path[..open], rest))
}

/// The value of a `fieldRef` (`podFieldSelectorRuntimeValue` then `ExtractFieldPathAsString`).
pub fn field_ref_value(pod: &Pod, path: &str, pod_ips: &[String], node: &NodeFacts) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" => node.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => node.host_ips.join(","),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        other => match split_subscript(other) {
            Some(("metadata.labels", k)) => meta.labels.as_ref().and_then(|m| m.get(k)).cloned().unwrap_or_default(),
            Some(("metadata.annotations", k)) => {
                meta.annotations.as_ref().and_then(|m| m.get(k)).cloned().unwrap_or_default()
            }
            _ => return Err(EnvError::UnsupportedFieldPath(other.to_string())),
        },
    })
}

/// A quantity as a number of base units (cores, bytes), enough for the downward API.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// A `resourceFieldRef` (`ExtractContainerResourceValue`): limits default to node allocatable;
/// the value is divided by the divisor and rounded up (CPU in millicores first, as upstream).
pub fn resource_field_value(
    pod: &Pod,
    container: &Container,
    resource: &str,
    container_name: Option<&str>,
    divisor: Option<&Quantity>,
    node: &NodeFacts,
) -> Result<String, EnvError> {
    let target = match container_name.filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == name))
            .ok_or_else(|| EnvError::ContainerNotFound(name.to_string()))?,
    };
    let (kind, name) = resource.split_once('.').ok_or_else(|| EnvError::UnsupportedResource(resource.into()))?;
    let res = target.resources.as_ref();
    let value = match kind {
        "limits" => res
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(name))
            .or_else(|| node.allocatable.get(name))
            .and_then(|q| parse_quantity(&q.0)),
        "requests" => Some(
            res.and_then(|r| r.requests.as_ref())
                .and_then(|l| l.get(name))
                .and_then(|q| parse_quantity(&q.0))
                .unwrap_or(0.0),
        ),
        _ => return Err(EnvError::UnsupportedResource(resource.into())),
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(EnvError::UnsupportedResource(resource.into()));
    }
    let value = value.unwrap_or(0.0);
    let divisor = divisor.and_then(|d| parse_quantity(&d.0)).filter(|d| *d > 0.0).unwrap_or(1.0);
    let n = if name == "cpu" {
        ((value * 1000.0).ceil() / (divisor * 1000.0).round()).ceil()
    } else {
        (value / divisor).ceil()
    };
    Ok(format!("{}", n as i64))
}

/// The pod's hostname (`GeneratePodHostNameAndDomain`): `spec.hostname`, else the pod name cut
/// to 63 characters without a trailing `-` or `.`.
pub fn pod_hostname(pod: &Pod) -> String {
    if let Some(h) = pod.spec.as_ref().and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()) {
        return h;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let cut: String = name.chars().take(63).collect();
    if name.len() > 63 { cut.trim_end_matches(['-', '.']).to_string() } else { cut }
}

/// `makeEnvironmentVariables`: envFrom, then env (values expanded against what came before and
/// the Service variables; valueFrom resolved), then the Service variables not set by either.
pub async fn build_env(
    lookup: &dyn EnvLookup,
    pod: &Pod,
    container: &Container,
    pod_ips: &[String],
    node: &NodeFacts,
) -> Result<ContainerEnv, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let service_env = lookup.service_env(pod).await?;
    let mut config_maps: HashMap<String, ConfigMap> = HashMap::new();
    let mut secrets: HashMap<String, Secret> = HashMap::new();
    let mut env = OrderedEnv::default();
    let mut warnings = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, data): (&str, String, Vec<(String, String)>) = if let Some(r) = &from.config_map_ref {
            let name = r.name.clone();
            let Some(cm) = fetch_config_map(lookup, &mut config_maps, ns, &name, r.optional.unwrap_or(false)).await?
            else {
                continue;
            };
            ("configMap", name, cm.data.clone().unwrap_or_default().into_iter().collect())
        } else if let Some(r) = &from.secret_ref {
            let name = r.name.clone();
            let Some(s) = fetch_secret(lookup, &mut secrets, ns, &name, r.optional.unwrap_or(false)).await? else {
                continue;
            };
            let data = s.data.clone().unwrap_or_default();
            ("secret", name, data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect())
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if !is_env_var_name(&k) {
                invalid.push(k);
                continue;
            }
            env.set(k, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push((
                "InvalidEnvironmentVariableNames".to_string(),
                format!(
                    "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", ")
                ),
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let value = var.value.clone().unwrap_or_default();
        let value = if !value.is_empty() {
            expand(&value, |k| env.get(k).or_else(|| service_env.get(k).map(String::as_str)).map(str::to_string))
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_ref_value(pod, &f.field_path, pod_ips, node)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field_value(
                    pod,
                    container,
                    &r.resource,
                    r.container_name.as_deref(),
                    r.divisor.as_ref(),
                    node,
                )?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(cm) = fetch_config_map(lookup, &mut config_maps, ns, &r.name, optional).await? else {
                    continue;
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: r.key.clone(),
                            namespace: ns.into(),
                            name: r.name.clone(),
                        });
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(s) = fetch_secret(lookup, &mut secrets, ns, &r.name, optional).await? else {
                    continue;
                };
                match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: r.key.clone(),
                            namespace: ns.into(),
                            name: r.name.clone(),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }

    let mut vars = env.vars;
    let set: std::collections::HashSet<String> = vars.iter().map(|(k, _)| k.clone()).collect();
    vars.extend(service_env.into_iter().filter(|(k, _)| !set.contains(k)));
    Ok(ContainerEnv { vars, warnings })
}

async fn fetch_config_map<'m>(
    lookup: &dyn EnvLookup,
    cache: &'m mut HashMap<String, ConfigMap>,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'m ConfigMap>, EnvError> {
    if !cache.contains_key(name) {
        match lookup.config_map(ns, name).await? {
            Some(cm) => {
                cache.insert(name.to_string(), cm);
            }
            None if optional => return Ok(None),
            None => return Err(EnvError::ConfigMapNotFound(name.to_string())),
        }
    }
    Ok(cache.get(name))
}

async fn fetch_secret<'m>(
    lookup: &dyn EnvLookup,
    cache: &'m mut HashMap<String, Secret>,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'m Secret>, EnvError> {
    if !cache.contains_key(name) {
        match lookup.secret(ns, name).await? {
            Some(s) => {
                cache.insert(name.to_string(), s);
            }
            None if optional => return Ok(None),
            None => return Err(EnvError::SecretNotFound(name.to_string())),
        }
    }
    Ok(cache.get(name))
}

/// The environment the host process gets: the host's `PATH` and `HOME` (an image would bring
/// its own; a host process needs the host's to find programs), `HOSTNAME` as the runtime sets
/// it, `POD_IP` (kplane's addition: the address the process should bind), then the kubelet's
/// variables, which override all of these.
pub fn process_env(built: &ContainerEnv, hostname: &str, pod_ip: Option<&str>) -> Vec<(String, String)> {
    let mut env = OrderedEnv::default();
    for key in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            env.set(key.to_string(), v);
        }
    }
    if env.get("PATH").is_none() {
        env.set("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env.set("HOSTNAME".into(), hostname.to_string());
    if let Some(ip) = pod_ip.filter(|ip| !ip.is_empty()) {
        env.set("POD_IP".into(), ip.to_string());
    }
    for (k, v) in &built.vars {
        env.set(k.clone(), v.clone());
    }
    env.vars
}

/// `command` + `args` with `$(VAR)` expanded against the final environment
/// (`ExpandContainerCommandAndArgs`). `None` when the container names no command: without an
/// image there is no entrypoint to fall back on.
pub fn command_line(container: &Container, env: &[(String, String)]) -> Option<Vec<String>> {
    let command = container.command.as_ref().filter(|c| !c.is_empty())?;
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |k: &str| map.get(k).map(|v| v.to_string());
    Some(command.iter().chain(container.args.iter().flatten()).map(|s| expand(s, lookup)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    #[derive(Default)]
    struct Maps {
        services: BTreeMap<String, String>,
        config_maps: BTreeMap<String, ConfigMap>,
        secrets: BTreeMap<String, Secret>,
    }

    impl EnvLookup for Maps {
        fn service_env(&self, _: &Pod) -> BoxFuture<'_, Result<BTreeMap<String, String>, EnvError>> {
            Box::pin(async move { Ok(self.services.clone()) })
        }
        fn config_map<'a>(&'a self, _: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<ConfigMap>, EnvError>> {
            Box::pin(async move { Ok(self.config_maps.get(name).cloned()) })
        }
        fn secret<'a>(&'a self, _: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Secret>, EnvError>> {
            Box::pin(async move { Ok(self.secrets.get(name).cloned()) })
        }
    }

    fn cm(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Default::default()
        }
    }

    fn pod(container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "ns1", "uid": "u-1",
                "labels": {"app": "web", "tier": "a\"b"}, "annotations": {"note": "hi"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "sa", "containers": [container]}
        }))
        .expect("pod")
    }

    fn lookup() -> Maps {
        let mut m = Maps::default();
        m.services.insert("FOOSERVICE_SERVICE_HOST".into(), "10.0.0.5".into());
        m.services.insert("FOOSERVICE_SERVICE_PORT".into(), "8765".into());
        m.services.insert("SHADOWED".into(), "from-service".into());
        m.config_maps.insert("cfg".into(), cm(&[("A", "1"), ("B", "2"), ("bad=key", "x"), ("SHADOWED", "from-cm")]));
        m.secrets.insert("sec".into(), secret(&[("TOKEN", "s3cr3t")]));
        m
    }

    fn node() -> NodeFacts {
        NodeFacts {
            host_ips: vec!["192.168.1.2".into()],
            allocatable: [("cpu".to_string(), Quantity("4".into())), ("memory".to_string(), Quantity("8Gi".into()))]
                .into(),
        }
    }

    async fn build(container: serde_json::Value) -> Result<ContainerEnv, EnvError> {
        let p = pod(container);
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        build_env(&lookup(), &p, &c, &["10.244.0.7".into()], &node()).await
    }

    #[test]
    fn expansion_follows_upstream() {
        let vars: HashMap<&str, &str> = [("A", "x"), ("EMPTY", "")].into();
        let f = |k: &str| vars.get(k).map(|v| v.to_string());
        let cases = [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$x"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("$", "$"),
            ("a$", "a$"),
            ("$(EMPTY)z", "z"),
            ("$()", "$()"),
            ("$(A)$(A)", "xx"),
            ("é$(A)é", "éxé"),
            ("$é", "$é"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, f), want, "{input}");
        }
    }

    #[tokio::test]
    async fn env_from_env_and_services_in_upstream_order() {
        let env = build(json!({
            "name": "c", "image": "x",
            "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec"}, "prefix": "S_"}],
            "env": [
                {"name": "B", "value": "override"},
                {"name": "REF", "value": "$(A)-$(FOOSERVICE_SERVICE_PORT)-$(LATER)-$$(A)"},
                {"name": "LATER", "value": "l"},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "LABELS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
                {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                {"name": "CM_A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "A"}}},
                {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "A", "optional": true}}},
                {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}}
            ]
        }))
        .await
        .expect("env");
        let get = |k: &str| env.get(k).map(str::to_string);
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("override"));
        assert_eq!(get("S_TOKEN").as_deref(), Some("s3cr3t"));
        assert_eq!(get("REF").as_deref(), Some("1-8765-$(LATER)-$(A)"));
        assert_eq!(get("NAME").as_deref(), Some("web-1"));
        assert_eq!(get("NS").as_deref(), Some("ns1"));
        assert_eq!(get("UID").as_deref(), Some("u-1"));
        assert_eq!(get("APP").as_deref(), Some("web"));
        assert_eq!(get("LABELS").as_deref(), Some("app=\"web\"\ntier=\"a\\\"b\""));
        assert_eq!(get("NOTE").as_deref(), Some("hi"));
        assert_eq!(get("NODE").as_deref(), Some("node-a"));
        assert_eq!(get("SA").as_deref(), Some("sa"));
        assert_eq!(get("HOST_IP").as_deref(), Some("192.168.1.2"));
        assert_eq!(get("MY_IP").as_deref(), Some("10.244.0.7"));
        assert_eq!(get("CM_A").as_deref(), Some("1"));
        assert_eq!(get("SEC").as_deref(), Some("s3cr3t"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("OPT2"), None);
        // envFrom overrides a Service variable of the same name; Service variables come last.
        assert_eq!(get("SHADOWED").as_deref(), Some("from-cm"));
        assert_eq!(env.vars.last().map(|(k, _)| k.as_str()), Some("FOOSERVICE_SERVICE_PORT"));
        assert_eq!(env.vars.iter().filter(|(k, _)| k == "SHADOWED").count(), 1);
        assert_eq!(
            env.warnings,
            vec![(
                "InvalidEnvironmentVariableNames".to_string(),
                "Keys [bad=key] from the EnvFrom configMap ns1/cfg were skipped since they are considered invalid environment variable names.".to_string()
            )]
        );
    }

    #[tokio::test]
    async fn missing_sources_give_upstream_messages() {
        let cases = [
            (json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}), Some("configmap \"gone\" not found")),
            (json!({"envFrom": [{"configMapRef": {"name": "gone", "optional": true}}]}), None),
            (json!({"envFrom": [{"secretRef": {"name": "gone"}}]}), Some("secret \"gone\" not found")),
            (
                json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "Z"}}}]}),
                Some("couldn't find key Z in ConfigMap ns1/cfg"),
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "Z"}}}]}),
                Some("couldn't find key Z in Secret ns1/sec"),
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "Z"}}}]}),
                Some("secret \"gone\" not found"),
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}),
                Some("unsupported fieldPath: spec.bogus"),
            ),
        ];
        for (mut c, want) in cases {
            c["name"] = "c".into();
            let got = build(c.clone()).await;
            match want {
                Some(msg) => assert_eq!(got.expect_err("must fail").to_string(), msg, "{c}"),
                None => assert!(got.is_ok(), "{c}"),
            }
        }
    }

    #[tokio::test]
    async fn resource_field_refs_divide_and_round_up() {
        let env = build(json!({
            "name": "c",
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "100m"}},
            "env": [
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}}
            ]
        }))
        .await
        .expect("env");
        assert_eq!(env.get("CPU"), Some("1"));
        assert_eq!(env.get("CPU_M"), Some("250"));
        assert_eq!(env.get("MEM_MI"), Some("64"));
        assert_eq!(env.get("REQ_M"), Some("100"));
        assert_eq!(env.get("REQ_MEM"), Some("0"));
        // Unset limits fall back to node allocatable.
        let env = build(json!({"name": "c", "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Gi"}}}
        ]}))
        .await
        .expect("env");
        assert_eq!(env.get("CPU"), Some("4"));
        assert_eq!(env.get("MEM"), Some("8"));
    }

    #[test]
    fn process_env_adds_hostname_and_pod_ip_unless_defined() {
        let built = ContainerEnv { vars: vec![("POD_IP".into(), "mine".into())], warnings: vec![] };
        let env = process_env(&built, "web-1", Some("10.1.1.1"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HOSTNAME"), Some("web-1"));
        assert_eq!(get("POD_IP"), Some("mine"));
        assert!(get("PATH").is_some());
        let env = process_env(&ContainerEnv::default(), "h", Some("10.1.1.1"));
        assert!(env.contains(&("POD_IP".to_string(), "10.1.1.1".to_string())));
    }

    #[test]
    fn command_line_expands_against_the_final_env() {
        let c: Container = serde_json::from_value(json!({
            "name": "c", "command": ["sh", "-c"], "args": ["echo $(MSG) $$(MSG) $(NOPE) $HOME"]
        }))
        .expect("container");
        let env = vec![("MSG".to_string(), "hi".to_string())];
        assert_eq!(command_line(&c, &env), Some(vec!["sh".into(), "-c".into(), "echo hi $(MSG) $(NOPE) $HOME".into()]));
        let no_command: Container = serde_json::from_value(json!({"name": "c", "args": ["x"]})).expect("container");
        assert_eq!(command_line(&no_command, &env), None);
    }

    #[test]
    fn hostname_is_the_pod_name_or_spec_hostname() {
        let mut p = pod(json!({"name": "c"}));
        assert_eq!(pod_hostname(&p), "web-1");
        p.metadata.name = Some(format!("{}-.x", "a".repeat(62)));
        assert_eq!(pod_hostname(&p), "a".repeat(62));
        p.spec.as_mut().expect("spec").hostname = Some("custom".into());
        assert_eq!(pod_hostname(&p), "custom");
    }
}
