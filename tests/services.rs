//! The Service registry through the API (spec `service-semantics.md` §0–§2, §7 item 15): validation
//! errors on the wire, defaulting, the ClusterIP and NodePort allocators, type transitions, concurrency,
//! the status subresource, the built-in Services and allocator repair after a restart.
//!
//! Every test runs its own in-process cluster and talks to it with kube-rs. Requests are raw JSON so
//! that invalid objects reach the server as sent, and errors come back as the full `metav1.Status`.

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane::{Cluster, Config, NodePortRange};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::Status;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------------------
// Upstream message texts (§0).

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const LB_ONLY: &str = "Forbidden: may only be used when `type` is 'LoadBalancer'";
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

const DUAL_STACK: &str = "127.96.0.0/12,fd00:10:96::/112";
const NS: &str = "default";
/// Long enough for anything a healthy in-process cluster does; short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------------------------
// Fixture.

/// One in-process cluster and a client.
struct Fx {
    cluster: Cluster,
    client: kube::Client,
    /// Allocations right after start (the built-in Services).
    baseline: (usize, usize),
}

type Resp = Result<Value, Box<Status>>;

impl Fx {
    async fn start() -> Self {
        Self::with(Config::ephemeral()).await
    }

    /// These tests are about the API's own rules: no LoadBalancer implementation writes status
    /// behind their back (as on a cluster without one).
    async fn with(config: Config) -> Self {
        let config = Config { lb_pool: None, ..config };
        let cluster = Cluster::start_with(config).await.expect("cluster starts");
        let client = cluster.client();
        let baseline = cluster.service_allocations();
        Self { cluster, client, baseline }
    }

    async fn dual() -> Self {
        Self::with(Config { service_cidr: DUAL_STACK.into(), ..Config::ephemeral() }).await
    }

    fn alloc(&self) -> (usize, usize) {
        self.cluster.service_allocations()
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>, content_type: &str) -> Resp {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", content_type)
            .header("Accept", "application/json")
            .body(body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default())
            .expect("request");
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(v),
            Err(kube::Error::Api(s)) => Err(s),
            Err(e) => panic!("{method} {path}: transport error {e:?}"),
        }
    }

    fn path(ns: &str, name: Option<&str>, sub: Option<&str>) -> String {
        let mut p = format!("/api/v1/namespaces/{ns}/services");
        if let Some(n) = name {
            p.push('/');
            p.push_str(n);
        }
        if let Some(s) = sub {
            p.push('/');
            p.push_str(s);
        }
        p
    }

    async fn create(&self, body: &Value) -> Resp {
        self.send("POST", &Self::path(NS, None, None), Some(body), "application/json").await
    }

    async fn get(&self, name: &str) -> Resp {
        self.get_in(NS, name).await
    }

    async fn get_in(&self, ns: &str, name: &str) -> Resp {
        self.send("GET", &Self::path(ns, Some(name), None), None, "application/json").await
    }

    async fn put(&self, name: &str, body: &Value) -> Resp {
        self.send("PUT", &Self::path(NS, Some(name), None), Some(body), "application/json").await
    }

    async fn put_status(&self, name: &str, body: &Value) -> Resp {
        self.send("PUT", &Self::path(NS, Some(name), Some("status")), Some(body), "application/json").await
    }

    async fn merge_patch(&self, name: &str, sub: Option<&str>, patch: &Value) -> Resp {
        self.send("PATCH", &Self::path(NS, Some(name), sub), Some(patch), "application/merge-patch+json").await
    }

    async fn delete(&self, name: &str) -> Resp {
        self.send("DELETE", &Self::path(NS, Some(name), None), None, "application/json").await
    }

    async fn must_create(&self, body: &Value) -> Value {
        match self.create(body).await {
            Ok(v) => v,
            Err(s) => panic!("create {}: {s:?}", body["metadata"]["name"]),
        }
    }

    async fn must_get(&self, name: &str) -> Value {
        self.get(name).await.unwrap_or_else(|s| panic!("get {name}: {s:?}"))
    }

    async fn must_put(&self, name: &str, body: &Value) -> Value {
        self.put(name, body).await.unwrap_or_else(|s| panic!("put {name}: {s:?}"))
    }

    async fn must_delete(&self, name: &str) -> Value {
        self.delete(name).await.unwrap_or_else(|s| panic!("delete {name}: {s:?}"))
    }

    async fn assert_absent(&self, name: &str) {
        match self.get(name).await {
            Err(s) if s.code == 404 => {}
            other => panic!("{name} should not exist: {other:?}"),
        }
    }

    /// What all stored Services hold, by the API's view: (IPs, NodePorts incl. health checks).
    async fn held_by_all(&self) -> (Vec<String>, Vec<i32>) {
        let list = self.send("GET", "/api/v1/services", None, "application/json").await.expect("list");
        let mut ips = Vec::new();
        let mut ports = Vec::new();
        for s in list["items"].as_array().expect("items") {
            let (i, p) = held(s);
            ips.extend(i);
            ports.extend(p);
        }
        (ips, ports)
    }
}

/// The IPs and NodePorts (distinct per Service, plus the health-check port) a stored Service holds.
fn held(svc: &Value) -> (Vec<String>, Vec<i32>) {
    let spec = &svc["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let mut ips = Vec::new();
    if ty != "ExternalName" {
        for ip in spec["clusterIPs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if ip != "None" {
                ips.push(ip.to_string());
            }
        }
    }
    let mut ports = BTreeSet::new();
    if ty == "NodePort" || ty == "LoadBalancer" {
        for p in spec["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_i64() {
                ports.insert(np as i32);
            }
        }
    }
    if let Some(hc) = spec["healthCheckNodePort"].as_i64() {
        ports.insert(hc as i32);
    }
    (ips, ports.into_iter().collect())
}

fn held_count(svc: &Value) -> (usize, usize) {
    let (i, p) = held(svc);
    (i.len(), p.len())
}

fn plus(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0 + b.0, a.1 + b.1)
}

/// A valid ClusterIP Service with one named port and a selector.
fn base(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": "demo"}, "ports": [{"name": "http", "port": 80}]},
    })
}

fn with(mut v: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut v);
    v
}

fn node_port(name: &str) -> Value {
    with(base(name), |v| v["spec"]["type"] = json!("NodePort"))
}

fn load_balancer(name: &str) -> Value {
    with(base(name), |v| v["spec"]["type"] = json!("LoadBalancer"))
}

fn external_name(name: &str) -> Value {
    with(base(name), |v| {
        v["spec"]["type"] = json!("ExternalName");
        v["spec"]["externalName"] = json!("db.example.com");
    })
}

fn node_ports_of(svc: &Value) -> Vec<Option<i64>> {
    svc["spec"]["ports"].as_array().into_iter().flatten().map(|p| p["nodePort"].as_i64()).collect()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').expect("cidr");
    let bits: u32 = bits.parse().expect("bits");
    match (ip.parse::<IpAddr>(), net.parse::<IpAddr>()) {
        (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(n))) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(n))) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Expected errors.

/// What a bad request must get back.
#[derive(Debug, Clone)]
enum Want {
    /// 422 Invalid with exactly these causes, in order: (field, body). A body ending in `*` matches by prefix.
    Invalid(Vec<(String, String)>),
    /// 500 InternalError: `Internal error occurred: <msg>`.
    Internal(String),
    /// Any other status: code, reason and a message substring.
    Other(u16, &'static str, String),
}

fn invalid<F: Into<String>, B: Into<String>>(causes: impl IntoIterator<Item = (F, B)>) -> Want {
    Want::Invalid(causes.into_iter().map(|(f, b)| (f.into(), b.into())).collect())
}

fn one(field: &str, body: impl Into<String>) -> Want {
    Want::Invalid(vec![(field.to_string(), body.into())])
}

fn internal(msg: impl Into<String>) -> Want {
    Want::Internal(msg.into())
}

fn cause_reason_of(body: &str) -> &'static str {
    for (prefix, reason) in [
        ("Invalid value", "FieldValueInvalid"),
        ("Required value", "FieldValueRequired"),
        ("Forbidden", "FieldValueForbidden"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Too many", "FieldValueTooMany"),
        ("Too long", "FieldValueTooLong"),
    ] {
        if body.starts_with(prefix) {
            return reason;
        }
    }
    panic!("unknown field error type in {body:?}")
}

fn body_matches(got: &str, want: &str) -> bool {
    match want.strip_suffix('*') {
        Some(prefix) => got.starts_with(prefix),
        None => got == want,
    }
}

/// Checks a failed request's Status against `want`; `name` is the object's name.
fn check_status(row: &str, name: &str, got: &Status, want: &Want) {
    match want {
        Want::Invalid(causes) => {
            assert_eq!((got.code, got.reason.as_str()), (422, "Invalid"), "{row}: {got:?}");
            let details = got.details.as_ref().unwrap_or_else(|| panic!("{row}: no details in {got:?}"));
            assert_eq!(details.kind, "Service", "{row}: details.kind");
            assert_eq!(details.name, name, "{row}: details.name");
            let got_causes: Vec<(String, String, String)> =
                details.causes.iter().map(|c| (c.field.clone(), c.message.clone(), c.reason.clone())).collect();
            let ok = got_causes.len() == causes.len()
                && got_causes.iter().zip(causes).all(|((gf, gm, gr), (wf, wm))| {
                    gf == wf && body_matches(gm, wm) && gr == cause_reason_of(wm.trim_end_matches('*'))
                });
            assert!(ok, "{row}: causes\n got: {got_causes:#?}\nwant: {causes:#?}");
            let prefix = format!("Service {name:?} is invalid: ");
            assert!(got.message.starts_with(&prefix), "{row}: message {:?}", got.message);
            if causes.iter().all(|(_, b)| !b.ends_with('*')) {
                let mut texts: Vec<String> = Vec::new();
                for (f, b) in causes {
                    let t = format!("{f}: {b}");
                    if !texts.contains(&t) {
                        texts.push(t);
                    }
                }
                let agg = if texts.len() == 1 { texts[0].clone() } else { format!("[{}]", texts.join(", ")) };
                assert_eq!(got.message, format!("{prefix}{agg}"), "{row}: message");
            }
        }
        Want::Internal(msg) => {
            assert_eq!((got.code, got.reason.as_str()), (500, "InternalError"), "{row}: {got:?}");
            assert_eq!(got.message, format!("Internal error occurred: {msg}"), "{row}: message");
            let causes = got.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
            assert_eq!(causes.len(), 1, "{row}: causes {causes:?}");
            assert_eq!(causes[0].message, *msg, "{row}: cause message");
        }
        Want::Other(code, reason, substring) => {
            assert_eq!((got.code, got.reason.as_str()), (*code, *reason), "{row}: {got:?}");
            assert!(got.message.contains(substring.as_str()), "{row}: message {:?}", got.message);
        }
    }
}

type Mutate = Box<dyn Fn(&mut Value)>;

struct Row {
    name: &'static str,
    mutate: Mutate,
    want: Want,
}

fn row(name: &'static str, mutate: impl Fn(&mut Value) + 'static, want: Want) -> Row {
    Row { name, mutate: Box::new(mutate), want }
}

/// Runs create rows: each row's object is `base` mutated; the create must fail as wanted, store nothing
/// and leave the allocators as they were.
async fn run_create_rows(fx: &Fx, rows: Vec<Row>) {
    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let mut obj = base(&format!("row-{i}"));
        (r.mutate)(&mut obj);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let before = fx.alloc();
        let result = fx.create(&obj).await;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &result {
            Ok(v) => panic!("{}: created {v}", r.name),
            Err(s) => check_status(r.name, &name, s, &r.want),
        }));
        if let Err(e) = outcome {
            failures.push(panic_text(e));
            if result.is_ok() {
                let _ = fx.delete(&name).await;
            }
            continue;
        }
        if !name.is_empty() {
            match fx.get(&name).await {
                Err(s) if s.code == 404 => {}
                other => failures.push(format!("{}: stored anyway: {other:?}", r.name)),
            }
        }
        if fx.alloc() != before {
            failures.push(format!("{}: allocations leaked: {before:?} -> {:?}", r.name, fx.alloc()));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n\n"));
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

struct UpdateRow {
    name: &'static str,
    start: Value,
    mutate: Mutate,
    want: Want,
}

fn urow(name: &'static str, start: Value, mutate: impl Fn(&mut Value) + 'static, want: Want) -> UpdateRow {
    UpdateRow { name, start, mutate: Box::new(mutate), want }
}

/// Runs update rows: create `start`, PUT its mutated current state; the PUT must fail as wanted and leave
/// the stored object and the allocators as they were.
async fn run_update_rows(fx: &Fx, rows: Vec<UpdateRow>) {
    let start = fx.alloc();
    let mut failures = Vec::new();
    for r in &rows {
        let name = r.start["metadata"]["name"].as_str().expect("name").to_string();
        fx.must_create(&r.start).await;
        let stored = fx.must_get(&name).await;
        let mut obj = stored.clone();
        (r.mutate)(&mut obj);
        let before = fx.alloc();
        let result = fx.put(&name, &obj).await;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &result {
            Ok(v) => panic!("{}: updated {v}", r.name),
            Err(s) => check_status(r.name, &name, s, &r.want),
        }));
        if let Err(e) = outcome {
            failures.push(panic_text(e));
        } else {
            let after = fx.must_get(&name).await;
            if after != stored {
                failures.push(format!("{}: stored object changed:\n{stored}\n{after}", r.name));
            }
            if fx.alloc() != before {
                failures.push(format!("{}: allocations leaked: {before:?} -> {:?}", r.name, fx.alloc()));
            }
        }
        let before_delete = fx.alloc();
        let deleted = fx.must_delete(&name).await;
        let expected = (before_delete.0 - held_count(&deleted).0, before_delete.1 - held_count(&deleted).1);
        if fx.alloc() != expected {
            failures.push(format!("{}: delete released {before_delete:?} -> {:?}", r.name, fx.alloc()));
        }
    }
    assert_eq!(fx.alloc(), start, "all rows cleaned up");
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Validation tables.

