//! Strategic merge patch through real kubectl (1.27 and 1.33): client-side `kubectl apply` of
//! changed manifests, `kubectl patch` (strategic by default), `kubectl set image`, and the
//! errors a bad strategic patch gets.

use kplane_e2e::Server;
use serde_json::Value;

const V1: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    tier: front
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
        env:
        - name: A
          value: \"1\"
        - name: B
          value: \"2\"
      - name: sidecar
        image: busybox
";

/// The same Deployment with one image changed, one env var changed and one removed, a label
/// removed and the replica count raised.
const V2: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
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
        image: nginx:2
        env:
        - name: A
          value: \"10\"
      - name: sidecar
        image: busybox
";

fn run(server: &Server, v: &str, args: &[&str]) -> (bool, String, String) {
    let out = server.kubectl(v, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(server: &Server, v: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = run(server, v, args);
    assert!(success, "kubectl.{v} {}: {stdout}{stderr}", args.join(" "));
    stdout
}

fn get(server: &Server, v: &str, what: &str) -> Value {
    let stdout = ok(server, v, &["get", what, "-o", "json"]);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn container<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {d:#}"))
}

fn apply_then_reapply(v: &str) {
    let server = Server::start_ephemeral();
    let v1 = server.write_file("v1.yaml", V1);
    let v2 = server.write_file("v2.yaml", V2);
    let v1 = v1.to_str().expect("utf-8 path");
    let v2 = v2.to_str().expect("utf-8 path");
    assert!(ok(&server, v, &["apply", "-f", v1]).contains("deployment.apps/web created"));
    // A label the manifest never had: apply must leave it (it is not in last-applied).
    ok(&server, v, &["label", "deployment", "web", "owner=ops"]);
    assert!(ok(&server, v, &["apply", "-f", v1]).contains("deployment.apps/web unchanged"));

    let out = ok(&server, v, &["apply", "-f", v2]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let d = get(&server, v, "deployment/web");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["labels"]["owner"], "ops", "a label outside the manifest survives: {d:#}");
    assert!(d["metadata"]["labels"].get("tier").is_none(), "a label removed from the manifest goes: {d:#}");
    let web = container(&d, "web");
    assert_eq!(web["image"], "nginx:2");
    assert_eq!(web["env"], serde_json::json!([{"name": "A", "value": "10"}]), "{d:#}");
    assert_eq!(container(&d, "sidecar")["image"], "busybox");
    assert_eq!(d["metadata"]["generation"], 2, "one spec change, one generation: {d:#}");
}

#[test]
fn kubectl_1_27_apply_updates_existing_objects() {
    apply_then_reapply("1.27");
}

#[test]
fn kubectl_1_33_apply_updates_existing_objects() {
    apply_then_reapply("1.33");
}

fn patch_and_set_image(v: &str) {
    let server = Server::start_ephemeral();
    let v1 = server.write_file("v1.yaml", V1);
    ok(&server, v, &["create", "-f", v1.to_str().expect("utf-8 path")]);

    // `kubectl patch` defaults to a strategic merge patch: the container list merges by name.
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:3"}]}}}}"#;
    assert!(ok(&server, v, &["patch", "deployment", "web", "-p", patch]).contains("patched"));
    let d = get(&server, v, "deployment/web");
    assert_eq!(container(&d, "web")["image"], "nginx:3");
    assert_eq!(container(&d, "web")["env"][1]["name"], "B", "the rest of the container is kept: {d:#}");
    assert_eq!(container(&d, "sidecar")["image"], "busybox", "other containers are kept: {d:#}");

    ok(&server, v, &["set", "image", "deployment/web", "sidecar=busybox:2"]);
    let d = get(&server, v, "deployment/web");
    assert_eq!(container(&d, "sidecar")["image"], "busybox:2");
    assert_eq!(container(&d, "web")["image"], "nginx:3");

    // A `$patch: delete` directive removes one element.
    let delete = r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#;
    ok(&server, v, &["patch", "deployment", "web", "-p", delete]);
    let d = get(&server, v, "deployment/web");
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len), Some(1), "{d:#}");

    // An element without its merge key is refused and changes nothing.
    let bad = r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#;
    let (success, _, stderr) = run(&server, v, &["patch", "deployment", "web", "-p", bad]);
    assert!(!success);
    assert!(stderr.contains("does not contain declared merge key: name"), "{stderr}");
    // (The Deployment's status may still move as its controller works: compare what a patch writes.)
    let after = get(&server, v, "deployment/web");
    assert_eq!(after["spec"], d["spec"], "nothing changed");
    assert_eq!(after["metadata"]["generation"], d["metadata"]["generation"], "nothing changed");
}

#[test]
fn kubectl_1_27_strategic_patch_and_set_image() {
    patch_and_set_image("1.27");
}

#[test]
fn kubectl_1_33_strategic_patch_and_set_image() {
    patch_and_set_image("1.33");
}
