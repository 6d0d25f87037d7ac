//! Structured merge: merge, field sets, comparison and removal over the kinds' structure.

use super::*;
use serde_json::json;

fn svc() -> &'static Node {
    schema::of_kind("Service")
}

fn f(s: &str) -> PathElement {
    PathElement::Field(s.into())
}

fn port_key(port: u16) -> PathElement {
    PathElement::Key(canonical(&json!({"port": port, "protocol": "TCP"})))
}

#[test]
fn merge_maps_keyed_lists_atomic_values_and_sets() {
    let live = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
        "spec": {"selector": {"app": "old", "tier": "t"}, "clusterIPs": ["10.0.0.1"],
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}, {"port": 81, "protocol": "TCP"}]}});
    let cfg = json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]},
        "spec": {"selector": {"app": "new"}, "ports": [{"port": 82}, {"port": 80, "targetPort": 9090}]}});
    let out = merge(&live, &cfg, svc()).expect("merges");
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
    // atomic map replaced whole; untouched atomic list kept
    assert_eq!(out["spec"]["selector"], json!({"app": "new"}));
    assert_eq!(out["spec"]["clusterIPs"], json!(["10.0.0.1"]));
    // keyed by port+protocol (protocol defaulting to TCP): 80 merged in place, 82 appended
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 9090}, {"port": 81, "protocol": "TCP"}, {"port": 82}])
    );
}

#[test]
fn null_in_a_configuration_removes_the_field_but_is_owned() {
    let live = json!({"spec": {"sessionAffinity": "ClientIP", "type": "ClusterIP"}});
    let cfg = json!({"spec": {"sessionAffinity": null}});
    let out = merge(&live, &cfg, svc()).expect("merges");
    assert_eq!(out, json!({"spec": {"type": "ClusterIP"}}));
    assert!(field_set(&cfg, svc()).expect("set").has(&[f("spec"), f("sessionAffinity")]));
}

#[test]
fn configuration_field_sets_match_upstream_encoding() {
    let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "labels": {"app": "x"}},
        "spec": {"selector": {"app": "x"}, "ports": [{"name": "a", "port": 80, "targetPort": 8080}]}});
    let set = field_set(&cfg, svc()).expect("set");
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:apiVersion": {}, "f:kind": {}, "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
               "f:spec": {"f:ports": {r#"k:{"port":80,"protocol":"TCP"}"#: {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}}},
                          "f:selector": {}}})
    );
}

#[test]
fn bad_keyed_lists_are_bad_requests() {
    let missing = json!({"spec": {"ports": [{"targetPort": 1}]}});
    let e = merge(&json!({}), &missing, svc()).expect_err("no port");
    assert_eq!(e.code, 400);
    assert!(e.message.contains(r#"omits key field "port""#), "{}", e.message);
    let dup = json!({"spec": {"ports": [{"port": 1}, {"port": 1, "protocol": "TCP"}]}});
    let e = field_set(&dup, svc()).expect_err("duplicate");
    assert!(e.message.contains(r#"duplicate entries for key [port=1,protocol="TCP"]"#), "{}", e.message);
}

#[test]
fn compare_reports_added_modified_removed() {
    let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 1}, {"port": 81, "protocol": "TCP"}]}});
    let new = json!({"metadata": {"labels": {"a": "9", "c": "3"}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 1}], "type": "NodePort"}});
    let c = compare(&old, &new, svc());
    assert_eq!(c.modified.paths(), vec![vec![f("metadata"), f("labels"), f("a")]]);
    assert!(c.added.has(&[f("metadata"), f("labels"), f("c")]));
    assert!(c.added.has(&[f("spec"), f("type")]));
    assert!(c.removed.has(&[f("metadata"), f("labels"), f("b")]));
    assert!(c.removed.has(&[f("spec"), f("ports"), port_key(81)]));
    assert!(c.removed.has(&[f("spec"), f("ports"), port_key(81), f("port")]));
    assert!(!c.removed.has(&[f("spec"), f("ports"), port_key(80)]));
    assert!(compare(&old, &old, svc()).is_same());
}

#[test]
fn remove_items_drops_fields_items_and_emptied_maps() {
    let mut obj = json!({"metadata": {"name": "x", "labels": {"a": "1"}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 1}, {"port": 81, "protocol": "TCP"}]}});
    let mut gone = Set::new();
    gone.insert(&[f("metadata"), f("labels"), f("a")]);
    gone.insert(&[f("spec"), f("ports"), port_key(81)]);
    gone.insert(&[f("spec"), f("ports"), port_key(80), f("targetPort")]);
    remove_items(&mut obj, &gone, svc());
    assert_eq!(obj, json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}));
}

#[test]
fn apply_bodies_may_be_yaml_and_must_be_objects() {
    assert_eq!(parse_config(b"apiVersion: v1\nkind: ConfigMap\n").expect("yaml")["kind"], "ConfigMap");
    assert_eq!(parse_config(br#"{"kind":"ConfigMap"}"#).expect("json")["kind"], "ConfigMap");
    let e = parse_config(b"[1, 2]").expect_err("a list");
    assert_eq!(e.code, 400);
    assert!(e.message.starts_with("error decoding YAML: "), "{}", e.message);
    assert_eq!(parse_config(b"a: [").expect_err("broken").code, 400);
}