fn set(path: &'static [&'static str], value: Value) -> impl Fn(&mut Value) + 'static {
    move |v: &mut Value| {
        let mut cur = v;
        for p in path {
            cur = &mut cur[*p];
        }
        *cur = value.clone();
    }
}

fn spec_set(field: &'static str, value: Value) -> impl Fn(&mut Value) + 'static {
    move |v: &mut Value| v["spec"][field] = value.clone()
}

/// §1.3 `ValidateService` (and the §1.5 family errors) on create.
fn create_rows() -> Vec<Row> {
    let long_name = "a".repeat(64);
    vec![
        // metadata.
        row(
            "name not a DNS-1035 label",
            set(&["metadata", "name"], json!("Foo")),
            one("metadata.name", format!("Invalid value: \"Foo\": {DNS1035_MSG}")),
        ),
        row(
            "name starting with a digit",
            set(&["metadata", "name"], json!("1abc")),
            one("metadata.name", format!("Invalid value: \"1abc\": {DNS1035_MSG}")),
        ),
        row(
            "name longer than 63",
            move |v| v["metadata"]["name"] = json!(long_name.clone()),
            one("metadata.name", format!("Invalid value: \"{}\": must be no more than 63 characters", "a".repeat(64))),
        ),
        row(
            "topology-mode differs from topology-aware-hints",
            set(
                &["metadata", "annotations"],
                json!({"service.kubernetes.io/topology-aware-hints": "Disabled", "service.kubernetes.io/topology-mode": "Auto"}),
            ),
            one(
                "metadata.annotations[service.kubernetes.io/topology-mode]",
                "Invalid value: \"Auto\": must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            ),
        ),
        // spec.ports.
        row("no ports", |v| v["spec"]["ports"] = json!([]), one("spec.ports", "Required value")),
        row(
            "ports absent",
            |v| {
                v["spec"].as_object_mut().unwrap().remove("ports");
            },
            one("spec.ports", "Required value"),
        ),
        // Type-specific.
        row(
            "headless LoadBalancer",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["clusterIP"] = json!("None");
            },
            one("spec.clusterIPs[0]", "Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"),
        ),
        row(
            "headless NodePort",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["clusterIP"] = json!("None");
            },
            one("spec.clusterIPs[0]", "Invalid value: \"None\": may not be set to 'None' for NodePort services"),
        ),
        row(
            "ExternalName with a clusterIP",
            |v| {
                v["spec"]["type"] = json!("ExternalName");
                v["spec"]["externalName"] = json!("db.example.com");
                v["spec"]["clusterIP"] = json!("127.96.0.50");
            },
            one("spec.clusterIPs", "Forbidden: may not be set for ExternalName services"),
        ),
        row(
            "ExternalName with ipFamilies",
            |v| {
                v["spec"]["type"] = json!("ExternalName");
                v["spec"]["externalName"] = json!("db.example.com");
                v["spec"]["ipFamilies"] = json!(["IPv4"]);
            },
            one("spec.ipFamilies", "Forbidden: may not be set for ExternalName services"),
        ),
        row(
            "ExternalName with ipFamilyPolicy",
            |v| {
                v["spec"]["type"] = json!("ExternalName");
                v["spec"]["externalName"] = json!("db.example.com");
                v["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            },
            one("spec.ipFamilyPolicy", "Forbidden: may not be set for ExternalName services"),
        ),
        row(
            "ExternalName without externalName",
            spec_set("type", json!("ExternalName")),
            one("spec.externalName", "Required value"),
        ),
        row(
            "ExternalName of just a dot",
            |v| {
                v["spec"]["type"] = json!("ExternalName");
                v["spec"]["externalName"] = json!(".");
            },
            one("spec.externalName", "Required value"),
        ),
        row(
            "ExternalName not a DNS subdomain",
            |v| {
                v["spec"]["type"] = json!("ExternalName");
                v["spec"]["externalName"] = json!("-bad-.example.com.");
            },
            one("spec.externalName", format!("Invalid value: \"-bad-.example.com\": {DNS1123_SUBDOMAIN_MSG}")),
        ),
        // Per port.
        row(
            "second port without a name",
            |v| v["spec"]["ports"] = json!([{"name": "http", "port": 80}, {"port": 81}]),
            one("spec.ports[1].name", "Required value"),
        ),
        row(
            "port name not a DNS-1123 label",
            |v| v["spec"]["ports"][0]["name"] = json!("Http"),
            one("spec.ports[0].name", format!("Invalid value: \"Http\": {DNS1123_LABEL_MSG}")),
        ),
        row(
            "duplicate port name",
            |v| v["spec"]["ports"] = json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
            one("spec.ports[1].name", "Duplicate value: \"http\""),
        ),
        row(
            "port above 65535",
            |v| v["spec"]["ports"][0] = json!({"name": "http", "port": 70000, "targetPort": 8080}),
            one("spec.ports[0].port", format!("Invalid value: 70000: {PORT_RANGE_MSG}")),
        ),
        row(
            "port 0 (targetPort defaults to it)",
            |v| v["spec"]["ports"][0] = json!({"name": "http", "port": 0}),
            invalid([
                ("spec.ports[0].port", format!("Invalid value: 0: {PORT_RANGE_MSG}")),
                ("spec.ports[0].targetPort", format!("Invalid value: 0: {PORT_RANGE_MSG}")),
            ]),
        ),
        row(
            "unsupported protocol",
            |v| v["spec"]["ports"][0]["protocol"] = json!("HTTP"),
            one("spec.ports[0].protocol", "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
        ),
        row(
            "targetPort above 65535",
            |v| v["spec"]["ports"][0]["targetPort"] = json!(70000),
            one("spec.ports[0].targetPort", format!("Invalid value: 70000: {PORT_RANGE_MSG}")),
        ),
        row(
            "targetPort negative",
            |v| v["spec"]["ports"][0]["targetPort"] = json!(-1),
            one("spec.ports[0].targetPort", format!("Invalid value: -1: {PORT_RANGE_MSG}")),
        ),
        row(
            "targetPort name with bad characters",
            |v| v["spec"]["ports"][0]["targetPort"] = json!("Bad_Name"),
            one(
                "spec.ports[0].targetPort",
                "Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            ),
        ),
        row(
            "targetPort name without a letter",
            |v| v["spec"]["ports"][0]["targetPort"] = json!("123-456"),
            one("spec.ports[0].targetPort", "Invalid value: \"123-456\": must contain at least one letter (a-z)"),
        ),
        row(
            "targetPort name with several faults",
            |v| v["spec"]["ports"][0]["targetPort"] = json!("-abcdefghijklmno--"),
            invalid([
                (
                    "spec.ports[0].targetPort",
                    "Invalid value: \"-abcdefghijklmno--\": must be no more than 15 characters",
                ),
                (
                    "spec.ports[0].targetPort",
                    "Invalid value: \"-abcdefghijklmno--\": must not contain consecutive hyphens",
                ),
                (
                    "spec.ports[0].targetPort",
                    "Invalid value: \"-abcdefghijklmno--\": must not begin or end with a hyphen",
                ),
            ]),
        ),
        row(
            "appProtocol not a qualified name",
            |v| v["spec"]["ports"][0]["appProtocol"] = json!("bad proto"),
            one("spec.ports[0].appProtocol", format!("Invalid value: \"bad proto\": {QUALIFIED_NAME_MSG}")),
        ),
        // Selector.
        row(
            "selector value invalid",
            spec_set("selector", json!({"app": "bad value"})),
            one("spec.selector", format!("Invalid value: \"bad value\": {LABEL_VALUE_MSG}")),
        ),
        row(
            "selector key invalid",
            spec_set("selector", json!({"bad key": "x"})),
            one("spec.selector", format!("Invalid value: \"bad key\": {QUALIFIED_NAME_MSG}")),
        ),
        // Session affinity.
        row(
            "unsupported sessionAffinity",
            spec_set("sessionAffinity", json!("Sticky")),
            one("spec.sessionAffinity", "Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""),
        ),
        row(
            "ClientIP timeout 0",
            |v| {
                v["spec"]["sessionAffinity"] = json!("ClientIP");
                v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 0}});
            },
            one(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "Invalid value: 0: must be greater than 0 and less than 86400",
            ),
        ),
        row(
            "ClientIP timeout above a day",
            |v| {
                v["spec"]["sessionAffinity"] = json!("ClientIP");
                v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 86401}});
            },
            one(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "Invalid value: 86401: must be greater than 0 and less than 86400",
            ),
        ),
        // ClusterIP family fields.
        row(
            "clusterIPs[0] differs from clusterIP",
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.50");
                v["spec"]["clusterIPs"] = json!(["127.96.0.51"]);
            },
            one("spec.clusterIPs", "Invalid value: [\"127.96.0.51\"]: first value must match `clusterIP`"),
        ),
        row(
            "clusterIPs without clusterIP",
            spec_set("clusterIPs", json!(["127.96.0.51"])),
            one("spec.clusterIPs", "Invalid value: [\"127.96.0.51\"]: must be empty when `clusterIP` is not specified"),
        ),
        row(
            "unknown ipFamily",
            spec_set("ipFamilies", json!(["IPv5"])),
            one("spec.ipFamilies[0]", "Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\""),
        ),
        row(
            "duplicate ipFamily",
            |v| {
                v["spec"]["ipFamilies"] = json!(["IPv4", "IPv4"]);
                v["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
            },
            one("spec.ipFamilies[1]", "Duplicate value: \"IPv4\""),
        ),
        row(
            "unknown ipFamilyPolicy",
            spec_set("ipFamilyPolicy", json!("Foo")),
            one(
                "spec.ipFamilyPolicy",
                "Unsupported value: \"Foo\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
            ),
        ),
        row(
            "None not alone",
            |v| {
                v["spec"]["clusterIP"] = json!("None");
                v["spec"]["clusterIPs"] = json!(["None", "127.96.0.5"]);
            },
            one("spec.clusterIPs", "Invalid value: [\"None\",\"127.96.0.5\"]: 'None' must be the first and only value"),
        ),
        row(
            "clusterIP not an IP",
            spec_set("clusterIP", json!("abc")),
            one("spec.clusterIPs[0]", format!("Invalid value: \"abc\": {IP_MSG}")),
        ),
        row(
            "three clusterIPs",
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.5");
                v["spec"]["clusterIPs"] = json!(["127.96.0.5", "fd00::5", "127.96.0.6"]);
                v["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
            },
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.96.0.5\",\"fd00::5\",\"127.96.0.6\"]: may only hold up to 2 values",
            ),
        ),
        row(
            "two IPv4 clusterIPs",
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.5");
                v["spec"]["clusterIPs"] = json!(["127.96.0.5", "127.96.0.6"]);
                v["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
            },
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.96.0.5\",\"127.96.0.6\"]: may specify no more than one IP for each IP family",
            ),
        ),
        row(
            "clusterIP of the wrong family for ipFamilies",
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.5");
                v["spec"]["ipFamilies"] = json!(["IPv6"]);
            },
            one(
                "spec.clusterIPs[0]",
                "Invalid value: \"127.96.0.5\": expected an IPv6 value as indicated by `ipFamilies[0]`",
            ),
        ),
        // §1.5 families the cluster does not serve (single-stack IPv4 cluster).
        row(
            "IPv6 family on an IPv4 cluster",
            spec_set("ipFamilies", json!(["IPv6"])),
            one("spec.ipFamilies[0]", "Invalid value: \"IPv6\": not configured on this cluster"),
        ),
        row(
            "IPv6 clusterIP on an IPv4 cluster",
            spec_set("clusterIP", json!("fd00::5")),
            one("spec.clusterIPs[0]", "Invalid value: [\"fd00::5\"]: IPv6 is not configured on this cluster"),
        ),
        row(
            "RequireDualStack on a single-stack cluster",
            spec_set("ipFamilyPolicy", json!("RequireDualStack")),
            one(
                "spec.ipFamilyPolicy",
                "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
            ),
        ),
        row(
            "SingleStack with two families",
            |v| {
                v["spec"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
                v["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            },
            one(
                "spec.ipFamilyPolicy",
                "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ),
        ),
        row(
            "SingleStack with two clusterIPs",
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.5");
                v["spec"]["clusterIPs"] = json!(["127.96.0.5", "fd00::5"]);
                v["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            },
            invalid([
                (
                    "spec.ipFamilyPolicy",
                    "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
                ),
                (
                    "spec.clusterIPs[1]",
                    "Invalid value: [\"127.96.0.5\",\"fd00::5\"]: IPv6 is not configured on this cluster",
                ),
            ]),
        ),
        // externalIPs.
        row(
            "externalIP not an IP",
            spec_set("externalIPs", json!(["abc"])),
            one("spec.externalIPs[0]", format!("Invalid value: \"abc\": {IP_MSG}")),
        ),
        row(
            "externalIP unspecified",
            spec_set("externalIPs", json!(["0.0.0.0"])),
            one("spec.externalIPs[0]", "Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"),
        ),
        row(
            "externalIP loopback",
            spec_set("externalIPs", json!(["127.0.0.1"])),
            one(
                "spec.externalIPs[0]",
                "Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            ),
        ),
        row(
            "externalIP link-local",
            spec_set("externalIPs", json!(["169.254.1.1"])),
            one(
                "spec.externalIPs[0]",
                "Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            ),
        ),
        row(
            "externalIP link-local multicast",
            spec_set("externalIPs", json!(["224.0.0.1"])),
            one(
                "spec.externalIPs[0]",
                "Invalid value: \"224.0.0.1\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
            ),
        ),
        // type.
        row(
            "unsupported type",
            spec_set("type", json!("Foo")),
            one(
                "spec.type",
                "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ),
        ),
        row(
            "nodePort on ClusterIP",
            |v| v["spec"]["ports"][0]["nodePort"] = json!(30050),
            one("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'"),
        ),
        row(
            "duplicate nodePort and port (same number, same protocol)",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"] = json!([
                    {"name": "a", "port": 53, "protocol": "TCP", "nodePort": 30053},
                    {"name": "b", "port": 53, "protocol": "TCP", "nodePort": 30053},
                ]);
            },
            invalid([("spec.ports[1].nodePort", "Duplicate value: 30053"), ("spec.ports[1]", "Duplicate value: *")]),
        ),
        row(
            "duplicate port (protocol, port)",
            |v| v["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 80, "targetPort": 81}]),
            invalid([("spec.ports[1]", "Duplicate value: *")]),
        ),
        // loadBalancerSourceRanges.
        row(
            "source ranges on ClusterIP",
            spec_set("loadBalancerSourceRanges", json!(["10.0.0.0/8"])),
            one("spec.LoadBalancerSourceRanges", LB_ONLY),
        ),
        row(
            "source range not a CIDR",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["loadBalancerSourceRanges"] = json!(["10.0.0.0/8", "10.0.0.0/33"]);
            },
            one("spec.LoadBalancerSourceRanges[1]", format!("Invalid value: \"10.0.0.0/33\": {CIDR_MSG}")),
        ),
        row(
            "source-ranges annotation on ClusterIP",
            set(&["metadata", "annotations"], json!({SOURCE_RANGES_ANNOTATION: "10.0.0.0/8"})),
            one(&format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"), LB_ONLY),
        ),
        row(
            "source-ranges annotation not a CIDR",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["metadata"]["annotations"] = json!({SOURCE_RANGES_ANNOTATION: "10.0.0.0/8, foo"});
            },
            one(
                &format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"),
                format!("Invalid value: \"foo\": {CIDR_MSG}"),
            ),
        ),
        // LoadBalancer-only fields.
        row(
            "allocateLoadBalancerNodePorts on ClusterIP",
            spec_set("allocateLoadBalancerNodePorts", json!(true)),
            one("spec.allocateLoadBalancerNodePorts", LB_ONLY),
        ),
        row(
            "loadBalancerClass on ClusterIP",
            spec_set("loadBalancerClass", json!("example.com/internal-vip")),
            one("spec.loadBalancerClass", LB_ONLY),
        ),
        row(
            "loadBalancerClass not a qualified name",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["loadBalancerClass"] = json!("-bad-");
            },
            one("spec.loadBalancerClass", format!("Invalid value: \"-bad-\": {QUALIFIED_NAME_MSG}")),
        ),
        // Traffic policies.
        row(
            "externalTrafficPolicy on ClusterIP",
            spec_set("externalTrafficPolicy", json!("Cluster")),
            one(
                "spec.externalTrafficPolicy",
                "Invalid value: \"Cluster\": may only be set for externally-accessible services",
            ),
        ),
        row(
            "unsupported externalTrafficPolicy",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["externalTrafficPolicy"] = json!("Foo");
            },
            one("spec.externalTrafficPolicy", "Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\""),
        ),
        row(
            "healthCheckNodePort on NodePort",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["healthCheckNodePort"] = json!(30001);
            },
            one(
                "spec.healthCheckNodePort",
                "Invalid value: 30001: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ),
        ),
        row(
            "healthCheckNodePort on LoadBalancer with ETP Cluster",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["healthCheckNodePort"] = json!(30001);
            },
            one(
                "spec.healthCheckNodePort",
                "Invalid value: 30001: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ),
        ),
        row(
            "unsupported internalTrafficPolicy",
            spec_set("internalTrafficPolicy", json!("Foo")),
            one("spec.internalTrafficPolicy", "Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\""),
        ),
        row(
            "unsupported trafficDistribution",
            spec_set("trafficDistribution", json!("Foo")),
            one("spec.trafficDistribution", "Unsupported value: \"Foo\": supported values: \"PreferClose\""),
        ),
        // Several errors at once, in upstream's order.
        row(
            "several errors aggregate",
            |v| {
                v["spec"]["ports"][0]["protocol"] = json!("HTTP");
                v["spec"]["sessionAffinity"] = json!("Sticky");
                v["spec"]["type"] = json!("Foo");
            },
            invalid([
                ("spec.ports[0].protocol", "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                ("spec.sessionAffinity", "Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""),
                (
                    "spec.type",
                    "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                ),
            ]),
        ),
    ]
}

#[tokio::test]
async fn create_validation_rows() {
    let fx = Fx::start().await;
    run_create_rows(&fx, create_rows()).await;
    assert_eq!(fx.alloc(), fx.baseline);
}

/// §1.6 allocation errors on create, against a Service holding 127.96.0.200, NodePort 30080 and
/// health-check port 30090.
#[tokio::test]
async fn create_allocation_error_rows() {
    let fx = Fx::start().await;
    let holder = with(load_balancer("holder"), |v| {
        v["spec"]["clusterIP"] = json!("127.96.0.200");
        v["spec"]["ports"][0]["nodePort"] = json!(30080);
        v["spec"]["externalTrafficPolicy"] = json!("Local");
        v["spec"]["healthCheckNodePort"] = json!(30090);
    });
    let holder = fx.must_create(&holder).await;
    assert_eq!(holder["spec"]["healthCheckNodePort"], 30090);
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 2)));

    let rows = vec![
        row(
            "clusterIP already allocated",
            spec_set("clusterIP", json!("127.96.0.200")),
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.96.0.200\"]: failed to allocate IP 127.96.0.200: provided IP is already allocated",
            ),
        ),
        row(
            "clusterIP of kube-dns",
            spec_set("clusterIP", json!("127.96.0.10")),
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.96.0.10\"]: failed to allocate IP 127.96.0.10: provided IP is already allocated",
            ),
        ),
        row(
            "clusterIP out of range",
            spec_set("clusterIP", json!("10.0.0.5")),
            one(
                "spec.clusterIPs",
                "Invalid value: [\"10.0.0.5\"]: failed to allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 127.96.0.0/12",
            ),
        ),
        row(
            "clusterIP the network address",
            spec_set("clusterIP", json!("127.96.0.0")),
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.96.0.0\"]: failed to allocate IP 127.96.0.0: the provided IP (127.96.0.0) is not in the valid range. The range of valid IPs is 127.96.0.0/12",
            ),
        ),
        row(
            "clusterIP the broadcast address",
            spec_set("clusterIP", json!("127.111.255.255")),
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.111.255.255\"]: failed to allocate IP 127.111.255.255: the provided IP (127.111.255.255) is not in the valid range. The range of valid IPs is 127.96.0.0/12",
            ),
        ),
        row(
            "nodePort out of range",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"][0]["nodePort"] = json!(80);
            },
            one(
                "spec.ports[0].nodePort",
                "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
        ),
        row(
            "nodePort already allocated",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"][0]["nodePort"] = json!(30080);
            },
            one("spec.ports[0].nodePort", "Invalid value: 30080: provided port is already allocated"),
        ),
        row(
            "nodePort held as a health-check port",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["ports"][0]["nodePort"] = json!(30090);
            },
            one("spec.ports[0].nodePort", "Invalid value: 30090: provided port is already allocated"),
        ),
        row(
            "same explicit nodePort on two port numbers",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"] = json!([
                    {"name": "a", "port": 80, "nodePort": 30081},
                    {"name": "b", "port": 81, "nodePort": 30081},
                ]);
            },
            one("spec.ports[1].nodePort", "Invalid value: 30081: provided port is already allocated"),
        ),
        row(
            "second port's nodePort taken after the first allocated",
            |v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"] = json!([
                    {"name": "a", "port": 80},
                    {"name": "b", "port": 81, "nodePort": 30080},
                ]);
            },
            one("spec.ports[1].nodePort", "Invalid value: 30080: provided port is already allocated"),
        ),
        row(
            "allocation error wins over validation errors",
            |v| {
                v["metadata"]["name"] = json!("Bad");
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["sessionAffinity"] = json!("Sticky");
                v["spec"]["ports"][0]["nodePort"] = json!(80);
            },
            one(
                "spec.ports[0].nodePort",
                "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
        ),
        row(
            "requested health-check port already allocated",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["externalTrafficPolicy"] = json!("Local");
                v["spec"]["healthCheckNodePort"] = json!(30080);
            },
            internal("failed to allocate requested HealthCheck NodePort 30080: provided port is already allocated"),
        ),
        row(
            "requested health-check port out of range",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["externalTrafficPolicy"] = json!("Local");
                v["spec"]["healthCheckNodePort"] = json!(80);
            },
            internal(
                "failed to allocate requested HealthCheck NodePort 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
        ),
        row(
            "health-check port equal to its own nodePort",
            |v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["externalTrafficPolicy"] = json!("Local");
                v["spec"]["ports"][0]["nodePort"] = json!(30095);
                v["spec"]["healthCheckNodePort"] = json!(30095);
            },
            internal("failed to allocate requested HealthCheck NodePort 30095: provided port is already allocated"),
        ),
    ];
    run_create_rows(&fx, rows).await;
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 2)));
}

