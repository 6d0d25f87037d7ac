//! Namespace deletion and cascading deletes end to end: the real `kplane serve` binary driven by
//! kubectl 1.27 and 1.33. `kubectl delete ns --wait` must come back once the namespace is gone,
//! and `kubectl delete deployment --cascade=foreground|orphan` must act on hand-made
//! Deployment → ReplicaSet ownership as on a real cluster. Each test has its own server.

use kplane_e2e::Server;
use serde_json::Value;
use std::time::{Duration, Instant};

fn ok(server: &Server, version: &str, args: &[&str]) -> String {
    server.kubectl_ok(version, args)
}

fn fails(server: &Server, version: &str, args: &[&str]) -> String {
    server.kubectl_fails(version, args)
}

/// How long a namespace may take to go (a pod on a missing node waits out pod GC's quarantine).
const GONE_WITHIN: Duration = Duration::from_secs(60);

fn json(server: &Server, version: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let stdout = ok(server, version, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kubectl {} -o json: {e}\n{stdout}", args.join(" ")))
}

fn apply(server: &Server, version: &str, name: &str, yaml: &str) {
    let file = server.write_file(name, yaml);
    ok(server, version, &["apply", "-f", file.to_str().expect("utf-8 path")]);
}

/// Polls kubectl until `check` accepts its JSON output.
fn eventually(server: &Server, version: &str, args: &[&str], what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let v = json(server, version, args);
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything a namespace usually holds, plus what makes deletion wait: a pod with a grace
/// period on a node that no longer exists, a ConfigMap owned by another, a held ConfigMap.
fn content(ns: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: Node
metadata:
  name: other-node
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: plain
  namespace: {ns}
data:
  k: v
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: held
  namespace: {ns}
  finalizers: [example.com/hold]
---
apiVersion: v1
kind: Secret
metadata:
  name: s
  namespace: {ns}
stringData:
  password: hunter2
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: 0
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: c
        image: example.com/web:1
---
apiVersion: v1
kind: Pod
metadata:
  name: bound
  namespace: {ns}
spec:
  nodeName: other-node
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: example.com/web:1
---
apiVersion: v1
kind: Pod
metadata:
  name: stranded
  namespace: {ns}
spec:
  nodeName: gone-node
  containers:
  - name: c
    image: example.com/web:1
"
    )
}

fn namespace_delete_waits_until_gone(v: &str) {
    let server = Server::start_ephemeral();
    let ns = "lc";
    apply(&server, v, "content.yaml", &content(ns));
    let owner_uid = ok(&server, v, &["get", "cm", "plain", "-n", ns, "-o", "jsonpath={.metadata.uid}"]);
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  namespace: {ns}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: plain\n    uid: {owner_uid}\n"
    );
    apply(&server, v, "owned.yaml", &owned);

    let mut delete = server.kubectl_spawn(v, &["delete", "ns", ns, "--wait"]);
    let line = delete.wait_for_line(Duration::from_secs(30), |l| l.contains("deleted")).expect("delete accepted");
    assert_eq!(line, format!("namespace \"{ns}\" deleted"));

    // While the held ConfigMap is there, kubectl keeps waiting, the namespace says why, and
    // nothing new may be created in it.
    let status = eventually(&server, v, &["get", "ns", ns], "the held ConfigMap reported", |n| {
        n["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "NamespaceFinalizersRemaining"
                && c["message"] == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        })
    });
    assert_eq!(status["status"]["phase"], "Terminating");
    assert!(!delete.has_exited(), "kubectl returned while the namespace still exists");
    let refused = fails(&server, v, &["create", "configmap", "late", "-n", ns]);
    assert!(
        refused.contains(&format!(
            "configmaps \"late\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"
        )),
        "{refused}"
    );
    let left = ok(&server, v, &["get", "configmaps,secrets,services,deployments,pods", "-n", ns, "-o", "name"]);
    assert!(!left.contains("secret/") && !left.contains("service/") && !left.contains("deployment"), "{left}");

    ok(&server, v, &["patch", "cm", "held", "-n", ns, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let deadline = Instant::now() + GONE_WITHIN;
    while !delete.has_exited() {
        assert!(Instant::now() < deadline, "kubectl delete ns --wait did not return; stderr: {}", delete.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = fails(&server, v, &["get", "ns", ns]);
    assert!(gone.contains(&format!("namespaces \"{ns}\" not found")), "{gone}");
}

#[test]
fn namespace_delete_waits_until_gone_1_27() {
    namespace_delete_waits_until_gone("1.27");
}

#[test]
fn namespace_delete_waits_until_gone_1_33() {
    namespace_delete_waits_until_gone("1.33");
}

/// A Deployment with no replicas and a ReplicaSet made by hand that it controls.
fn deployment_with_replica_set(server: &Server, v: &str, name: &str) {
    let deployment = format!(
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 0
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: c
        image: example.com/{name}:1
"
    );
    apply(server, v, &format!("{name}-deploy.yaml"), &deployment);
    let uid = ok(server, v, &["get", "deployment", name, "-o", "jsonpath={.metadata.uid}"]);
    let rs = format!(
        "\
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}-hand
  labels:
    app: {name}
  ownerReferences:
  - apiVersion: apps/v1
    kind: Deployment
    name: {name}
    uid: {uid}
    controller: true
    blockOwnerDeletion: true
spec:
  replicas: 0
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: c
        image: example.com/{name}:1
"
    );
    apply(server, v, &format!("{name}-rs.yaml"), &rs);
}

/// ReplicaSets whose owner references name `uid`.
fn owned_by(server: &Server, v: &str, uid: &str) -> Vec<String> {
    let list = json(server, v, &["get", "replicasets"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| rs["metadata"]["ownerReferences"].as_array().into_iter().flatten().any(|r| r["uid"] == uid))
        .filter_map(|rs| rs["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn cascading_deletes(v: &str) {
    let server = Server::start_ephemeral();

    // Foreground: kubectl waits while the ReplicaSet goes first, then the Deployment.
    deployment_with_replica_set(&server, v, "fg");
    let uid = ok(&server, v, &["get", "deployment", "fg", "-o", "jsonpath={.metadata.uid}"]);
    let out = ok(&server, v, &["delete", "deployment", "fg", "--cascade=foreground"]);
    assert_eq!(out.trim(), "deployment.apps \"fg\" deleted");
    let gone = fails(&server, v, &["get", "deployment", "fg"]);
    assert!(gone.contains("deployments.apps \"fg\" not found"), "{gone}");
    let rs = fails(&server, v, &["get", "replicaset", "fg-hand"]);
    assert!(rs.contains("replicasets.apps \"fg-hand\" not found"), "{rs}");
    assert!(owned_by(&server, v, &uid).is_empty());

    // Orphan: the Deployment goes, the ReplicaSet stays without its owner reference.
    deployment_with_replica_set(&server, v, "or");
    let out = ok(&server, v, &["delete", "deployment", "or", "--cascade=orphan"]);
    assert_eq!(out.trim(), "deployment.apps \"or\" deleted");
    fails(&server, v, &["get", "deployment", "or"]);
    let rs = json(&server, v, &["get", "replicaset", "or-hand"]);
    assert!(rs["metadata"]["ownerReferences"].is_null(), "{rs:#}");

    // Background (kubectl's default): the ReplicaSet is collected after the Deployment is gone.
    deployment_with_replica_set(&server, v, "bg");
    ok(&server, v, &["delete", "deployment", "bg"]);
    eventually(&server, v, &["get", "replicasets"], "bg-hand collected", |list| {
        !list["items"].as_array().into_iter().flatten().any(|rs| rs["metadata"]["name"] == "bg-hand")
    });
}

#[test]
fn cascading_deletes_1_27() {
    cascading_deletes("1.27");
}

#[test]
fn cascading_deletes_1_33() {
    cascading_deletes("1.33");
}
