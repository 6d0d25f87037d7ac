//! Server-side apply against the real binary: `kubectl apply --server-side` (1.27 and 1.33:
//! create, idempotent re-apply, removal of dropped fields, conflicts and `--force-conflicts`,
//! `diff --server-side`, `--dry-run=server`, taking over from client-side apply), kube-rs
//! `Patch::Apply` (ConfigMap, Service, Deployment, status), and the errors of bad applies.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kplane_e2e::Server;
use kube::api::{Api, Patch, PatchParams};
use reqwest::Method;
use serde_json::{Value, json};

const SVC_V1: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app: web
    tier: front
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: metrics
    port: 9090
";

/// The same Service without the `tier` label and the `metrics` port, and another target port.
const SVC_V2: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8081
";

fn get(server: &Server, v: &str, what: &str) -> Value {
    let out = server.kubectl_ok(v, &["get", what, "-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"].as_array()?.iter().find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn ports(obj: &Value) -> Vec<(i64, i64)> {
    obj["spec"]["ports"]
        .as_array()
        .map(|ps| ps.iter().map(|p| (p["port"].as_i64().unwrap(), p["targetPort"].as_i64().unwrap_or(-1))).collect())
        .unwrap_or_default()
}

fn kubectl_server_side(v: &str) {
    let server = Server::start_ephemeral();
    let v1 = server.write_file("v1.yaml", SVC_V1);
    let v2 = server.write_file("v2.yaml", SVC_V2);
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());

    let out = server.kubectl_ok(v, &["apply", "--server-side", "-f", v1]);
    assert_eq!(out.trim(), "service/web serverside-applied");
    let first = get(&server, v, "svc/web");
    let mine = entry(&first, "kubectl", "Apply").unwrap_or_else(|| panic!("no kubectl Apply entry: {first:#}"));
    assert_eq!(mine["fieldsType"], "FieldsV1");
    assert_eq!(
        mine["fieldsV1"]["f:spec"]["f:ports"][r#"k:{"port":80,"protocol":"TCP"}"#],
        json!({".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}})
    );
    assert!(first["spec"]["clusterIP"].is_string(), "defaults and allocation still happen");
    // `get -o yaml` hides managedFields (kubectl drops them), `--show-managed-fields` shows them.
    assert!(!server.kubectl_ok(v, &["get", "svc/web", "-o", "yaml"]).contains("managedFields"));
    assert!(server.kubectl_ok(v, &["get", "svc/web", "-o", "yaml", "--show-managed-fields"]).contains("managedFields"));

    // The same file again changes nothing, not even the resourceVersion.
    server.kubectl_ok(v, &["apply", "--server-side", "-f", v1]);
    let again = get(&server, v, "svc/web");
    assert_eq!(again["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);

    // diff and a server dry run show the change and store nothing.
    let diff = server.kubectl(v, &["diff", "--server-side", "-f", v2]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "diff finds differences: {text}");
    assert!(text.contains("-    targetPort: 8080") && text.contains("+    targetPort: 8081"), "{text}");
    server.kubectl_ok(v, &["apply", "--server-side", "--dry-run=server", "-f", v2]);
    assert_eq!(get(&server, v, "svc/web")["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);

    // Dropping a label and a port from the file removes them.
    server.kubectl_ok(v, &["apply", "--server-side", "-f", v2]);
    let second = get(&server, v, "svc/web");
    assert_eq!(second["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(ports(&second), vec![(80, 8081)]);

    // Someone else changes a field the file sets: the next apply conflicts, as kubectl shows it.
    server.kubectl_ok(v, &["label", "svc/web", "app=other", "--overwrite"]);
    let err = server.kubectl_fails(v, &["apply", "--server-side", "-f", v2]);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-label" using v1: .metadata.labels.app"#),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "kubectl explains the conflict: {err}");
    assert_eq!(get(&server, v, "svc/web")["metadata"]["labels"]["app"], "other");
    server.kubectl_ok(v, &["apply", "--server-side", "--force-conflicts", "-f", v2]);
    let forced = get(&server, v, "svc/web");
    assert_eq!(forced["metadata"]["labels"]["app"], "web");
    let label = entry(&forced, "kubectl-label", "Update");
    assert!(label.is_none_or(|e| e["fieldsV1"]["f:metadata"]["f:labels"].get("f:app").is_none()), "{forced:#}");
}

#[test]
fn kubectl_1_27_server_side_apply() {
    kubectl_server_side("1.27");
}

#[test]
fn kubectl_1_33_server_side_apply() {
    kubectl_server_side("1.33");
}

const DEPLOY: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1
";

/// Client-side apply first, then server-side with a changed image (kubectl-wire.md §4.8); then
/// `kubectl scale` owns the replicas and a server-side apply of the old count conflicts.
fn migrate_then_scale(v: &str) {
    let server = Server::start_ephemeral();
    let file = server.write_file("d.yaml", DEPLOY);
    let file = file.to_str().unwrap();
    server.kubectl_ok(v, &["apply", "-f", file]);
    let csa = get(&server, v, "deploy/web");
    assert!(entry(&csa, "kubectl-client-side-apply", "Update").is_some(), "{csa:#}");

    let changed = server.write_file("d2.yaml", &DEPLOY.replace("nginx:1", "nginx:2"));
    let out = server.kubectl_ok(v, &["apply", "--server-side", "-f", changed.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let ssa = get(&server, v, "deploy/web");
    assert_eq!(ssa["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");
    assert!(entry(&ssa, "kubectl", "Apply").is_some(), "{ssa:#}");
    let annotation = ssa["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str();
    assert!(annotation.is_some_and(|a| a.contains("nginx:2")), "the annotation follows: {ssa:#}");

    server.kubectl_ok(v, &["scale", "deploy/web", "--replicas=3"]);
    let err = server.kubectl_fails(v, &["apply", "--server-side", "-f", changed.to_str().unwrap()]);
    assert!(err.contains(r#"with subresource "scale" using apps/v1: .spec.replicas"#), "{err}");
    server.kubectl_ok(v, &["apply", "--server-side", "--force-conflicts", "-f", changed.to_str().unwrap()]);
    assert_eq!(get(&server, v, "deploy/web")["spec"]["replicas"], 1);
}

#[test]
fn kubectl_1_27_migration_and_scale_conflict() {
    migrate_then_scale("1.27");
}

#[test]
fn kubectl_1_33_migration_and_scale_conflict() {
    migrate_then_scale("1.33");
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_rs_patch_apply() {
    let server = Server::start_ephemeral();
    let client = server.client().await;
    let ctl = PatchParams::apply("ctl").force();

    // ConfigMap: create on apply, then a second manager, a conflict, force, and removal.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
    let created = cms.patch("c", &ctl, &Patch::Apply(cm(json!({"a": "1", "b": "2"})))).await.expect("create");
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    let mf = created.metadata.managed_fields.clone().expect("managedFields");
    assert_eq!((mf[0].manager.as_deref(), mf[0].operation.as_deref()), (Some("ctl"), Some("Apply")));
    let other = PatchParams::apply("other");
    let err = cms.patch("c", &other, &Patch::Apply(cm(json!({"a": "9"})))).await.expect_err("conflict");
    let status = api_status(err);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(status.message, r#"Apply failed with 1 conflict: conflict with "ctl": .data.a"#);
    let causes = status.details.expect("details").causes;
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".data.a");
    cms.patch("c", &other.clone().force(), &Patch::Apply(cm(json!({"a": "9"})))).await.expect("forced");
    let pruned = cms.patch("c", &ctl, &Patch::Apply(cm(json!({"b": "2"})))).await.expect("apply again");
    assert_eq!(pruned.data.unwrap(), [("a".to_string(), "9".to_string()), ("b".into(), "2".into())].into());
    let pruned = cms.patch("c", &ctl, &Patch::Apply(cm(json!({})))).await.expect("drop b");
    assert_eq!(pruned.data.unwrap(), [("a".to_string(), "9".to_string())].into(), "b was ctl's alone");

    // Service: ports merge by port and protocol; status through /status.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "s"}, "ports": [{"name": "a", "port": 80}]}});
    svcs.patch("s", &ctl, &Patch::Apply(&svc)).await.expect("service");
    let more = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"name": "b", "port": 81}]}});
    let both = svcs.patch("s", &PatchParams::apply("ports"), &Patch::Apply(&more)).await.expect("another port");
    assert_eq!(both.spec.unwrap().ports.unwrap().len(), 2);
    let status = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}});
    let lb = svcs.patch_status("s", &PatchParams::apply("lb").force(), &Patch::Apply(&status)).await.expect("status");
    assert_eq!(lb.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0].ip.as_deref(), Some("192.0.2.7"));
    let entry = lb.metadata.managed_fields.unwrap().into_iter().find(|e| e.manager.as_deref() == Some("lb"));
    assert_eq!(entry.and_then(|e| e.subresource).as_deref(), Some("status"));

    // Deployment: containers merge by name.
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let d = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    };
    deploys.patch("d", &ctl, &Patch::Apply(d(json!([{"name": "a", "image": "a:1"}])))).await.expect("deployment");
    let side = PatchParams::apply("sidecar");
    let two =
        deploys.patch("d", &side, &Patch::Apply(d(json!([{"name": "b", "image": "b:1"}])))).await.expect("sidecar");
    let names: Vec<String> = two.spec.unwrap().template.spec.unwrap().containers.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a", "b"]);
}

/// A raw HTTPS client for requests kube-rs would refuse to send.
async fn raw(server: &Server, method: Method, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let http = server.https_client().build().expect("http client");
    let resp = http
        .request(method, format!("{}{path}", server.url()))
        .bearer_auth(server.token())
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("transport");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn bad_applies() {
    let server = Server::start_ephemeral();
    const APPLY: &str = "application/apply-patch+yaml";
    let path = "/api/v1/namespaces/default/configmaps/c";
    let good = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("no fieldManager", "", good, 422, "fieldManager: Required value: is required for apply patch"),
        ("a list", "?fieldManager=m", "[1]", 400, "error decoding YAML"),
        (
            "wrong kind",
            "?fieldManager=m",
            r#"{"apiVersion":"v1","kind":"Secret"}"#,
            400,
            "invalid object type: /v1, Kind=Secret",
        ),
        (
            "managedFields",
            "?fieldManager=m",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","managedFields":[]}}"#,
            400,
            "metadata.managedFields must be nil",
        ),
        (
            "other name",
            "?fieldManager=m",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"}}"#,
            400,
            "does not match the name on the URL",
        ),
        ("missing namespace", "?fieldManager=m", good, 404, "namespaces \"nowhere\" not found"),
    ];
    for (what, query, body, code, message) in cases {
        let p = if *what == "missing namespace" { path.replace("default", "nowhere") } else { path.to_string() };
        let (got, status) = raw(&server, Method::PATCH, &format!("{p}{query}"), APPLY, body).await;
        assert_eq!(got, *code, "{what}: {status}");
        assert!(status["message"].as_str().is_some_and(|m| m.contains(message)), "{what}: {status}");
    }
    // force belongs to apply only.
    let (code, status) =
        raw(&server, Method::PATCH, &format!("{path}?force=true"), "application/merge-patch+json", "{}").await;
    assert_eq!(code, 422, "{status}");
    // Apply on a missing object's status does not create it.
    let (code, _) = raw(
        &server,
        Method::PATCH,
        "/api/v1/namespaces/default/services/none/status?fieldManager=m",
        APPLY,
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"none"}}"#,
    )
    .await;
    assert_eq!(code, 404);
    // A dry run creates nothing; a real apply answers 201, then 200.
    let (code, _) = raw(&server, Method::PATCH, &format!("{path}?fieldManager=m&dryRun=All"), APPLY, good).await;
    assert_eq!(code, 201);
    let (code, _) = raw(&server, Method::GET, path, "application/json", "").await;
    assert_eq!(code, 404, "the dry run stored nothing");
    let (code, _) = raw(
        &server,
        Method::PATCH,
        &format!("{path}?fieldManager=m"),
        APPLY,
        "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n",
    )
    .await;
    assert_eq!(code, 201);
    let (code, cm) = raw(&server, Method::PATCH, &format!("{path}?fieldManager=m"), APPLY, good).await;
    assert_eq!(code, 200);
    assert!(cm.get("data").is_none(), "the data m applied before is gone: {cm}");
}