/// §1.6 exhaustion: 500s from full ranges, with nothing leaked by the parts that did allocate.
#[tokio::test]
async fn range_full_rows() {
    // A /28: 14 usable addresses; kubernetes (.1) and kube-dns (.10) hold two.
    let fx = Fx::with(Config { service_cidr: "127.96.0.0/28".into(), ..Config::ephemeral() }).await;
    assert_eq!(fx.baseline, (2, 0));
    for i in 0..12 {
        fx.must_create(&base(&format!("fill-{i}"))).await;
    }
    assert_eq!(fx.alloc(), (14, 0));
    run_create_rows(
        &fx,
        vec![
            row("serviceIP range full", |_| {}, internal("failed to allocate a serviceIP: range is full")),
            row(
                "serviceIP range full for a NodePort (no port leaked)",
                spec_set("type", json!("NodePort")),
                internal("failed to allocate a serviceIP: range is full"),
            ),
        ],
    )
    .await;
    // Headless and ExternalName need no address.
    fx.must_create(&with(base("headless"), |v| v["spec"]["clusterIP"] = json!("None"))).await;
    fx.must_create(&external_name("ext")).await;
    assert_eq!(fx.alloc(), (14, 0));

    // Four NodePorts.
    let fx =
        Fx::with(Config { node_port_range: NodePortRange { first: 30000, last: 30003 }, ..Config::ephemeral() }).await;
    let four = with(node_port("four"), |v| {
        v["spec"]["ports"] = json!([
            {"name": "a", "port": 80}, {"name": "b", "port": 81}, {"name": "c", "port": 82}, {"name": "d", "port": 83},
        ]);
    });
    let four = fx.must_create(&four).await;
    let mut got: Vec<i64> = node_ports_of(&four).into_iter().flatten().collect();
    got.sort();
    assert_eq!(got, vec![30000, 30001, 30002, 30003]);
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 4)));
    run_create_rows(
        &fx,
        vec![
            row(
                "nodePort range full (the clusterIP is given back)",
                spec_set("type", json!("NodePort")),
                internal("failed to allocate a nodePort: range is full"),
            ),
            row(
                "LoadBalancer nodePort range full",
                spec_set("type", json!("LoadBalancer")),
                internal("failed to allocate a nodePort: range is full"),
            ),
            row(
                "health-check port range full",
                |v| {
                    v["spec"]["type"] = json!("LoadBalancer");
                    v["spec"]["allocateLoadBalancerNodePorts"] = json!(false);
                    v["spec"]["externalTrafficPolicy"] = json!("Local");
                },
                internal("failed to allocate a HealthCheck NodePort 0: range is full"),
            ),
        ],
    )
    .await;
    // An LB that needs no NodePort still works.
    let lb =
        fx.must_create(&with(load_balancer("lb"), |v| v["spec"]["allocateLoadBalancerNodePorts"] = json!(false))).await;
    assert_eq!(node_ports_of(&lb), vec![None]);
    // Releasing one port makes room again.
    fx.must_delete("four").await;
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 0)));
    fx.must_create(&node_port("after")).await;
}

