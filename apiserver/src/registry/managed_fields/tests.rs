//! managedFields bookkeeping: updates, applies, conflicts, force, removal of dropped fields.

use super::*;

fn cm_scope() -> Scope {
    Scope {
        root: apply::schema::of_kind("ConfigMap"),
        api_version: "v1".into(),
        kind: "ConfigMap",
        subresource: "",
        has_status: false,
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": data})
}

fn owners(obj: &Value) -> Vec<(String, String, Value)> {
    decode(obj)
        .expect("valid managedFields")
        .into_iter()
        .map(|e| (e.manager.clone(), e.operation.to_string(), e.set.to_fields_v1()))
        .collect()
}

fn data_fields(keys: &[&str]) -> Value {
    let m: Map<String, Value> = keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
    json!({"f:data": m})
}

#[test]
fn updates_record_what_they_changed_and_take_it_from_others() {
    let s = cm_scope();
    let mut created = cm(json!({"a": "1", "b": "2"}));
    track_update(&s, None, &mut created, "creator");
    assert_eq!(
        owners(&created),
        vec![("creator".into(), "Update".into(), json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}}))]
    );
    let mut edited = created.clone();
    edited["data"]["b"] = json!("3");
    track_update(&s, Some(&created), &mut edited, "editor");
    let o = owners(&edited);
    assert_eq!(o[0].2, json!({"f:data": {".": {}, "f:a": {}}}));
    assert_eq!(o[1], ("editor".into(), "Update".into(), data_fields(&["b"])));
    // A no-op update records nothing and changes no time.
    let mut same = edited.clone();
    track_update(&s, Some(&edited), &mut same, "third");
    assert_eq!(same, edited);
}

#[test]
fn apply_creates_shares_conflicts_and_forces() {
    let s = cm_scope();
    let applied = apply(&s, None, &cm(json!({"a": "1"})), "alice", false).expect("create");
    assert_eq!(owners(&applied), vec![("alice".into(), "Apply".into(), data_fields(&["a"]))]);
    // Same value: shared ownership, no conflict.
    let shared = apply(&s, Some(&applied), &cm(json!({"a": "1"})), "bob", false).expect("same value");
    assert_eq!(owners(&shared).len(), 2);
    // Different value: a 409 naming the other managers, unless forced.
    let e = apply(&s, Some(&shared), &cm(json!({"a": "2"})), "carol", false).expect_err("conflict");
    assert_eq!((e.code, e.reason), (409, Reason::Conflict));
    assert_eq!(
        e.message,
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.a\nconflicts with \"bob\":\n- .data.a"
    );
    assert_eq!(e.causes[0].field, ".data.a");
    assert_eq!(e.causes[0].kind.cause_reason(), "FieldManagerConflict");
    let forced = apply(&s, Some(&shared), &cm(json!({"a": "2"})), "carol", true).expect("forced");
    assert_eq!(forced["data"]["a"], "2");
    assert_eq!(owners(&forced), vec![("carol".into(), "Apply".into(), data_fields(&["a"]))]);
}

#[test]
fn one_conflict_names_an_updater_with_its_version() {
    let s = cm_scope();
    let mut live = cm(json!({"a": "1"}));
    track_update(&s, None, &mut live, "kubectl-edit");
    let e = apply(&s, Some(&live), &cm(json!({"a": "2"})), "mgr", false).expect_err("conflict");
    assert_eq!(e.message, "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.a");
    assert_eq!(e.causes[0].body(), "conflict with \"kubectl-edit\" using v1");
}

#[test]
fn fields_dropped_from_a_configuration_go_unless_someone_else_owns_them() {
    let s = cm_scope();
    let first = apply(&s, None, &cm(json!({"a": "1", "b": "2", "c": "3"})), "alice", false).expect("create");
    let shared = apply(&s, Some(&first), &cm(json!({"c": "3"})), "bob", false).expect("share c");
    let second = apply(&s, Some(&shared), &cm(json!({"a": "1"})), "alice", false).expect("drop b, c");
    assert_eq!(second["data"], json!({"a": "1", "c": "3"}), "b is gone, c still bob's");
    assert_eq!(owners(&second)[0], ("alice".into(), "Apply".into(), data_fields(&["a"])));
    // The same configuration again changes nothing.
    let again = apply(&s, Some(&second), &cm(json!({"a": "1"})), "alice", false).expect("idempotent");
    assert_eq!(again, second);
}

#[test]
fn an_untracked_object_belongs_to_before_first_apply() {
    let s = cm_scope();
    let live = cm(json!({"a": "1"}));
    let e = apply(&s, Some(&live), &cm(json!({"a": "2"})), "mgr", false).expect_err("conflict");
    assert!(e.message.contains("\"before-first-apply\" using v1: .data.a"), "{}", e.message);
}

#[test]
fn bad_configurations() {
    let s = cm_scope();
    let mut wrong = cm(json!({}));
    wrong["kind"] = json!("Secret");
    assert_eq!(apply(&s, None, &wrong, "m", false).expect_err("kind").message, "invalid object type: /v1, Kind=Secret");
    let mut managed = cm(json!({}));
    managed["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(&s, None, &managed, "m", false).expect_err("managedFields").message,
        "metadata.managedFields must be nil"
    );
}

#[test]
fn status_writes_own_only_status() {
    let svc = |status: Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "LoadBalancer"}, "status": status})
    };
    let scope = |kind: &'static str| Scope {
        root: apply::schema::of_kind(kind),
        api_version: "v1".into(),
        kind: "Service",
        subresource: "",
        has_status: true,
    };
    let main = scope("Service");
    let status = Scope { subresource: "status", ..scope("Service") };
    let live = apply(&main, None, &svc(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})), "m", false)
        .expect("create");
    assert_eq!(owners(&live)[0].2, json!({"f:spec": {"f:type": {}}}), "the object's apply owns no status");
    let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}});
    let out = apply(&status, Some(&live), &cfg, "lb", false).expect("status apply");
    let entries = decode(&out).expect("decodes");
    let lb = entries.iter().find(|e| e.manager == "lb").expect("lb entry");
    assert_eq!(
        (lb.subresource.as_str(), lb.set.to_fields_v1()),
        ("status", json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}}))
    );
}

#[test]
fn user_agent_prefix() {
    assert_eq!(manager_from_user_agent("kubectl/v1.33.0 (linux/amd64) kubernetes/abc"), "kubectl");
    assert_eq!(manager_from_user_agent(""), "");
    assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
}
