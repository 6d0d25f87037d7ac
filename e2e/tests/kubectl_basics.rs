//! Everyday kubectl against a real `kplane serve`, with the oldest and newest kubectl we
//! support (1.27, 1.33) and the `kubectl` dispatcher, which must pick 1.33 from the server's
//! version. Each test has its own server.

use kplane_e2e::{DISPATCHER, Server};
use serde_json::Value;
use std::time::Duration;

fn ok(server: &Server, version: &str, args: &[&str]) -> String {
    server.kubectl_ok(version, args)
}

fn fails(server: &Server, version: &str, args: &[&str]) -> String {
    server.kubectl_fails(version, args)
}

const CONFIGMAP: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm1
  labels:
    app: demo
data:
  k: v
";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: svc1
  labels:
    app: demo
spec:
  selector:
    app: demo
  ports:
  - name: http
    port: 80
    targetPort: 8080
";

fn json(server: &Server, version: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let stdout = ok(server, version, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kubectl {} -o json: {e}\n{stdout}", args.join(" ")))
}

/// The minor version kubectl `version` should report for the client.
fn expected_client_minor(version: &str) -> &str {
    if version == DISPATCHER { "33" } else { version.trim_start_matches("1.") }
}

fn version(v: &str) {
    let server = Server::start_ephemeral();
    let out = json(&server, v, &["version"]);
    let client_minor = out["clientVersion"]["minor"].as_str().unwrap_or_default().trim_end_matches('+');
    assert_eq!(client_minor, expected_client_minor(v), "client version: {out:#}");
    assert_eq!(out["serverVersion"]["major"], "1", "{out:#}");
    assert_eq!(out["serverVersion"]["minor"], "33", "{out:#}");
    let git = out["serverVersion"]["gitVersion"].as_str().unwrap_or_default();
    assert!(git.starts_with("v1.33."), "server gitVersion {git:?}");
    // The human form too.
    let text = ok(&server, v, &["version"]);
    assert!(text.contains("Server Version:"), "{text}");
}

fn api_resources(v: &str) {
    let server = Server::start_ephemeral();
    let out = ok(&server, v, &["api-resources"]);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    let has = |name: &str, short: Option<&str>| {
        rows.iter().any(|r| r.first() == Some(&name) && short.is_none_or(|s| r.get(1) == Some(&s)))
    };
    assert!(has("services", Some("svc")), "services/svc missing:\n{out}");
    assert!(has("deployments", Some("deploy")), "deployments/deploy missing:\n{out}");
    assert!(has("endpointslices", None), "endpointslices missing:\n{out}");
    assert!(has("namespaces", Some("ns")), "namespaces/ns missing:\n{out}");
    assert!(has("configmaps", Some("cm")), "configmaps/cm missing:\n{out}");
    // The APIVERSION column of endpointslices names its group.
    assert!(out.lines().any(|l| l.starts_with("endpointslices") && l.contains("discovery.k8s.io/v1")), "{out}");
}

fn get_namespaces(v: &str) {
    let server = Server::start_ephemeral();
    let names = ok(&server, v, &["get", "ns", "-o", "name"]);
    let table = ok(&server, v, &["get", "ns"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.lines().any(|l| l == format!("namespace/{ns}")), "{ns} missing from -o name:\n{names}");
        assert!(
            table.lines().any(|l| l.split_whitespace().next() == Some(ns) && l.contains("Active")),
            "{ns} missing from the table (or not Active):\n{table}"
        );
    }
    assert!(table.lines().next().is_some_and(|h| h.starts_with("NAME") && h.contains("STATUS")), "{table}");
}

fn create_get_modify_delete(v: &str) {
    let server = Server::start_ephemeral();
    let cm = server.write_file("cm.yaml", CONFIGMAP);
    let svc = server.write_file("svc.yaml", SERVICE);
    let cm = cm.to_str().unwrap();
    let svc = svc.to_str().unwrap();

    assert_eq!(ok(&server, v, &["create", "-f", cm]).trim(), "configmap/cm1 created");
    assert_eq!(ok(&server, v, &["create", "-f", svc]).trim(), "service/svc1 created");

    let yaml = ok(&server, v, &["get", "cm", "cm1", "-o", "yaml"]);
    for want in ["kind: ConfigMap", "name: cm1", "namespace: default", "k: v", "app: demo", "uid:"] {
        assert!(yaml.contains(want), "{want:?} missing from -o yaml:\n{yaml}");
    }
    let obj = json(&server, v, &["get", "cm", "cm1"]);
    assert_eq!(obj["kind"], "ConfigMap");
    assert_eq!(obj["data"]["k"], "v");
    assert!(obj["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{obj:#}");
    assert!(obj["metadata"]["creationTimestamp"].is_string(), "{obj:#}");
    let rv1: u64 = obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();

    let s = json(&server, v, &["get", "svc", "svc1"]);
    assert_eq!(s["spec"]["ports"][0]["port"], 80, "{s:#}");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080, "{s:#}");
    assert_eq!(s["spec"]["type"], "ClusterIP", "{s:#}");

    let list = json(&server, v, &["get", "cm"]);
    assert_eq!(list["kind"], "List", "{list:#}");
    assert!(list["items"].as_array().unwrap().iter().any(|i| i["metadata"]["name"] == "cm1"), "{list:#}");

    let names = ok(&server, v, &["get", "cm,svc", "-o", "name"]);
    assert!(names.lines().any(|l| l == "configmap/cm1"), "{names}");
    assert!(names.lines().any(|l| l == "service/svc1"), "{names}");

    let table = ok(&server, v, &["get", "cm"]);
    assert!(table.lines().any(|l| l.split_whitespace().next() == Some("cm1")), "{table}");
    let table = ok(&server, v, &["get", "svc", "-l", "app=demo"]);
    assert!(table.lines().next().is_some_and(|h| h.contains("CLUSTER-IP")), "no Table columns:\n{table}");
    assert!(table.lines().any(|l| l.starts_with("svc1 ") && l.contains("80/TCP")), "{table}");

    assert_eq!(ok(&server, v, &["label", "cm", "cm1", "tier=web"]).trim(), "configmap/cm1 labeled");
    // kubectl 1.27 prints "annotate", later ones "annotated".
    let annotated = ok(&server, v, &["annotate", "cm", "cm1", "note=hello"]);
    assert!(annotated.trim().starts_with("configmap/cm1 annotate"), "{annotated}");
    let merged = ok(&server, v, &["patch", "cm", "cm1", "--type=merge", "-p", r#"{"data":{"k2":"v2"}}"#]);
    assert_eq!(merged.trim(), "configmap/cm1 patched");
    let patch = r#"[{"op":"replace","path":"/data/k","value":"v-new"},{"op":"add","path":"/data/k3","value":"v3"}]"#;
    assert_eq!(ok(&server, v, &["patch", "cm", "cm1", "--type=json", "-p", patch]).trim(), "configmap/cm1 patched");

    let obj = json(&server, v, &["get", "cm", "cm1"]);
    assert_eq!(obj["metadata"]["labels"]["app"], "demo", "{obj:#}");
    assert_eq!(obj["metadata"]["labels"]["tier"], "web", "{obj:#}");
    assert_eq!(obj["metadata"]["annotations"]["note"], "hello", "{obj:#}");
    assert_eq!(obj["data"], serde_json::json!({"k": "v-new", "k2": "v2", "k3": "v3"}), "{obj:#}");
    let rv2: u64 = obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv2 > rv1, "resourceVersion went from {rv1} to {rv2}");

    // A label selector sees the new label.
    let selected = ok(&server, v, &["get", "cm", "-l", "tier=web", "-o", "name"]);
    assert_eq!(selected.trim(), "configmap/cm1");
    let none = server.kubectl(v, &["get", "cm", "-l", "tier=db", "-o", "name"]);
    assert!(
        none.status.success() && none.stdout.is_empty(),
        "{}",
        kplane_e2e::describe_kubectl(v, &["get -l tier=db"], &none)
    );

    assert_eq!(ok(&server, v, &["delete", "cm", "cm1"]).trim(), r#"configmap "cm1" deleted"#);
    let err = fails(&server, v, &["get", "cm", "cm1"]);
    assert!(err.contains(r#"Error from server (NotFound): configmaps "cm1" not found"#), "{err}");
    assert_eq!(ok(&server, v, &["delete", "-f", svc]).trim(), r#"service "svc1" deleted"#);
    let names = ok(&server, v, &["get", "svc", "-o", "name"]);
    assert!(!names.contains("svc1"), "{names}");
}

fn create_namespace(v: &str) {
    let server = Server::start_ephemeral();
    // kubectl 1.32+ sends this body as Kubernetes protobuf.
    assert_eq!(ok(&server, v, &["create", "namespace", "x"]).trim(), "namespace/x created");
    let ns = json(&server, v, &["get", "ns", "x"]);
    assert_eq!(ns["status"]["phase"], "Active", "{ns:#}");
    assert!(ns["metadata"]["uid"].is_string(), "{ns:#}");
    // A namespaced object can go into it.
    let cm = server.write_file("cm.yaml", CONFIGMAP);
    let created = ok(&server, v, &["create", "-n", "x", "-f", cm.to_str().unwrap()]);
    assert_eq!(created.trim(), "configmap/cm1 created");
}

fn delete_namespace(v: &str) {
    let server = Server::start_ephemeral();
    let file = server.write_file("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: doomed\n");
    assert_eq!(ok(&server, v, &["create", "-f", file.to_str().unwrap()]).trim(), "namespace/doomed created");
    // Content held by a finalizer keeps the namespace Terminating until it is released.
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: doomed\n  finalizers: [example.com/hold]\n";
    let held = server.write_file("held.yaml", held);
    ok(&server, v, &["create", "-f", held.to_str().unwrap()]);
    let deleted = ok(&server, v, &["delete", "namespace", "doomed", "--wait=false"]);
    assert_eq!(deleted.trim(), r#"namespace "doomed" deleted"#);
    let ns = json(&server, v, &["get", "ns", "doomed"]);
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns:#}");
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns:#}");
    let table = ok(&server, v, &["get", "ns", "doomed"]);
    assert!(table.lines().any(|l| l.starts_with("doomed") && l.contains("Terminating")), "{table}");
    // No new content in a terminating namespace.
    let cm = server.write_file("cm.yaml", CONFIGMAP);
    let err = fails(&server, v, &["create", "-n", "doomed", "-f", cm.to_str().unwrap()]);
    assert!(err.contains("Forbidden") && err.contains("being terminated"), "{err}");
    // Released, the content goes and so does the namespace.
    ok(
        &server,
        v,
        &["patch", "cm", "held", "-n", "doomed", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#],
    );
    ok(&server, v, &["wait", "--for=delete", "namespace/doomed", "--timeout=30s"]);
    // The initial namespaces may not be deleted at all.
    let err = fails(&server, v, &["delete", "namespace", "kube-system", "--wait=false"]);
    assert!(err.contains("Forbidden"), "{err}");
}

fn watch(v: &str) {
    let server = Server::start_ephemeral();
    let mk = |name: &str| {
        let f = server.write_file(&format!("{name}.yaml"), &CONFIGMAP.replace("cm1", name));
        ok(&server, v, &["create", "-f", f.to_str().unwrap()]);
    };
    mk("before");
    let mut w = server.kubectl_spawn(v, &["get", "cm", "-w", "-o", "name"]);
    // The list part of list+watch.
    w.wait_for_line(Duration::from_secs(60), |l| l == "configmap/before").unwrap();
    // Created after the list was printed: it can only arrive through the watch.
    mk("after");
    w.wait_for_line(Duration::from_secs(60), |l| l == "configmap/after").unwrap();
    ok(&server, v, &["label", "cm", "after", "x=y"]);
    w.wait_for_line(Duration::from_secs(60), |l| l == "configmap/after").unwrap();
    assert!(!w.has_exited(), "kubectl get -w ended by itself; stderr: {}", w.stderr());

    // The table form of the same watch gets one row per event, under one header.
    let mut t = server.kubectl_spawn(v, &["get", "cm", "-w"]);
    t.wait_for_line(Duration::from_secs(60), |l| l.starts_with("before ")).unwrap();
    mk("third");
    t.wait_for_line(Duration::from_secs(60), |l| l.starts_with("third ")).unwrap();
    let headers = t.seen().iter().filter(|l| l.starts_with("NAME")).count();
    assert_eq!(headers, 1, "one header expected: {:?}", t.seen());
}

fn errors(v: &str) {
    let server = Server::start_ephemeral();
    let err = fails(&server, v, &["get", "svc", "nope"]);
    assert_eq!(err.trim(), r#"Error from server (NotFound): services "nope" not found"#);

    let dup = server.write_file("dup.yaml", &CONFIGMAP.replace("cm1", "dup"));
    let dup = dup.to_str().unwrap();
    ok(&server, v, &["create", "-f", dup]);
    let err = fails(&server, v, &["create", "-f", dup]);
    assert!(err.contains("Error from server (AlreadyExists)"), "{err}");
    assert!(err.contains(r#"configmaps "dup" already exists"#), "{err}");

    let bad = server.write_file("bad.yaml", &CONFIGMAP.replace("cm1", "Bad_Name"));
    let err = fails(&server, v, &["create", "-f", bad.to_str().unwrap(), "-v=6"]);
    assert!(err.contains("422 Unprocessable Entity"), "not a 422:\n{err}");
    assert!(err.contains(r#"The ConfigMap "Bad_Name" is invalid"#), "{err}");
    assert!(err.contains(r#"metadata.name: Invalid value: "Bad_Name""#), "{err}");

    let err = fails(&server, v, &["get", "foos"]);
    assert!(err.contains(r#"the server doesn't have a resource type "foos""#), "{err}");
    let err = fails(&server, v, &["delete", "cm", "nope"]);
    assert!(err.contains(r#"Error from server (NotFound): configmaps "nope" not found"#), "{err}");
}

macro_rules! per_kubectl {
    ($($module:ident => $version:expr),* $(,)?) => {$(
        mod $module {
            #[test]
            fn version() {
                super::version($version)
            }
            #[test]
            fn api_resources() {
                super::api_resources($version)
            }
            #[test]
            fn get_namespaces() {
                super::get_namespaces($version)
            }
            #[test]
            fn create_get_modify_delete() {
                super::create_get_modify_delete($version)
            }
            #[test]
            fn create_namespace() {
                super::create_namespace($version)
            }
            #[test]
            fn delete_namespace() {
                super::delete_namespace($version)
            }
            #[test]
            fn watch() {
                super::watch($version)
            }
            #[test]
            fn errors() {
                super::errors($version)
            }
        }
    )*};
}

per_kubectl! {
    kubectl_1_27 => "1.27",
    kubectl_1_33 => "1.33",
    dispatcher => kplane_e2e::DISPATCHER,
}