/// §1.4 `ValidateServiceUpdate` (and the update-time allocation/family errors), on a dual-stack cluster.
#[tokio::test]
async fn update_validation_rows() {
    let fx = Fx::dual().await;
    let lb_local = |name: &str, hc: i32| {
        with(load_balancer(name), move |v| {
            v["spec"]["externalTrafficPolicy"] = json!("Local");
            v["spec"]["healthCheckNodePort"] = json!(hc);
        })
    };
    let dual = |name: &str, policy: &str| {
        let policy = policy.to_string();
        with(base(name), move |v| {
            v["spec"]["ipFamilyPolicy"] = json!(policy);
            v["spec"]["clusterIP"] = json!("127.96.0.70");
            v["spec"]["clusterIPs"] = json!(["127.96.0.70", "fd00:10:96::70"]);
        })
    };
    let fixed = |name: &str| with(base(name), |v| v["spec"]["clusterIP"] = json!("127.96.0.77"));
    fx.must_create(&with(node_port("other"), |v| v["spec"]["ports"][0]["nodePort"] = json!(30111))).await;
    let rows = vec![
        urow(
            "clusterIP and clusterIPs changed",
            fixed("u-ip"),
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.99");
                v["spec"]["clusterIPs"] = json!(["127.96.0.99"]);
            },
            one("spec.clusterIPs[0]", "Invalid value: [\"127.96.0.99\"]: may not change once set"),
        ),
        urow(
            "only clusterIP changed (clusterIPs follows it)",
            fixed("u-ip-only"),
            |v| v["spec"]["clusterIP"] = json!("127.96.0.98"),
            one("spec.clusterIPs[0]", "Invalid value: [\"127.96.0.98\"]: may not change once set"),
        ),
        urow(
            "clusterIP changed to one already allocated",
            fixed("u-ip-taken"),
            |v| {
                v["spec"]["clusterIP"] = json!("127.96.0.10");
                v["spec"]["clusterIPs"] = json!(["127.96.0.10"]);
            },
            one(
                "spec.clusterIPs",
                "Invalid value: [\"127.96.0.10\"]: failed to allocate IP 127.96.0.10: provided IP is already allocated",
            ),
        ),
        urow(
            "ClusterIP to headless",
            fixed("u-headless"),
            |v| {
                v["spec"]["clusterIP"] = json!("None");
                v["spec"]["clusterIPs"] = json!(["None"]);
            },
            one("spec.clusterIPs[0]", "Invalid value: [\"None\"]: may not change once set"),
        ),
        urow(
            "grown with a changed primary",
            fixed("u-grow"),
            |v| {
                v["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
                v["spec"]["clusterIP"] = json!("127.96.0.97");
                v["spec"]["clusterIPs"] = json!(["127.96.0.97", "fd00:10:96::97"]);
                v["spec"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
            },
            one("spec.clusterIPs[0]", "Invalid value: [\"127.96.0.97\",\"fd00:10:96::97\"]: may not change once set"),
        ),
        urow(
            "secondary clusterIP released without SingleStack",
            dual("u-shrink-ip", "RequireDualStack"),
            |v| v["spec"]["clusterIPs"] = json!(["127.96.0.70"]),
            one(
                "spec.ipFamilyPolicy",
                "Invalid value: \"RequireDualStack\": must be 'SingleStack' to release the secondary cluster IP",
            ),
        ),
        urow(
            "secondary family released without SingleStack",
            dual("u-shrink-family", "PreferDualStack"),
            |v| v["spec"]["ipFamilies"] = json!(["IPv4"]),
            one(
                "spec.ipFamilyPolicy",
                "Invalid value: \"PreferDualStack\": must be 'SingleStack' to release the secondary IP family",
            ),
        ),
        urow(
            "primary family changed",
            fixed("u-family"),
            |v| v["spec"]["ipFamilies"] = json!(["IPv6"]),
            one(
                "spec.clusterIPs[0]",
                "Invalid value: \"127.96.0.77\": expected an IPv6 value as indicated by `ipFamilies[0]`",
            ),
        ),
        urow(
            "SingleStack with two clusterIPs",
            dual("u-single-two", "RequireDualStack"),
            |v| {
                v["spec"]["ipFamilyPolicy"] = json!("SingleStack");
                v["spec"]["clusterIPs"] = json!(["127.96.0.70", "fd00:10:96::71"]);
            },
            one(
                "spec.ipFamilyPolicy",
                "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ),
        ),
        urow(
            "healthCheckNodePort changed",
            lb_local("u-hc", 30120),
            |v| v["spec"]["healthCheckNodePort"] = json!(30121),
            one("spec.healthCheckNodePort", "Forbidden: field is immutable"),
        ),
        urow(
            "loadBalancerClass changed",
            with(load_balancer("u-class"), |v| v["spec"]["loadBalancerClass"] = json!("example.com/a")),
            |v| v["spec"]["loadBalancerClass"] = json!("example.com/b"),
            one("spec.loadBalancerClass", "Invalid value: \"example.com/b\": may not change once set"),
        ),
        urow(
            "loadBalancerClass set on an existing LoadBalancer",
            load_balancer("u-class-set"),
            |v| v["spec"]["loadBalancerClass"] = json!("example.com/a"),
            one("spec.loadBalancerClass", "Invalid value: \"example.com/a\": may not change once set"),
        ),
        urow(
            "nodePort changed to one already allocated",
            node_port("u-np-taken"),
            |v| v["spec"]["ports"][0]["nodePort"] = json!(30111),
            one("spec.ports[0].nodePort", "Invalid value: 30111: provided port is already allocated"),
        ),
        urow(
            "nodePort changed out of range",
            node_port("u-np-range"),
            |v| v["spec"]["ports"][0]["nodePort"] = json!(29999),
            one(
                "spec.ports[0].nodePort",
                "Invalid value: 29999: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
        ),
        urow(
            "new port with a taken nodePort",
            node_port("u-np-new"),
            |v| {
                v["spec"]["ports"].as_array_mut().unwrap().push(json!({"name": "b", "port": 81, "nodePort": 30111}));
            },
            one("spec.ports[1].nodePort", "Invalid value: 30111: provided port is already allocated"),
        ),
        urow(
            "update is validated as a whole",
            base("u-validate"),
            |v| v["spec"]["ports"][0]["protocol"] = json!("HTTP"),
            one("spec.ports[0].protocol", "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
        ),
        urow(
            "uid changed",
            base("u-uid"),
            |v| v["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000"),
            one("metadata.uid", "Invalid value: \"00000000-0000-0000-0000-000000000000\": field is immutable"),
        ),
        urow(
            "stale resourceVersion",
            base("u-stale"),
            |v| v["metadata"]["resourceVersion"] = json!("1"),
            Want::Other(409, "Conflict", "the object has been modified".into()),
        ),
        urow(
            "name differs from the URL",
            base("u-name"),
            |v| v["metadata"]["name"] = json!("other-name"),
            Want::Other(400, "BadRequest", "does not match the name on the URL".into()),
        ),
    ];
    let fx_ref = &fx;
    run_update_rows(fx_ref, rows).await;
    fx.must_delete("other").await;
    assert_eq!(fx.alloc(), fx.baseline);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Defaulting.

fn ips_of(svc: &Value) -> Vec<String> {
    svc["spec"]["clusterIPs"].as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn defaults_through_the_api() {
    let fx = Fx::start().await;

    let svc = fx.must_create(&base("plain")).await;
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert!(spec.get("sessionAffinityConfig").is_none(), "{spec}");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert!(spec.get("externalTrafficPolicy").is_none(), "{spec}");
    assert!(spec.get("allocateLoadBalancerNodePorts").is_none(), "{spec}");
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert!(spec["ports"][0].get("nodePort").is_none());
    let ip = spec["clusterIP"].as_str().expect("clusterIP");
    assert_eq!(ips_of(&svc), vec![ip.to_string()]);
    assert!(in_cidr(ip, "127.96.0.0/12"), "{ip}");
    // Dynamic allocation starts above the static band (127.96.0.1-127.96.1.0).
    let n = u32::from(ip.parse::<std::net::Ipv4Addr>().expect("v4"));
    assert!(n > u32::from(std::net::Ipv4Addr::new(127, 96, 1, 0)), "{ip} in the static band");
    assert_eq!(svc["status"], json!({"loadBalancer": {}}));
    // What GET returns is what create returned.
    let got = fx.must_get("plain").await;
    assert_eq!(got["spec"], svc["spec"]);

    // A status sent on create is dropped.
    let svc = fx
        .must_create(&with(base("status-dropped"), |v| {
            v["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
        }))
        .await;
    assert_eq!(svc["status"], json!({"loadBalancer": {}}));

    // ClientIP affinity gets the 3-hour timeout.
    let svc = fx.must_create(&with(base("affinity"), |v| v["spec"]["sessionAffinity"] = json!("ClientIP"))).await;
    assert_eq!(svc["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    // ... also when the config is there but empty.
    let svc = fx
        .must_create(&with(base("affinity-empty"), |v| {
            v["spec"]["sessionAffinity"] = json!("ClientIP");
            v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {}});
        }))
        .await;
    assert_eq!(svc["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    // With None, a config sent is dropped.
    let svc = fx
        .must_create(&with(base("affinity-none"), |v| {
            v["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        }))
        .await;
    assert!(svc["spec"].get("sessionAffinityConfig").is_none(), "{}", svc["spec"]);

    // targetPort "" or 0 is the port; a named targetPort is kept.
    let svc = fx
        .must_create(&with(base("target"), |v| {
            v["spec"]["ports"] = json!([
                {"name": "a", "port": 81, "targetPort": ""},
                {"name": "b", "port": 82, "targetPort": 0},
                {"name": "c", "port": 83, "targetPort": "web", "protocol": "UDP"},
            ]);
        }))
        .await;
    let ports = &svc["spec"]["ports"];
    assert_eq!((ports[0]["targetPort"].clone(), ports[1]["targetPort"].clone()), (json!(81), json!(82)));
    assert_eq!((ports[2]["targetPort"].clone(), ports[2]["protocol"].clone()), (json!("web"), json!("UDP")));

    // An empty selector is no selector.
    let svc = fx.must_create(&with(base("empty-selector"), |v| v["spec"]["selector"] = json!({}))).await;
    assert!(svc["spec"].get("selector").is_none(), "{}", svc["spec"]);

    // ClusterIP with externalIPs is externally accessible: ETP Cluster.
    let svc = fx.must_create(&with(base("external-ips"), |v| v["spec"]["externalIPs"] = json!(["192.0.2.10"]))).await;
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");

    // NodePort: ETP Cluster, a NodePort per port from the dynamic band.
    let svc = fx.must_create(&node_port("np")).await;
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
    let np = svc["spec"]["ports"][0]["nodePort"].as_i64().expect("nodePort");
    assert!((30086..=32767).contains(&np), "{np} outside the dynamic band");
    assert!(svc["spec"].get("healthCheckNodePort").is_none());

    // LoadBalancer: allocateLoadBalancerNodePorts true, nodePorts, ETP Cluster, no health check.
    let svc = fx.must_create(&load_balancer("lb")).await;
    assert_eq!(svc["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert!(svc["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    assert!(svc["spec"].get("healthCheckNodePort").is_none());

    // LoadBalancer + ETP Local: a health-check port besides the nodePorts.
    let before = fx.alloc();
    let svc =
        fx.must_create(&with(load_balancer("lb-local"), |v| v["spec"]["externalTrafficPolicy"] = json!("Local"))).await;
    let hc = svc["spec"]["healthCheckNodePort"].as_i64().expect("healthCheckNodePort");
    assert!((30000..=32767).contains(&hc));
    assert_ne!(Some(hc), svc["spec"]["ports"][0]["nodePort"].as_i64());
    assert_eq!(fx.alloc(), plus(before, (1, 2)));

    // ExternalName: no address, no families, no internalTrafficPolicy.
    let before = fx.alloc();
    let svc = fx.must_create(&external_name("ext")).await;
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"] {
        assert!(svc["spec"].get(field).is_none(), "{field} on ExternalName: {}", svc["spec"]);
    }
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(fx.alloc(), before);

    // Headless: clusterIPs ["None"], no allocation; with a selector SingleStack, without RequireDualStack with
    // both families even on a single-stack cluster (upstream's special case).
    let svc = fx.must_create(&with(base("headless"), |v| v["spec"]["clusterIP"] = json!("None"))).await;
    assert_eq!(ips_of(&svc), vec!["None"]);
    assert_eq!(
        (svc["spec"]["ipFamilyPolicy"].clone(), svc["spec"]["ipFamilies"].clone()),
        (json!("SingleStack"), json!(["IPv4"]))
    );
    let svc = fx
        .must_create(&with(base("headless-selectorless"), |v| {
            v["spec"]["clusterIP"] = json!("None");
            v["spec"].as_object_mut().unwrap().remove("selector");
        }))
        .await;
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(fx.alloc(), before);

    // Headless may have no ports, and a targetPort that differs from port.
    fx.must_create(&with(base("headless-noports"), |v| {
        v["spec"]["clusterIP"] = json!("None");
        v["spec"]["ports"] = json!([]);
    }))
    .await;
    fx.must_create(&with(base("headless-target"), |v| {
        v["spec"]["clusterIP"] = json!("None");
        v["spec"]["ports"][0]["targetPort"] = json!(9999);
    }))
    .await;
    // generateName may end with '-'.
    let gen_named = fx
        .must_create(&with(base("x"), |v| {
            v["metadata"] = json!({"generateName": "web-"});
        }))
        .await;
    assert!(gen_named["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    assert_eq!(fx.alloc(), plus(before, (1, 0)));

    // PreferDualStack on a single-stack cluster: one family, the policy kept.
    let svc = fx.must_create(&with(base("prefer"), |v| v["spec"]["ipFamilyPolicy"] = json!("PreferDualStack"))).await;
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "PreferDualStack");
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(ips_of(&svc).len(), 1);

    // Defaults apply on update too: a PUT that drops defaulted fields gets them back.
    let mut cur = fx.must_get("plain").await;
    let spec = cur["spec"].as_object_mut().unwrap();
    for f in ["sessionAffinity", "type", "internalTrafficPolicy"] {
        spec.remove(f);
    }
    cur["spec"]["ports"][0].as_object_mut().unwrap().remove("protocol");
    cur["spec"]["ports"][0].as_object_mut().unwrap().remove("targetPort");
    let updated = fx.must_put("plain", &cur).await;
    assert_eq!(updated["spec"], fx.must_get("plain").await["spec"]);
    assert_eq!(updated["spec"]["sessionAffinity"], "None");
    assert_eq!(updated["spec"]["type"], "ClusterIP");
    assert_eq!(updated["spec"]["internalTrafficPolicy"], "Cluster");
    assert_eq!(updated["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(updated["spec"]["ports"][0]["targetPort"], 80);
}

#[tokio::test]
async fn dual_stack_defaults() {
    let fx = Fx::dual().await;
    assert_eq!(fx.baseline, (2, 0));

    // Single-stack by default, primary family.
    let svc = fx.must_create(&base("single")).await;
    assert_eq!(
        (svc["spec"]["ipFamilyPolicy"].clone(), svc["spec"]["ipFamilies"].clone()),
        (json!("SingleStack"), json!(["IPv4"]))
    );
    assert_eq!(ips_of(&svc).len(), 1);

    // Headless selectorless: RequireDualStack, both families, no allocation.
    let svc = fx
        .must_create(&with(base("headless"), |v| {
            v["spec"]["clusterIP"] = json!("None");
            v["spec"].as_object_mut().unwrap().remove("selector");
        }))
        .await;
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(ips_of(&svc), vec!["None"]);
    // Headless with a selector: SingleStack.
    let svc = fx.must_create(&with(base("headless-sel"), |v| v["spec"]["clusterIP"] = json!("None"))).await;
    assert_eq!(
        (svc["spec"]["ipFamilyPolicy"].clone(), svc["spec"]["ipFamilies"].clone()),
        (json!("SingleStack"), json!(["IPv4"]))
    );
    assert_eq!(fx.alloc(), (3, 0));

    // PreferDualStack: two clusterIPs, one per family, primary first.
    let svc = fx.must_create(&with(base("prefer"), |v| v["spec"]["ipFamilyPolicy"] = json!("PreferDualStack"))).await;
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    let ips = ips_of(&svc);
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(in_cidr(&ips[0], "127.96.0.0/12") && in_cidr(&ips[1], "fd00:10:96::/112"), "{ips:?}");
    assert_eq!(svc["spec"]["clusterIP"], json!(ips[0]));
    assert_eq!(fx.alloc(), (5, 0));

    // RequireDualStack with IPv6 first: IPv6 primary.
    let svc = fx
        .must_create(&with(base("v6-first"), |v| {
            v["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
            v["spec"]["ipFamilies"] = json!(["IPv6"]);
        }))
        .await;
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv6", "IPv4"]));
    let ips = ips_of(&svc);
    assert!(in_cidr(&ips[0], "fd00:10:96::/112") && in_cidr(&ips[1], "127.96.0.0/12"), "{ips:?}");

    // IPv6 single-stack by family, and by address (family inferred).
    let svc = fx.must_create(&with(base("v6"), |v| v["spec"]["ipFamilies"] = json!(["IPv6"]))).await;
    assert!(in_cidr(&ips_of(&svc)[0], "fd00:10:96::/112"));
    let svc = fx.must_create(&with(base("v6-addr"), |v| v["spec"]["clusterIP"] = json!("fd00:10:96::50"))).await;
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv6"]));
    assert_eq!(ips_of(&svc), vec!["fd00:10:96::50"]);

    // Explicit pair.
    let svc = fx
        .must_create(&with(base("pair"), |v| {
            v["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
            v["spec"]["clusterIP"] = json!("127.96.0.60");
            v["spec"]["clusterIPs"] = json!(["127.96.0.60", "fd00:10:96::60"]);
        }))
        .await;
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(ips_of(&svc), vec!["127.96.0.60", "fd00:10:96::60"]);
    assert_eq!(fx.alloc(), (11, 0));

    // Upgrade single → dual on update; downgrade with SingleStack releases the secondary.
    let mut cur = fx.must_get("single").await;
    cur["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
    let up = fx.must_put("single", &cur).await;
    assert_eq!(up["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(ips_of(&up).len(), 2);
    assert_eq!(ips_of(&up)[0], ips_of(&cur)[0]);
    assert_eq!(fx.alloc(), (12, 0));
    let mut cur = up.clone();
    cur["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    let down = fx.must_put("single", &cur).await;
    assert_eq!(down["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(ips_of(&down), vec![ips_of(&up)[0].clone()]);
    assert_eq!(fx.alloc(), (11, 0));
    // The released secondary can be requested again.
    let secondary = ips_of(&up)[1].clone();
    fx.must_create(&with(base("reuse-v6"), |v| v["spec"]["clusterIP"] = json!(secondary))).await;
}

/// Services allow unconditional updates (§1.1): a PUT without `metadata.resourceVersion` overwrites.
#[tokio::test]
async fn put_without_resource_version_is_unconditional() {
    let fx = Fx::start().await;
    let created = fx.must_create(&base("unconditional")).await;
    let mut next = created.clone();
    next["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    next["metadata"]["labels"] = json!({"touched": "yes"});
    let updated = fx.must_put("unconditional", &next).await;
    assert_eq!(updated["metadata"]["labels"]["touched"], "yes");
    assert_eq!(updated["spec"], created["spec"]);
    assert_ne!(updated["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
    // A PUT to a missing name creates it (AllowCreateOnUpdate).
    let made = fx.put("made-by-put", &base("made-by-put")).await.expect("create on update");
    assert!(made["spec"]["clusterIP"].as_str().is_some());
    assert_eq!(fx.alloc(), plus(fx.baseline, (2, 0)));
}

/// Allocations end with the object: graceful deletion with a finalizer, DeleteCollection, dry-run.
#[tokio::test]
async fn deletion_paths_release_allocations() {
    let fx = Fx::start().await;

    // A finalizer keeps the Service, and what it holds, until it is removed.
    let held_svc =
        fx.must_create(&with(node_port("held"), |v| v["metadata"]["finalizers"] = json!(["example.com/hold"]))).await;
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 1)));
    let deleting = fx.must_delete("held").await;
    assert!(deleting["metadata"]["deletionTimestamp"].is_string(), "{deleting}");
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 1)));
    let ip = held_svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let err = fx.create(&with(base("grab"), |v| v["spec"]["clusterIP"] = json!(ip))).await.expect_err("still held");
    assert_eq!(err.code, 422);
    fx.merge_patch("held", None, &json!({"metadata": {"finalizers": null}})).await.expect("drop finalizer");
    fx.assert_absent("held").await;
    assert_eq!(fx.alloc(), fx.baseline);
    fx.must_create(&with(base("grab"), |v| v["spec"]["clusterIP"] = json!(ip))).await;
    fx.must_delete("grab").await;

    // DeleteCollection by label (conformance "should delete a collection of services").
    for (name, label) in [("one", "a"), ("two", "a"), ("three", "b")] {
        fx.must_create(&with(load_balancer(name), |v| v["metadata"]["labels"] = json!({"set": label}))).await;
    }
    assert_eq!(fx.alloc(), plus(fx.baseline, (3, 3)));
    fx.send("DELETE", "/api/v1/namespaces/default/services?labelSelector=set%3Da", None, "application/json")
        .await
        .expect("delete collection");
    let left = fx
        .send("GET", "/api/v1/namespaces/default/services?labelSelector=set", None, "application/json")
        .await
        .unwrap();
    let names: Vec<&str> =
        left["items"].as_array().unwrap().iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["three"]);
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 1)));
    fx.must_delete("three").await;

    // Dry-run: nothing stored, nothing kept; a taken value is still refused.
    let dry = fx
        .send("POST", "/api/v1/namespaces/default/services?dryRun=All", Some(&node_port("dry")), "application/json")
        .await
        .expect("dry-run create");
    assert!(dry["spec"]["ports"][0]["nodePort"].is_i64());
    fx.assert_absent("dry").await;
    assert_eq!(fx.alloc(), fx.baseline);
    let err = fx
        .send(
            "POST",
            "/api/v1/namespaces/default/services?dryRun=All",
            Some(&with(base("dry-taken"), |v| v["spec"]["clusterIP"] = json!("127.96.0.10"))),
            "application/json",
        )
        .await
        .expect_err("taken");
    assert_eq!(err.code, 422);
    fx.must_create(&node_port("real")).await;
    let before = fx.alloc();
    let mut next = fx.must_get("real").await;
    next["spec"]["type"] = json!("ClusterIP");
    let dry = fx
        .send("PUT", "/api/v1/namespaces/default/services/real?dryRun=All", Some(&next), "application/json")
        .await
        .expect("dry-run update");
    assert_eq!(node_ports_of(&dry), vec![None]);
    assert_eq!(fx.must_get("real").await["spec"]["type"], "NodePort");
    assert_eq!(fx.alloc(), before);
    fx.must_delete("real").await;
    assert_eq!(fx.alloc(), fx.baseline);
}

/// Deleting a Service deletes the same-named Endpoints (`afterDelete`, §1.1).
#[tokio::test]
async fn delete_removes_same_named_endpoints() {
    let fx = Fx::start().await;
    fx.must_create(&with(base("manual"), |v| {
        v["spec"].as_object_mut().unwrap().remove("selector");
    }))
    .await;
    let ep = json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "10.0.0.24"}], "ports": [{"name": "http", "port": 80}]}],
    });
    fx.send("POST", "/api/v1/namespaces/default/endpoints", Some(&ep), "application/json").await.expect("endpoints");
    fx.must_delete("manual").await;
    match fx.send("GET", "/api/v1/namespaces/default/endpoints/manual", None, "application/json").await {
        Err(s) if s.code == 404 => {}
        other => panic!("Endpoints outlived their Service: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. The ClusterIP allocator.

#[tokio::test]
async fn cluster_ip_allocator() {
    let fx = Fx::start().await;
    assert_eq!(fx.baseline, (2, 0));

    // Explicit, in range: kept.
    let svc = fx.must_create(&with(base("explicit"), |v| v["spec"]["clusterIP"] = json!("127.96.0.50"))).await;
    assert_eq!(
        (svc["spec"]["clusterIP"].clone(), svc["spec"]["clusterIPs"].clone()),
        (json!("127.96.0.50"), json!(["127.96.0.50"]))
    );
    assert_eq!(fx.alloc(), (3, 0));

    // Taken: 422.
    let err =
        fx.create(&with(base("taken"), |v| v["spec"]["clusterIP"] = json!("127.96.0.50"))).await.expect_err("taken");
    check_status(
        "taken",
        "taken",
        &err,
        &one(
            "spec.clusterIPs",
            "Invalid value: [\"127.96.0.50\"]: failed to allocate IP 127.96.0.50: provided IP is already allocated",
        ),
    );
    // Out of range: 422.
    let err = fx.create(&with(base("oor"), |v| v["spec"]["clusterIP"] = json!("10.96.0.5"))).await.expect_err("oor");
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.ends_with(
            "the provided IP (10.96.0.5) is not in the valid range. The range of valid IPs is 127.96.0.0/12"
        ),
        "{}",
        err.message
    );
    fx.assert_absent("taken").await;
    fx.assert_absent("oor").await;
    assert_eq!(fx.alloc(), (3, 0));

    // None: headless, nothing allocated.
    let svc = fx.must_create(&with(base("headless"), |v| v["spec"]["clusterIP"] = json!("None"))).await;
    assert_eq!(ips_of(&svc), vec!["None"]);
    assert_eq!(fx.alloc(), (3, 0));

    // A PUT without clusterIP/clusterIPs keeps them (patchAllocatedValues).
    let mut cur = fx.must_get("explicit").await;
    let spec = cur["spec"].as_object_mut().unwrap();
    spec.remove("clusterIP");
    spec.remove("clusterIPs");
    cur["metadata"]["labels"] = json!({"touched": "yes"});
    let updated = fx.must_put("explicit", &cur).await;
    assert_eq!(ips_of(&updated), vec!["127.96.0.50"]);
    assert_eq!(updated["spec"]["clusterIP"], "127.96.0.50");
    assert_eq!(updated["metadata"]["labels"]["touched"], "yes");
    // So does a merge patch that nulls them.
    let patched = fx
        .merge_patch("explicit", None, &json!({"spec": {"clusterIP": null, "clusterIPs": null}}))
        .await
        .expect("patch");
    assert_eq!(ips_of(&patched), vec!["127.96.0.50"]);
    // And an old client that sends clusterIP only.
    let mut cur = fx.must_get("explicit").await;
    cur["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let updated = fx.must_put("explicit", &cur).await;
    assert_eq!(ips_of(&updated), vec!["127.96.0.50"]);
    assert_eq!(fx.alloc(), (3, 0));

    // Released on delete: the address can be requested again.
    let deleted = fx.must_delete("explicit").await;
    assert_eq!(deleted["metadata"]["name"], "explicit", "DELETE returns the deleted Service");
    assert_eq!(fx.alloc(), (2, 0));
    fx.must_create(&with(base("again"), |v| v["spec"]["clusterIP"] = json!("127.96.0.50"))).await;
    assert_eq!(fx.alloc(), (3, 0));

    // Released on a change to ExternalName (the old clusterIP sent back unchanged is fine).
    let mut cur = fx.must_get("again").await;
    cur["spec"]["type"] = json!("ExternalName");
    cur["spec"]["externalName"] = json!("db.example.com");
    let ext = fx.must_put("again", &cur).await;
    assert!(ext["spec"].get("clusterIP").is_none() && ext["spec"].get("clusterIPs").is_none(), "{}", ext["spec"]);
    assert_eq!(fx.alloc(), (2, 0));
    let svc = fx.must_create(&with(base("third"), |v| v["spec"]["clusterIP"] = json!("127.96.0.50"))).await;
    assert_eq!(ips_of(&svc), vec!["127.96.0.50"]);
    // Back from ExternalName: a new address, or the one asked for.
    let mut cur = fx.must_get("again").await;
    cur["spec"]["type"] = json!("ClusterIP");
    cur["spec"].as_object_mut().unwrap().remove("externalName");
    cur["spec"]["clusterIP"] = json!("127.96.0.51");
    let back = fx.must_put("again", &cur).await;
    assert_eq!(ips_of(&back), vec!["127.96.0.51"]);
    assert_eq!(back["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(back["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(fx.alloc(), (4, 0));

    // A /28 fills up: 12 addresses beyond the built-ins, then 500; deleting one frees one.
    let small = Fx::with(Config { service_cidr: "127.96.0.0/28".into(), ..Config::ephemeral() }).await;
    let mut seen = HashSet::new();
    for i in 0..12 {
        let svc = small.must_create(&base(&format!("s{i}"))).await;
        let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(in_cidr(&ip, "127.96.0.0/28") && ip != "127.96.0.0" && ip != "127.96.0.15", "{ip}");
        assert!(seen.insert(ip.clone()), "{ip} handed out twice");
    }
    assert!(!seen.contains("127.96.0.1") && !seen.contains("127.96.0.10"));
    let err = small.create(&base("s12")).await.expect_err("full");
    check_status("full", "s12", &err, &internal("failed to allocate a serviceIP: range is full"));
    let freed = small.must_delete("s3").await["spec"]["clusterIP"].as_str().unwrap().to_string();
    let svc = small.must_create(&base("s12")).await;
    assert_eq!(svc["spec"]["clusterIP"], json!(freed));
    assert_eq!(small.alloc(), (14, 0));
}

// ---------------------------------------------------------------------------------------------------------------
// 4. The NodePort allocator.

#[tokio::test]
async fn node_port_allocator() {
    let fx = Fx::start().await;

    // Explicit nodePorts kept; the rest allocated.
    let svc = fx
        .must_create(&with(node_port("explicit"), |v| {
            v["spec"]["ports"] = json!([{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81}]);
        }))
        .await;
    let nps = node_ports_of(&svc);
    assert_eq!(nps[0], Some(30080));
    assert!(nps[1].is_some_and(|p| p != 30080));
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 2)));

    // 53/TCP and 53/UDP share one nodePort, allocated...
    let svc = fx
        .must_create(&with(node_port("dns"), |v| {
            v["spec"]["ports"] = json!([
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ]);
        }))
        .await;
    let nps = node_ports_of(&svc);
    assert!(nps[0].is_some() && nps[0] == nps[1], "{nps:?}");
    assert_eq!(fx.alloc(), plus(fx.baseline, (2, 3)));
    // ... or requested on either of them.
    for (name, first, second) in [("dns-first", Some(30053), None), ("dns-second", None, Some(30054))] {
        let mut ports = vec![
            json!({"name": "dns", "port": 53, "protocol": "UDP"}),
            json!({"name": "dns-tcp", "port": 53, "protocol": "TCP"}),
        ];
        if let Some(p) = first {
            ports[0]["nodePort"] = json!(p);
        }
        if let Some(p) = second {
            ports[1]["nodePort"] = json!(p);
        }
        let before = fx.alloc();
        let svc = fx.must_create(&with(node_port(name), |v| v["spec"]["ports"] = json!(ports))).await;
        let nps = node_ports_of(&svc);
        let want = first.or(second).map(i64::from);
        assert_eq!(nps, vec![want, want], "{name}");
        assert_eq!(fx.alloc(), plus(before, (1, 1)), "{name}");
    }

    // The same explicit nodePort on two port numbers: 422, nothing leaked.
    let before = fx.alloc();
    let err = fx
        .create(&with(node_port("twice"), |v| {
            v["spec"]["ports"] =
                json!([{"name": "a", "port": 80, "nodePort": 30200}, {"name": "b", "port": 81, "nodePort": 30200}]);
        }))
        .await
        .expect_err("twice");
    check_status(
        "twice",
        "twice",
        &err,
        &one("spec.ports[1].nodePort", "Invalid value: 30200: provided port is already allocated"),
    );
    assert_eq!(fx.alloc(), before);
    // Another Service's port: 422.
    let err = fx
        .create(&with(node_port("taken"), |v| v["spec"]["ports"][0]["nodePort"] = json!(30080)))
        .await
        .expect_err("taken");
    check_status(
        "taken",
        "taken",
        &err,
        &one("spec.ports[0].nodePort", "Invalid value: 30080: provided port is already allocated"),
    );
    assert_eq!(fx.alloc(), before);

    // allocateLoadBalancerNodePorts=false: none allocated, explicit ones honoured.
    let svc = fx
        .must_create(&with(load_balancer("lb-none"), |v| v["spec"]["allocateLoadBalancerNodePorts"] = json!(false)))
        .await;
    assert_eq!(node_ports_of(&svc), vec![None]);
    assert_eq!(fx.alloc(), plus(before, (1, 0)));
    let svc = fx
        .must_create(&with(load_balancer("lb-some"), |v| {
            v["spec"]["allocateLoadBalancerNodePorts"] = json!(false);
            v["spec"]["ports"] = json!([{"name": "a", "port": 80, "nodePort": 30201}, {"name": "b", "port": 81}]);
        }))
        .await;
    assert_eq!(node_ports_of(&svc), vec![Some(30201), None]);
    assert_eq!(fx.alloc(), plus(before, (2, 1)));
    // Turning it off later keeps the existing ones.
    let lb = fx.must_create(&load_balancer("lb-off")).await;
    let kept = node_ports_of(&lb);
    let mut cur = lb.clone();
    cur["spec"]["allocateLoadBalancerNodePorts"] = json!(false);
    let off = fx.must_put("lb-off", &cur).await;
    assert_eq!(node_ports_of(&off), kept);
    // ... and an update that omits them with the flag off keeps them too (copied by port name).
    let mut cur = off.clone();
    cur["spec"]["ports"][0].as_object_mut().unwrap().remove("nodePort");
    let off = fx.must_put("lb-off", &cur).await;
    assert_eq!(node_ports_of(&off), kept);

    // Kept on an update that omits them (matched by port name, whatever the order).
    let before = fx.alloc();
    let cur = fx.must_get("explicit").await;
    let old = node_ports_of(&cur);
    let mut next = cur.clone();
    next["spec"]["ports"] = json!([{"name": "b", "port": 81}, {"name": "a", "port": 80}]);
    let updated = fx.must_put("explicit", &next).await;
    assert_eq!(node_ports_of(&updated), vec![old[1], old[0]]);
    assert_eq!(fx.alloc(), before);
    // A new port gets a new one; a removed port's is released.
    let mut next = updated.clone();
    next["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "c", "port": 82}]);
    let updated = fx.must_put("explicit", &next).await;
    let nps = node_ports_of(&updated);
    assert_eq!(nps[0], old[0]);
    assert!(nps[1].is_some() && nps[1] != old[1] && nps[1] != old[0]);
    assert_eq!(fx.alloc(), before);
    // The released one can be taken by someone else.
    let freed = old[1].unwrap();
    fx.must_create(&with(node_port("reuse"), |v| v["spec"]["ports"][0]["nodePort"] = json!(freed))).await;
    // Changing a nodePort releases the old value.
    let mut next = updated.clone();
    next["spec"]["ports"][0]["nodePort"] = json!(30202);
    let changed = fx.must_put("explicit", &next).await;
    assert_eq!(node_ports_of(&changed)[0], Some(30202));
    fx.must_create(&with(node_port("reuse-30080"), |v| v["spec"]["ports"][0]["nodePort"] = json!(30080))).await;

    // Released on delete.
    let before = fx.alloc();
    let gone = fx.must_delete("explicit").await;
    assert_eq!(fx.alloc(), (before.0 - 1, before.1 - 2));
    for p in node_ports_of(&gone).into_iter().flatten() {
        fx.must_create(&with(node_port(&format!("after-{p}")), |v| v["spec"]["ports"][0]["nodePort"] = json!(p))).await;
    }

    // Released on a change to ClusterIP.
    let before = fx.alloc();
    let mut cur = fx.must_get("dns").await;
    let shared = node_ports_of(&cur)[0].unwrap();
    cur["spec"]["type"] = json!("ClusterIP");
    let cip = fx.must_put("dns", &cur).await;
    assert_eq!(node_ports_of(&cip), vec![None, None]);
    assert!(cip["spec"].get("externalTrafficPolicy").is_none());
    assert_eq!(fx.alloc(), (before.0, before.1 - 1));
    fx.must_create(&with(node_port("after-dns"), |v| v["spec"]["ports"][0]["nodePort"] = json!(shared))).await;

    // Clean up: back to the baseline.
    let (_, _) = fx.held_by_all().await;
    let list = fx.send("GET", "/api/v1/namespaces/default/services", None, "application/json").await.unwrap();
    for s in list["items"].as_array().unwrap() {
        let name = s["metadata"]["name"].as_str().unwrap();
        if name != "kubernetes" {
            fx.must_delete(name).await;
        }
    }
    assert_eq!(fx.alloc(), fx.baseline);
}

/// The health-check port follows LoadBalancer + ETP Local on update: allocated, kept, released.
#[tokio::test]
async fn health_check_node_port_lifecycle() {
    let fx = Fx::start().await;
    let np = fx.must_create(&node_port("hc")).await;
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 1)));

    // NodePort -> LoadBalancer with ETP Local: a health-check port is allocated, nodePorts kept.
    let mut next = np.clone();
    next["spec"]["type"] = json!("LoadBalancer");
    next["spec"]["externalTrafficPolicy"] = json!("Local");
    let lb = fx.must_put("hc", &next).await;
    assert_eq!(node_ports_of(&lb), node_ports_of(&np));
    let hc = lb["spec"]["healthCheckNodePort"].as_i64().expect("health-check port");
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 2)));

    // An update that omits it keeps it.
    let mut next = lb.clone();
    next["spec"].as_object_mut().unwrap().remove("healthCheckNodePort");
    next["metadata"]["labels"] = json!({"x": "y"});
    let kept = fx.must_put("hc", &next).await;
    assert_eq!(kept["spec"]["healthCheckNodePort"], hc);
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 2)));

    // ETP back to Cluster: released and wiped.
    let mut next = kept.clone();
    next["spec"]["externalTrafficPolicy"] = json!("Cluster");
    let cluster = fx.must_put("hc", &next).await;
    assert!(cluster["spec"].get("healthCheckNodePort").is_none(), "{}", cluster["spec"]);
    assert_eq!(fx.alloc(), plus(fx.baseline, (1, 1)));
    fx.must_create(&with(node_port("takes-hc"), |v| v["spec"]["ports"][0]["nodePort"] = json!(hc))).await;

    // Local again with a requested port.
    let mut next = cluster.clone();
    next["spec"]["externalTrafficPolicy"] = json!("Local");
    next["spec"]["healthCheckNodePort"] = json!(30555);
    let local = fx.must_put("hc", &next).await;
    assert_eq!(local["spec"]["healthCheckNodePort"], 30555);
    // ... a taken one is a 500 on update too, and nothing changes.
    let mut next = cluster.clone();
    next["metadata"]["resourceVersion"] = local["metadata"]["resourceVersion"].clone();
    next["spec"]["externalTrafficPolicy"] = json!("Cluster");
    fx.must_put("hc", &next).await;
    let before = fx.alloc();
    let mut next = fx.must_get("hc").await;
    next["spec"]["externalTrafficPolicy"] = json!("Local");
    next["spec"]["healthCheckNodePort"] = json!(hc);
    let err = fx.put("hc", &next).await.expect_err("taken health-check port");
    check_status(
        "taken hc on update",
        "hc",
        &err,
        &internal(format!(
            "failed to allocate requested HealthCheck NodePort {hc}: provided port is already allocated"
        )),
    );
    assert_eq!(fx.alloc(), before);

    // A create into a namespace that does not exist gives back what it allocated.
    let err = fx
        .send("POST", "/api/v1/namespaces/nope/services", Some(&load_balancer("lost")), "application/json")
        .await
        .expect_err("no namespace");
    assert_eq!(err.code, 404, "{err:?}");
    assert_eq!(fx.alloc(), before);
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Type transitions.

const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

fn of_type(name: &str, ty: &str) -> Value {
    match ty {
        "ClusterIP" => base(name),
        "NodePort" => node_port(name),
        "LoadBalancer" => with(load_balancer(name), |v| {
            v["spec"]["loadBalancerClass"] = json!("example.com/internal-vip");
            v["spec"]["externalTrafficPolicy"] = json!("Local");
        }),
        "ExternalName" => external_name(name),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn type_transitions_all_pairs() {
    let fx = Fx::start().await;
    let mut failures = Vec::new();
    for from in TYPES {
        for to in TYPES {
            if from == to {
                continue;
            }
            let name = format!("{}-to-{}", from.to_lowercase(), to.to_lowercase());
            if let Err(e) = transition(&fx, &name, from, to).await {
                failures.push(format!("{from} -> {to}: {e}"));
            }
            assert_eq!(fx.alloc(), fx.baseline, "{from} -> {to}: allocations after delete");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn transition(fx: &Fx, name: &str, from: &str, to: &str) -> Result<(), String> {
    macro_rules! ensure {
        ($cond:expr, $($fmt:tt)*) => {
            if !$cond {
                let _ = fx.delete(name).await;
                return Err(format!($($fmt)*));
            }
        };
    }
    let created = fx.must_create(&of_type(name, from)).await;
    ensure!(
        fx.alloc() == plus(fx.baseline, held_count(&created)),
        "after create {:?} vs {:?}",
        fx.alloc(),
        held_count(&created)
    );
    let mut cur = created.clone();
    if from == "LoadBalancer" {
        // Give it a load-balancer status that a type change must clear.
        cur = fx
            .merge_patch(
                name,
                Some("status"),
                &json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}}),
            )
            .await
            .map_err(|s| format!("status patch: {s:?}"))?;
        ensure!(cur["status"]["loadBalancer"]["ingress"][0]["ipMode"] == "VIP", "status {}", cur["status"]);
    }
    let old_ips = ips_of(&cur);
    let old_nps = node_ports_of(&cur);

    let mut next = cur.clone();
    next["spec"]["type"] = json!(to);
    if to == "ExternalName" {
        next["spec"]["externalName"] = json!("db.example.com");
    }
    if from == "ExternalName" {
        next["spec"].as_object_mut().unwrap().remove("externalName");
    }
    let updated = match fx.put(name, &next).await {
        Ok(v) => v,
        Err(s) => {
            let _ = fx.delete(name).await;
            return Err(format!("update refused: {s:?}"));
        }
    };
    let got = fx.must_get(name).await;
    ensure!(got == updated, "GET differs from the update's response:\n{got}\n{updated}");
    let spec = &updated["spec"];
    let absent = |f: &str| spec.get(f).is_none();
    ensure!(spec["type"] == to, "type {}", spec["type"]);

    // clusterIP: wiped for ExternalName; kept across non-ExternalName types; allocated from ExternalName.
    if to == "ExternalName" {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            ensure!(absent(f), "{f} kept on ExternalName: {spec}");
        }
        ensure!(absent("internalTrafficPolicy"), "internalTrafficPolicy shown on ExternalName: {spec}");
    } else if from == "ExternalName" {
        let ips = ips_of(&updated);
        ensure!(ips.len() == 1 && in_cidr(&ips[0], "127.96.0.0/12"), "no clusterIP allocated: {spec}");
        ensure!(spec["clusterIP"] == json!(ips[0]), "clusterIP != clusterIPs[0]: {spec}");
        ensure!(spec["ipFamilies"] == json!(["IPv4"]) && spec["ipFamilyPolicy"] == "SingleStack", "families: {spec}");
        ensure!(spec["internalTrafficPolicy"] == "Cluster", "internalTrafficPolicy: {spec}");
    } else {
        ensure!(ips_of(&updated) == old_ips, "clusterIPs changed {old_ips:?} -> {:?}", ips_of(&updated));
    }

    // nodePorts: present for NodePort/LB (kept when both use them), wiped otherwise.
    let nps = node_ports_of(&updated);
    match to {
        "NodePort" | "LoadBalancer" => {
            ensure!(nps.iter().all(Option::is_some), "nodePorts missing: {spec}");
            if from == "NodePort" || from == "LoadBalancer" {
                ensure!(nps == old_nps, "nodePorts changed {old_nps:?} -> {nps:?}");
            }
        }
        _ => ensure!(nps.iter().all(Option::is_none), "nodePorts kept: {spec}"),
    }

    // externalTrafficPolicy: only when externally accessible; Cluster by default, Local kept LB -> NodePort.
    match to {
        "NodePort" | "LoadBalancer" => {
            let want = if from == "LoadBalancer" { "Local" } else { "Cluster" };
            ensure!(spec["externalTrafficPolicy"] == want, "externalTrafficPolicy {}", spec["externalTrafficPolicy"]);
        }
        _ => ensure!(absent("externalTrafficPolicy"), "externalTrafficPolicy kept: {spec}"),
    }

    // LoadBalancer-only fields.
    if to == "LoadBalancer" {
        ensure!(spec["allocateLoadBalancerNodePorts"] == true, "allocateLoadBalancerNodePorts: {spec}");
    } else {
        for f in ["allocateLoadBalancerNodePorts", "loadBalancerClass", "healthCheckNodePort"] {
            ensure!(absent(f), "{f} kept: {spec}");
        }
        ensure!(updated["status"]["loadBalancer"] == json!({}), "status.loadBalancer kept: {}", updated["status"]);
    }
    ensure!(absent("healthCheckNodePort"), "healthCheckNodePort without LB+Local: {spec}");

    // Allocations follow what is held.
    ensure!(
        fx.alloc() == plus(fx.baseline, held_count(&updated)),
        "allocations {:?}, held {:?} (before {:?})",
        fx.alloc(),
        held_count(&updated),
        held_count(&cur)
    );
    // What was released can be taken by a fresh Service.
    let released_ports: Vec<i64> =
        held(&cur).1.into_iter().map(i64::from).filter(|p| !held(&updated).1.contains(&(*p as i32))).collect();
    for p in released_ports {
        let probe = format!("{name}-probe");
        let r = fx.create(&with(node_port(&probe), |v| v["spec"]["ports"][0]["nodePort"] = json!(p))).await;
        ensure!(r.is_ok(), "released port {p} not reusable: {r:?}");
        fx.must_delete(&probe).await;
    }
    if to == "ExternalName" {
        for ip in &old_ips {
            let probe = format!("{name}-probe");
            let r = fx.create(&with(base(&probe), |v| v["spec"]["clusterIP"] = json!(ip))).await;
            ensure!(r.is_ok(), "released IP {ip} not reusable: {r:?}");
            fx.must_delete(&probe).await;
        }
    }
    fx.must_delete(name).await;
    Ok(())
}

/// ExternalName hides internalTrafficPolicy on read even when a client sends it.
#[tokio::test]
async fn external_name_hides_internal_traffic_policy() {
    let fx = Fx::start().await;
    let svc =
        fx.must_create(&with(external_name("ext"), |v| v["spec"]["internalTrafficPolicy"] = json!("Local"))).await;
    assert!(svc["spec"].get("internalTrafficPolicy").is_none(), "{}", svc["spec"]);
    assert!(fx.must_get("ext").await["spec"].get("internalTrafficPolicy").is_none());
    // Still validated.
    let err = fx
        .create(&with(external_name("ext-bad"), |v| v["spec"]["internalTrafficPolicy"] = json!("Foo")))
        .await
        .expect_err("bad itp");
    check_status(
        "ext-bad",
        "ext-bad",
        &err,
        &one("spec.internalTrafficPolicy", "Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\""),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Concurrency.

/// 500 creates in flight at once on one thread: they interleave between allocation and commit.
#[tokio::test]
async fn concurrent_creates_hand_out_unique_values() {
    concurrent_creates().await;
}

/// The same on four worker threads. Ignored: the runtime's shutdown can hang because the built-in
/// Services controller's watchers retry without backoff and spin once the in-process client's buffer
/// worker is gone (controllers/src/builtin_services.rs; reported).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_on_worker_threads() {
    concurrent_creates().await;
}

async fn concurrent_creates() {
    let fx = Fx::start().await;
    assert_eq!(fx.baseline, (2, 0));
    const N: usize = 500;
    // 40 explicit static-band IPs, 20 of them asked for twice; 40 explicit static-band nodePorts, 20 asked
    // for twice; the rest dynamic. Every Service is a NodePort.
    let mut bodies = Vec::new();
    for i in 0..N {
        let mut svc = node_port(&format!("c{i}"));
        match i {
            0..40 => svc["spec"]["clusterIP"] = json!(format!("127.96.0.{}", 100 + i)),
            40..60 => svc["spec"]["clusterIP"] = json!(format!("127.96.0.{}", 100 + (i - 40))),
            60..100 => svc["spec"]["ports"][0]["nodePort"] = json!(30000 + (i - 60)),
            100..120 => svc["spec"]["ports"][0]["nodePort"] = json!(30000 + (i - 100)),
            _ => {}
        }
        if i % 7 == 0 {
            // Some with a second port, some sharing one nodePort across protocols.
            svc["spec"]["ports"].as_array_mut().unwrap().push(json!({"name": "udp", "port": 80, "protocol": "UDP"}));
        }
        bodies.push(svc);
    }
    let client = fx.client.clone();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let client = client.clone();
            tokio::spawn(async move {
                let req = http::Request::post("/api/v1/namespaces/default/services")
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .unwrap();
                (body, client.request::<Value>(req).await)
            })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(60), join_all(tasks)).await.expect("creates finish");
    let mut ok = 0;
    let mut refused_ip = 0;
    let mut refused_port = 0;
    for r in results {
        let (body, res) = r.expect("task");
        match res {
            Ok(_) => ok += 1,
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
                assert!(s.message.contains("already allocated"), "{}", s.message);
                if body["spec"].get("clusterIP").is_some() {
                    refused_ip += 1;
                } else {
                    refused_port += 1;
                }
            }
            Err(e) => panic!("transport error {e:?}"),
        }
    }
    // Exactly one of each contested pair wins.
    assert_eq!((refused_ip, refused_port), (20, 20));
    assert_eq!(ok, N - 40);

    let (ips, ports) = fx.held_by_all().await;
    let unique_ips: HashSet<_> = ips.iter().collect();
    let unique_ports: HashSet<_> = ports.iter().collect();
    assert_eq!(unique_ips.len(), ips.len(), "a clusterIP was handed out twice");
    assert_eq!(unique_ports.len(), ports.len(), "a nodePort was handed out twice");
    assert_eq!(ips.len(), ok + 2);
    assert_eq!(ports.len(), ok);
    assert_eq!(fx.alloc(), (ips.len(), ports.len()));
    // The static-band requests got exactly what they asked for.
    for i in 0..40 {
        assert!(unique_ips.contains(&format!("127.96.0.{}", 100 + i)));
        assert!(unique_ports.contains(&(30000 + i)));
    }

    // Delete everything concurrently: back to the baseline.
    let list = fx.send("GET", "/api/v1/namespaces/default/services", None, "application/json").await.unwrap();
    let names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|n| n != "kubernetes")
        .collect();
    assert_eq!(names.len(), ok);
    let tasks: Vec<_> = names
        .into_iter()
        .map(|name| {
            let client = client.clone();
            tokio::spawn(async move {
                let api: Api<Service> = Api::namespaced(client, NS);
                api.delete(&name, &Default::default()).await.map(|_| ())
            })
        })
        .collect();
    for r in tokio::time::timeout(Duration::from_secs(60), join_all(tasks)).await.expect("deletes finish") {
        r.expect("task").expect("delete");
    }
    assert_eq!(fx.alloc(), fx.baseline);
}

// ---------------------------------------------------------------------------------------------------------------
// 7. The status subresource (conformance "should complete a service status lifecycle").

#[tokio::test]
async fn service_status_lifecycle() {
    let fx = Fx::start().await;
    let api: Api<Service> = Api::namespaced(fx.client.clone(), NS);
    // Watch the Service from before it exists: each change must show up.
    let listed = fx.send("GET", "/api/v1/namespaces/default/services", None, "application/json").await.unwrap();
    let from = listed["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let watch_params = kube::api::WatchParams::default().fields("metadata.name=status");
    let mut events = futures::StreamExt::boxed(api.watch(&watch_params, &from).await.expect("watch"));
    let lb = with(load_balancer("status"), |v| v["spec"]["loadBalancerClass"] = json!("example.com/internal-vip"));
    let created = fx.must_create(&lb).await;
    let spec = created["spec"].clone();

    // GET /status.
    let st = fx
        .send("GET", "/api/v1/namespaces/default/services/status/status", None, "application/json")
        .await
        .expect("get status");
    assert_eq!(st["status"], json!({"loadBalancer": {}}));

    // Merge-patch /status with an ingress and an annotation: ipMode defaults to VIP, the annotation persists.
    let patched = fx
        .merge_patch(
            "status",
            Some("status"),
            &json!({
                "metadata": {"annotations": {"patchedstatus": "true"}},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}},
            }),
        )
        .await
        .expect("patch status");
    assert_eq!(patched["status"]["loadBalancer"]["ingress"], json!([{"ip": "203.0.113.1", "ipMode": "VIP"}]));
    assert_eq!(patched["metadata"]["annotations"]["patchedstatus"], "true");
    let got = fx.must_get("status").await;
    assert_eq!(got["metadata"]["annotations"]["patchedstatus"], "true");
    assert_eq!(got["status"], patched["status"]);
    assert_eq!(got["spec"], spec);

    // UpdateStatus appending a condition.
    let mut svc = api.get_status("status").await.expect("get status");
    let mut conditions = svc.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "StatusUpdate".into(),
        status: "True".into(),
        reason: "E2E".into(),
        message: "Set from e2e test".into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: None,
    });
    svc.status.get_or_insert_with(Default::default).conditions = Some(conditions);
    let updated = api.replace_status("status", &Default::default(), &svc).await.expect("replace status");
    let cond = &updated.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
    assert_eq!((cond.type_.as_str(), cond.status.as_str(), cond.reason.as_str()), ("StatusUpdate", "True", "E2E"));
    assert_eq!(updated.metadata.annotations.as_ref().unwrap()["patchedstatus"], "true");

    // Spec changes sent through /status are ignored.
    let mut cur = fx.must_get("status").await;
    cur["spec"]["type"] = json!("ClusterIP");
    cur["spec"]["ports"][0]["port"] = json!(81);
    cur["spec"]["sessionAffinity"] = json!("ClientIP");
    let after = fx.put_status("status", &cur).await.expect("put status");
    assert_eq!(after["spec"], spec);
    let after = fx
        .merge_patch("status", Some("status"), &json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local"}}))
        .await
        .expect("patch status with spec");
    assert_eq!(after["spec"], spec);
    assert_eq!(fx.must_get("status").await["spec"], spec);
    // Status changes sent through the main resource are ignored.
    let mut cur = fx.must_get("status").await;
    cur["status"]["loadBalancer"]["ingress"] = json!([{"ip": "198.51.100.9", "ipMode": "VIP"}]);
    let kept = fx.must_put("status", &cur).await;
    assert_eq!(kept["status"]["loadBalancer"]["ingress"][0]["ip"], "203.0.113.1");

    // Invalid status: 422 on the ingress, nothing stored.
    let before = fx.must_get("status").await;
    let rows: Vec<(Value, Want)> = vec![
        (
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "foo"}]}}}),
            one("status.loadBalancer.ingress[0].ip", format!("Invalid value: \"foo\": {IP_MSG}")),
        ),
        (
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "Bogus"}]}}}),
            one(
                "status.loadBalancer.ingress[0].ipMode",
                "Unsupported value: \"Bogus\": supported values: \"Proxy\", \"VIP\"",
            ),
        ),
        (
            json!({"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com", "ipMode": "VIP"}]}}}),
            one("status.loadBalancer.ingress[0].ipMode", "Forbidden: may not be specified when `ip` is not set"),
        ),
        (
            json!({"status": {"loadBalancer": {"ingress": [{"hostname": "10.0.0.1"}]}}}),
            one(
                "status.loadBalancer.ingress[0].hostname",
                "Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
            ),
        ),
        (
            json!({"status": {"loadBalancer": {"ingress": [{"hostname": "Bad_Host"}]}}}),
            one(
                "status.loadBalancer.ingress[0].hostname",
                format!("Invalid value: \"Bad_Host\": {DNS1123_SUBDOMAIN_MSG}"),
            ),
        ),
    ];
    for (patch, want) in rows {
        let err = fx.merge_patch("status", Some("status"), &patch).await.expect_err("invalid status");
        check_status(&patch.to_string(), "status", &err, &want);
        assert_eq!(fx.must_get("status").await, before);
    }

    // Ingress on a non-LoadBalancer Service is forbidden.
    fx.must_create(&base("cip")).await;
    let err = fx
        .merge_patch("cip", Some("status"), &json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.2"}]}}}))
        .await
        .expect_err("ingress on ClusterIP");
    check_status(
        "ingress on ClusterIP",
        "cip",
        &err,
        &one("status.loadBalancer.ingress", "Forbidden: may only be used when `spec.type` is 'LoadBalancer'"),
    );

    // Patch the spec/labels via the main resource; the status stays.
    let patched =
        fx.merge_patch("status", None, &json!({"metadata": {"labels": {"patched": "true"}}})).await.expect("patch");
    assert_eq!(patched["metadata"]["labels"]["patched"], "true");
    assert_eq!(patched["status"]["loadBalancer"]["ingress"][0]["ip"], "203.0.113.1");

    // Delete.
    fx.must_delete("status").await;
    fx.must_delete("cip").await;
    assert_eq!(fx.alloc(), fx.baseline);

    // The watch saw: created, status patched, status updated, labels patched, deleted.
    use kube::api::WatchEvent;
    let mut seen: Vec<(String, Service)> = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = futures::StreamExt::next(&mut events).await {
            match ev.expect("watch event") {
                WatchEvent::Added(s) => seen.push(("ADDED".into(), s)),
                WatchEvent::Modified(s) => seen.push(("MODIFIED".into(), s)),
                WatchEvent::Deleted(s) => {
                    seen.push(("DELETED".into(), s));
                    break;
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("watch error {e:?}"),
            }
        }
    })
    .await
    .expect("events within the deadline");
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"ADDED"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"DELETED"), "{kinds:?}");
    let has = |f: &dyn Fn(&Service) -> bool| seen.iter().any(|(k, s)| k == "MODIFIED" && f(s));
    let ingress_ip = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone())
    };
    assert!(has(&|s| ingress_ip(s).as_deref() == Some("203.0.113.1")), "no status patch event: {kinds:?}");
    assert!(
        has(&|s| s
            .status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "StatusUpdate"))),
        "no status update event"
    );
    assert!(
        has(&|s| s.metadata.labels.as_ref().is_some_and(|l| l.get("patched").map(String::as_str) == Some("true"))),
        "no label event"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 8. Built-in Services.

#[tokio::test]
async fn builtin_services() {
    let fx = Fx::start().await;
    assert_eq!(fx.baseline, (2, 0));

    let k = fx.get_in("default", "kubernetes").await.expect("kubernetes");
    assert_eq!(k["spec"]["clusterIP"], "127.96.0.1");
    assert_eq!(k["spec"]["clusterIPs"], json!(["127.96.0.1"]));
    assert_eq!(k["spec"]["type"], "ClusterIP");
    assert_eq!(k["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(k["spec"]["sessionAffinity"], "None");
    assert!(k["spec"].get("selector").is_none());
    assert_eq!(k["metadata"]["labels"], json!({"component": "apiserver", "provider": "kubernetes"}));
    let ports = k["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0]["name"].clone(), ports[0]["port"].clone(), ports[0]["protocol"].clone()),
        (json!("https"), json!(443), json!("TCP"))
    );

    #[allow(deprecated)]
    let eps: Api<Endpoints> = Api::namespaced(fx.client.clone(), "default");
    #[allow(deprecated)]
    let ep = eps.get("kubernetes").await.expect("Endpoints kubernetes");
    #[allow(deprecated)]
    let subset = &ep.subsets.as_ref().expect("subsets")[0];
    assert_eq!(subset.ports.as_ref().unwrap()[0].name.as_deref(), Some("https"));
    assert!(!subset.addresses.as_ref().unwrap().is_empty());
    let slices: Api<EndpointSlice> = Api::namespaced(fx.client.clone(), "default");
    let slice = slices.get("kubernetes").await.expect("EndpointSlice kubernetes");
    assert_eq!(slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"], "kubernetes");
    assert_eq!(slice.ports.as_ref().unwrap()[0].name.as_deref(), Some("https"));
    assert_eq!(slice.endpoints.len(), 1);

    let dns = fx.get_in("kube-system", "kube-dns").await.expect("kube-dns");
    assert_eq!(dns["spec"]["clusterIP"], "127.96.0.10");
    let ports: Vec<(String, i64, String)> = dns["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap().into(), p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("dns".into(), 53, "UDP".into()),
            ("dns-tcp".into(), 53, "TCP".into()),
            ("metrics".into(), 9153, "TCP".into())
        ]
    );
    assert_eq!(dns["spec"]["selector"], json!({"k8s-app": "kube-dns"}));

    // Listing all namespaces finds kubernetes in default.
    let all = fx.send("GET", "/api/v1/services", None, "application/json").await.unwrap();
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["metadata"]["name"] == "kubernetes" && s["metadata"]["namespace"] == "default")
    );

    // Deleted kube-dns comes back, with the same address.
    let old_uid = dns["metadata"]["uid"].as_str().unwrap().to_string();
    let api: Api<Service> = Api::namespaced(fx.client.clone(), "kube-system");
    api.delete("kube-dns", &Default::default()).await.expect("delete kube-dns");
    let cond = {
        let old_uid = old_uid.clone();
        move |s: Option<&Service>| s.is_some_and(|s| s.metadata.uid.as_deref() != Some(old_uid.as_str()))
    };
    tokio::time::timeout(DEADLINE, kube::runtime::wait::await_condition(api.clone(), "kube-dns", cond))
        .await
        .expect("kube-dns recreated in time")
        .expect("watch");
    let again = fx.get_in("kube-system", "kube-dns").await.expect("kube-dns again");
    assert_eq!(again["spec"]["clusterIP"], "127.96.0.10");
    assert_eq!(fx.alloc(), (2, 0));

    // So does default/kubernetes.
    let api: Api<Service> = Api::namespaced(fx.client.clone(), "default");
    let old_uid = k["metadata"]["uid"].as_str().unwrap().to_string();
    api.delete("kubernetes", &Default::default()).await.expect("delete kubernetes");
    let cond = move |s: Option<&Service>| s.is_some_and(|s| s.metadata.uid.as_deref() != Some(old_uid.as_str()));
    tokio::time::timeout(DEADLINE, kube::runtime::wait::await_condition(api.clone(), "kubernetes", cond))
        .await
        .expect("kubernetes recreated in time")
        .expect("watch");
    assert_eq!(fx.get_in("default", "kubernetes").await.unwrap()["spec"]["clusterIP"], "127.96.0.1");
    assert_eq!(fx.alloc(), (2, 0));

    // An EndpointSlice pointed elsewhere is put back (the controller watches just its objects),
    // each time: the second time nothing else is changing that could wake it.
    let right = slice.endpoints[0].addresses.clone();
    let wrong = json!({"endpoints": [{"addresses": ["127.0.0.99"]}]});
    for _ in 0..2 {
        slices.patch("kubernetes", &PatchParams::default(), &Patch::Merge(&wrong)).await.expect("patch slice");
        let right = right.clone();
        let cond = move |s: Option<&EndpointSlice>| {
            s.is_some_and(|s| s.endpoints.len() == 1 && s.endpoints[0].addresses == right)
        };
        tokio::time::timeout(DEADLINE, kube::runtime::wait::await_condition(slices.clone(), "kubernetes", cond))
            .await
            .expect("kubernetes EndpointSlice restored in time")
            .expect("watch");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 9. Restart: the allocators are rebuilt from storage.

#[tokio::test]
async fn restart_rebuilds_allocators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || Config {
        data_dir: Some(dir.path().to_path_buf()),
        listen: None,
        node_port_range: NodePortRange { first: 30000, last: 30299 },
        service_cidr: "127.96.0.0/24".into(),
        ..Config::ephemeral()
    };
    let make = |i: usize| {
        let mut svc = node_port(&format!("r{i}"));
        // Explicit values from the static bands (.1-.16 and 30000-30015), clear of kubernetes and kube-dns.
        const STATIC_IPS: [u8; 10] = [2, 3, 4, 5, 6, 7, 8, 9, 11, 12];
        if i.is_multiple_of(10) {
            svc["spec"]["clusterIP"] = json!(format!("127.96.0.{}", STATIC_IPS[i / 10]));
        }
        if i % 10 == 1 {
            svc["spec"]["ports"][0]["nodePort"] = json!(30000 + (i / 10) as i64);
        }
        if i % 10 == 2 {
            svc = with(load_balancer(&format!("r{i}")), |v| v["spec"]["externalTrafficPolicy"] = json!("Local"));
        }
        svc
    };

    let first = {
        let fx = Fx::with(config()).await;
        assert_eq!(fx.baseline, (2, 0));
        let results = join_all((0..50).map(|i| {
            let body = make(i);
            let fx = &fx;
            async move { fx.must_create(&body).await }
        }))
        .await;
        let held: (usize, usize) = results.iter().map(held_count).fold((0, 0), plus);
        assert_eq!(fx.alloc(), plus(fx.baseline, held));
        fx.held_by_all().await
    }; // dropped: a stop.

    let fx = restart(config()).await;
    // Rebuilt from the stored Services.
    assert_eq!(fx.baseline, (first.0.len(), first.1.len()));
    assert_eq!(fx.held_by_all().await, first);
    // 50 more, then nothing handed out twice across all 100.
    join_all((50..100).map(|i| {
        let body = make(i);
        let fx = &fx;
        async move { fx.must_create(&body).await }
    }))
    .await;
    let (ips, ports) = fx.held_by_all().await;
    assert_eq!(ips.len(), 102);
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), ips.len(), "an IP was handed out twice: {ips:?}");
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), ports.len(), "a port was handed out twice: {ports:?}");
    assert_eq!(fx.alloc(), (ips.len(), ports.len()));
    // Values held before the restart are refused.
    let taken_ip = first.0.iter().find(|ip| *ip != "127.96.0.1" && *ip != "127.96.0.10").unwrap().clone();
    let err = fx.create(&with(base("dup-ip"), |v| v["spec"]["clusterIP"] = json!(taken_ip))).await.expect_err("dup ip");
    assert_eq!(err.code, 422, "{err:?}");
    let taken_port = first.1[0];
    let err = fx
        .create(&with(node_port("dup-port"), |v| v["spec"]["ports"][0]["nodePort"] = json!(taken_port)))
        .await
        .expect_err("dup port");
    assert_eq!(err.code, 422, "{err:?}");

    // A third start sees all 100 and the counts still agree.
    let counts: BTreeMap<&str, usize> = BTreeMap::from([("ips", ips.len()), ("ports", ports.len())]);
    drop(fx);
    let fx = restart(config()).await;
    assert_eq!(fx.baseline, (counts["ips"], counts["ports"]));
}

/// Starts a cluster on a data directory a dropped cluster used. Dropping a `Cluster` only asks its tasks
/// to stop; the database lock goes with the last of them, so yield to the runtime until it is free.
async fn restart(config: Config) -> Fx {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match Cluster::start_with(config.clone()).await {
            Ok(cluster) => {
                let client = cluster.client();
                let baseline = cluster.service_allocations();
                return Fx { cluster, client, baseline };
            }
            Err(e) if e.to_string().contains("could not acquire lock") && tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    }
}
