//! Tests: real kubectl bodies (`testdata/*.pb`, with the JSON kubectl 1.31 sends for the same command in `*.json`),
//! synthetic bodies built with a small schema-driven encoder, malformed input, and the schema table itself.

use base64::Engine as _;
use serde_json::{Value, json};

use super::schema::{self, KINDS, Label, MESSAGES, Message, Special, Ty};
use super::*;

const FIXTURES: &[(&str, &[u8], &[u8])] = &[
    ("configmap", include_bytes!("../testdata/configmap.pb"), include_bytes!("../testdata/configmap.json")),
    ("cronjob", include_bytes!("../testdata/cronjob.pb"), include_bytes!("../testdata/cronjob.json")),
    (
        "deployment-zero-replicas",
        include_bytes!("../testdata/deployment-zero-replicas.pb"),
        include_bytes!("../testdata/deployment-zero-replicas.json"),
    ),
    ("deployment", include_bytes!("../testdata/deployment.pb"), include_bytes!("../testdata/deployment.json")),
    ("job", include_bytes!("../testdata/job.pb"), include_bytes!("../testdata/job.json")),
    ("namespace", include_bytes!("../testdata/namespace.pb"), include_bytes!("../testdata/namespace.json")),
    (
        "poddisruptionbudget",
        include_bytes!("../testdata/poddisruptionbudget.pb"),
        include_bytes!("../testdata/poddisruptionbudget.json"),
    ),
    ("priorityclass", include_bytes!("../testdata/priorityclass.pb"), include_bytes!("../testdata/priorityclass.json")),
    ("resourcequota", include_bytes!("../testdata/resourcequota.pb"), include_bytes!("../testdata/resourcequota.json")),
    ("role", include_bytes!("../testdata/role.pb"), include_bytes!("../testdata/role.json")),
    (
        "secret-docker-registry",
        include_bytes!("../testdata/secret-docker-registry.pb"),
        include_bytes!("../testdata/secret-docker-registry.json"),
    ),
    (
        "secret-generic",
        include_bytes!("../testdata/secret-generic.pb"),
        include_bytes!("../testdata/secret-generic.json"),
    ),
    (
        "service-clusterip",
        include_bytes!("../testdata/service-clusterip.pb"),
        include_bytes!("../testdata/service-clusterip.json"),
    ),
    (
        "service-externalname",
        include_bytes!("../testdata/service-externalname.pb"),
        include_bytes!("../testdata/service-externalname.json"),
    ),
    (
        "service-loadbalancer",
        include_bytes!("../testdata/service-loadbalancer.pb"),
        include_bytes!("../testdata/service-loadbalancer.json"),
    ),
    (
        "service-nodeport",
        include_bytes!("../testdata/service-nodeport.pb"),
        include_bytes!("../testdata/service-nodeport.json"),
    ),
    (
        "serviceaccount",
        include_bytes!("../testdata/serviceaccount.pb"),
        include_bytes!("../testdata/serviceaccount.json"),
    ),
    ("tokenrequest", include_bytes!("../testdata/tokenrequest.pb"), include_bytes!("../testdata/tokenrequest.json")),
];

/// The only fields the decoder may add to upstream's JSON, and only as `0`/`false`: Go value fields with
/// `omitempty` that Go's protobuf writes and the zero-value rule keeps (see `json.rs`), by Go type.
const HARMLESS_EXTRAS: &[&str] = &[
    "generation", // ObjectMeta
    "hostNetwork",
    "hostPID",
    "hostIPC", // PodSpec
    "stdin",
    "stdinOnce",
    "tty",      // Container
    "hostPort", // ContainerPort
    "nodePort", // ServicePort
    "healthCheckNodePort",
    "publishNotReadyAddresses", // ServiceSpec
    "minReadySeconds",
    "paused",        // DeploymentSpec
    "globalDefault", // PriorityClass
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "availableReplicas",
    "unavailableReplicas",
    "readyReplicas", // DeploymentStatus, PodDisruptionBudgetStatus
    "active",
    "succeeded",
    "failed", // JobStatus
];

/// Removes what Go's JSON writes for unset fields (`null`), which the decoder leaves out.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Compares `got` with `want`; fields only in `got` must be allow-listed `0`/`false` and are returned by path.
fn compare(got: &Value, want: &Value, path: &str, extras: &mut Vec<String>) -> Result<(), String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, gv) in g {
                let at = format!("{path}.{k}");
                match w.get(k) {
                    Some(wv) => compare(gv, wv, &at, extras)?,
                    None if HARMLESS_EXTRAS.contains(&k.as_str()) && (gv == &json!(0) || gv == &json!(false)) => {
                        extras.push(format!("{at}={gv}"))
                    }
                    None => return Err(format!("{at}: unexpected {gv}")),
                }
            }
            match w.keys().find(|k| !g.contains_key(*k)) {
                Some(k) => Err(format!("{path}.{k}: missing")),
                None => Ok(()),
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            g.iter().zip(w).enumerate().try_for_each(|(i, (g, w))| compare(g, w, &format!("{path}[{i}]"), extras))
        }
        _ if got == want => Ok(()),
        _ => Err(format!("{path}: got {got}, want {want}")),
    }
}

/// Every real kubectl body decodes to the JSON kubectl 1.31 sends, up to nulls and the allow-listed extras; the
/// extras found are exactly these (so the allow-list stays short and honest).
#[test]
fn kubectl_fixtures_match_upstream_json() {
    let mut all = Vec::new();
    for (name, pb, json) in FIXTURES {
        let mut want: Value = serde_json::from_slice(json).unwrap();
        strip_nulls(&mut want);
        let got = decode_object(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut extras = Vec::new();
        compare(&got, &want, "", &mut extras).unwrap_or_else(|e| panic!("{name}: {e}\n got {got}\nwant {want}"));
        all.extend(extras.into_iter().map(|e| format!("{name}: {e}")));
    }
    // Every fixture has `metadata.generation: 0` (and its templates' metadata too: 2 in the cronjob, 1 in the
    // deployments and the job), and only these have other extras: pod templates (hostNetwork/hostPID/hostIPC, stdin/stdinOnce/tty, hostPort),
    // services (nodePort, healthCheckNodePort, publishNotReadyAddresses), deployment spec and status, job status,
    // PodDisruptionBudget status and PriorityClass.
    assert_eq!(all.len(), 81, "{}", all.join("\n"));
    assert_eq!(all.iter().filter(|e| e.ends_with(": .metadata.generation=0")).count(), FIXTURES.len());
    assert_eq!(all.iter().filter(|e| e.ends_with("metadata.generation=0")).count(), FIXTURES.len() + 5);
    for allowed in HARMLESS_EXTRAS {
        assert!(
            all.iter().any(|a| a.contains(&format!(".{allowed}="))),
            "{allowed} is never needed:\n{}",
            all.join("\n")
        );
    }
    println!("{}", all.join("\n"));
}

#[test]
fn fixtures_special_values() {
    let get = |name: &str| decode_object(FIXTURES.iter().find(|f| f.0 == name).unwrap().1).unwrap();
    assert_eq!(get("secret-generic")["data"], json!({"k": "dg=="}));
    let deployment = get("deployment-zero-replicas");
    assert_eq!(deployment["spec"]["replicas"], json!(0));
    assert_eq!(deployment["spec"]["strategy"], json!({}));
    assert!(deployment["metadata"].get("creationTimestamp").is_none());
    let lb = get("service-loadbalancer");
    assert_eq!(lb["spec"]["ports"][1]["targetPort"], json!("https"));
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], json!(8080));
    assert_eq!(get("poddisruptionbudget")["spec"]["minAvailable"], json!("50%"));
    assert_eq!(get("resourcequota")["spec"]["hard"], json!({"cpu": "1", "memory": "1Gi", "pods": "10"}));
    // a required string (no omitempty) keeps its empty value
    assert_eq!(get("tokenrequest")["status"], json!({"token": ""}));
}

/// No prefix of a real body panics; a prefix either fails or, cut between two fields of the envelope, decodes to the
/// same object or to none. Corrupting any byte never panics either.
#[test]
fn truncated_and_corrupted_fixtures() {
    for (name, pb, _) in FIXTURES {
        let full = decode_object(pb).unwrap();
        let empty = json!({"apiVersion": full["apiVersion"], "kind": full["kind"]});
        let mut ok = 0;
        for n in 0..pb.len() {
            if let Ok(v) = decode_object(&pb[..n]) {
                assert!(v == full || v == empty, "{name} cut at {n}: {v}");
                ok += 1;
            }
        }
        // cut after `typeMeta` (no object), or in the trailing empty `contentEncoding`/`contentType`
        assert!(ok <= 3, "{name}: {ok} prefixes decode");
        let mut body = pb.to_vec();
        for i in MAGIC.len()..body.len() {
            for flip in [0x80, 0x07, 0xff] {
                body[i] ^= flip;
                let _ = decode_object(&body);
                body[i] ^= flip;
            }
        }
    }
}

/// Protobuf bytes of `value` as message `m`, given with the table's JSON names (special types by their fields, inline
/// fields by prost's name), for tests.
fn encode(m: &Message, value: &Value) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn put(out: &mut Vec<u8>, tag: u32, ty: Ty, v: &Value) {
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            varint(out, u64::from(tag) << 3 | 2);
            varint(out, b.len() as u64);
            out.extend_from_slice(b);
        };
        match ty {
            Ty::Bool | Ty::Int32 | Ty::Int64 => {
                varint(out, u64::from(tag) << 3);
                varint(out, v.as_i64().map_or_else(|| u64::from(v.as_bool().unwrap()), |n| n as u64));
            }
            Ty::Double => {
                varint(out, u64::from(tag) << 3 | 1);
                out.extend_from_slice(&v.as_f64().unwrap().to_le_bytes());
            }
            Ty::String => bytes(out, v.as_str().unwrap().as_bytes()),
            Ty::Bytes => bytes(out, &base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()),
            Ty::Message(i) => bytes(out, &encode(schema::message(i), v)),
        }
    }
    let mut out = Vec::new();
    for (k, v) in value.as_object().unwrap() {
        let f = m.fields.iter().find(|f| f.json == k).unwrap_or_else(|| panic!("{} has no field {k}", m.name));
        match f.label {
            Label::Optional => put(&mut out, f.tag, f.ty, v),
            Label::Repeated => v.as_array().unwrap().iter().for_each(|item| put(&mut out, f.tag, f.ty, item)),
            Label::Map(value_ty) => {
                for (key, item) in v.as_object().unwrap() {
                    let mut entry = Vec::new();
                    put(&mut entry, 1, Ty::String, &json!(key));
                    put(&mut entry, 2, value_ty, item);
                    put(&mut out, f.tag, Ty::Bytes, &json!(base64::engine::general_purpose::STANDARD.encode(entry)));
                }
            }
        }
    }
    out
}

fn envelope(api_version: &str, kind: &str, raw: &[u8], content_type: &str, encoding: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let unknown = json!({"typeMeta": {"apiVersion": api_version, "kind": kind}, "raw": b64,
                         "contentType": content_type, "contentEncoding": encoding});
    [MAGIC.as_slice(), &encode(schema::message(schema::UNKNOWN), &unknown)].concat()
}

fn decode(api_version: &str, kind: &str, object: Value) -> Value {
    let raw = encode(schema::kind(api_version, kind).unwrap(), &object);
    decode_object(&envelope(api_version, kind, &raw, "", "")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn errors() {
    assert!(matches!(decode_object(b""), Err(ProtobufError::MissingMagic)));
    assert!(matches!(decode_object(b"{\"kind\":\"Service\"}"), Err(ProtobufError::MissingMagic)));
    assert!(matches!(decode_object(b"k8s\x00\x0a\xff"), Err(ProtobufError::InvalidEnvelope(_))));
    assert!(matches!(decode_object(b"k8s\x00\x0b"), Err(ProtobufError::InvalidEnvelope(_))));
    assert!(matches!(decode_object(b"k8s\x00"), Err(ProtobufError::MissingTypeMeta)));
    let body = FIXTURES[0].1;
    assert!(matches!(decode_object(&body[..body.len() - 5]), Err(ProtobufError::InvalidEnvelope(_))));
    // a truncated object inside an intact envelope
    let raw = encode(schema::kind("v1", "Namespace").unwrap(), &json!({"metadata": {"name": "n"}}));
    let cut = envelope("v1", "Namespace", &raw[..raw.len() - 1], "", "");
    let e = decode_object(&cut).unwrap_err();
    assert!(matches!(e, ProtobufError::InvalidObject { .. }), "{e}");
    // a wrong wire type, reported with its JSON path
    let bad = envelope("apps/v1", "Deployment", b"\x12\x02\x0a\x00", "", "");
    let e = decode_object(&bad).unwrap_err().to_string();
    assert!(e.contains("Deployment") && e.contains("spec"), "{e}");
    for (api_version, kind) in
        [("example.com/v1", "Widget"), ("v1", "NoSuchKind"), ("apps/v1", "v1.Pod"), ("apps/v99", "Deployment")]
    {
        let e = decode_object(&envelope(api_version, kind, b"", "", ""));
        assert!(matches!(e, Err(ProtobufError::UnknownKind { .. })), "{api_version} {kind}: {e:?}");
    }
    let e = decode_object(&envelope("", "Pod", b"", "", ""));
    assert!(matches!(e, Err(ProtobufError::MissingTypeMeta)));
    let e = decode_object(&envelope("v1", "Namespace", b"", "application/json", ""));
    assert!(matches!(e, Err(ProtobufError::UnsupportedContentType(_))));
    let e = decode_object(&envelope("v1", "Namespace", b"", "", "gzip"));
    assert!(matches!(e, Err(ProtobufError::UnsupportedContentEncoding(ref enc)) if enc == "gzip"), "{e:?}");
    assert!(e.unwrap_err().to_string().contains("gzip"));
    assert_eq!(
        decode_object(&envelope("v1", "Namespace", b"", CONTENT_TYPE, "")).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace"})
    );
    // invalid UTF-8, a non-finite double, an impossible IntOrString
    let e = decode_object(&envelope("v1", "ConfigMap", b"\x0a\x03\x0a\x01\xff", "", "")).unwrap_err();
    assert!(e.to_string().contains("metadata.name"), "{e}");
    let pdb = encode(
        schema::kind("policy/v1", "PodDisruptionBudget").unwrap(),
        &json!({"spec": {"minAvailable": {"type": 7}}}),
    );
    assert!(decode_object(&envelope("policy/v1", "PodDisruptionBudget", &pdb, "", "")).is_err());
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let props = schema::kind("apiextensions.k8s.io/v1", "JSONSchemaProps").unwrap();
    let mut schema_json = json!({"type": "object"});
    for _ in 0..1000 {
        schema_json = json!({"not": schema_json});
    }
    let raw = encode(props, &schema_json);
    let e = decode_object(&envelope("apiextensions.k8s.io/v1", "JSONSchemaProps", &raw, "", "")).unwrap_err();
    assert!(e.to_string().contains("nested"), "{e}");
    // RawExtensions holding envelopes holding RawExtensions...
    let mut body = envelope("v1", "ConfigMap", b"", "", "");
    for _ in 0..20 {
        let list = encode(
            schema::kind("v1", "List").unwrap(),
            &json!({"items": [{"raw": base64::engine::general_purpose::STANDARD.encode(&body)}]}),
        );
        body = envelope("v1", "List", &list, "", "");
    }
    assert!(decode_object(&body).unwrap_err().to_string().contains("nested"));
}

#[test]
fn lease_micro_time_and_pointer_zero() {
    let got = decode(
        "coordination.k8s.io/v1",
        "Lease",
        json!({"metadata": {"name": "node-a", "namespace": "kube-node-lease", "creationTimestamp": {}},
               "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40, "leaseTransitions": 0,
                        "renewTime": {"seconds": 1_700_000_000, "nanos": 123_456_789}}}),
    );
    assert_eq!(
        got,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "node-a", "namespace": "kube-node-lease"},
               "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                        "renewTime": "2023-11-14T22:13:20.123456Z", "leaseTransitions": 0}})
    );
}

#[test]
fn endpointslice_pointer_bools_and_optional_strings() {
    let got = decode(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        json!({"addressType": "IPv4",
               "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": true},
                              "nodeName": "n1"}],
               "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]}),
    );
    // `name: ""` is a set pointer in Go, but an optional empty string is indistinguishable from unset here
    assert_eq!(
        got,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": true},
                              "nodeName": "n1"}],
               "ports": [{"protocol": "TCP", "port": 8080}]})
    );
}

#[test]
fn pod_inline_structs_and_special_types() {
    let got = decode(
        "v1",
        "Pod",
        json!({
            "metadata": {"name": "p", "deletionTimestamp": {"seconds": 0, "nanos": 0},
                         "managedFields": [{"manager": "kubectl", "operation": "Update",
                                            "fieldsV1": {"raw": "eyJmOm1ldGFkYXRhIjp7fX0="}}]},
            "spec": {
                "restartPolicy": "", "terminationGracePeriodSeconds": 0,
                "volumes": [{"name": "v", "volumeSource": {"emptyDir": {}}},
                            {"name": "s", "volumeSource": {"secret": {"secretName": "x", "defaultMode": 420}}}],
                "containers": [{
                    "name": "c", "args": [""],
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {
                        "localObjectReference": {"name": "cm"}, "key": "k", "optional": false}}}],
                    "resources": {"limits": {"cpu": {"string": "100m"}, "memory": {}}},
                    "readinessProbe": {"handler": {"httpGet": {"path": "/", "port": {"type": 1, "strVal": "http"}}},
                                       "periodSeconds": 5},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}}]},
            "status": {"containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "image": "nginx",
                                              "imageID": ""}]}
        }),
    );
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "deletionTimestamp": "1970-01-01T00:00:00Z",
                            "managedFields": [{"manager": "kubectl", "operation": "Update",
                                               "fieldsV1": {"f:metadata": {}}}]},
               "spec": {"volumes": [{"name": "v", "emptyDir": {}},
                                    {"name": "s", "secret": {"secretName": "x", "defaultMode": 420}}],
                        "containers": [{"name": "c", "args": [""],
                                        "env": [{"name": "A", "valueFrom": {"configMapKeyRef":
                                                 {"name": "cm", "key": "k", "optional": false}}}],
                                        "resources": {"limits": {"cpu": "100m", "memory": "0"}},
                                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                           "periodSeconds": 5},
                                        "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}}],
                        "terminationGracePeriodSeconds": 0},
               "status": {"containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                                                 "image": "nginx", "imageID": ""}]}})
    );
}

#[test]
fn raw_extension_and_meta_kinds() {
    let got =
        decode("apps/v1", "ControllerRevision", json!({"data": {"raw": "eyJzcGVjIjp7IngiOjF9fQ=="}, "revision": 2}));
    assert_eq!(
        got,
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "data": {"spec": {"x": 1}}, "revision": 2})
    );
    // a RawExtension holding a nested protobuf object
    let cm =
        encode(schema::kind("v1", "ConfigMap").unwrap(), &json!({"data": {"a": "b"}, "binaryData": {"z": "AAE="}}));
    let b64 = base64::engine::general_purpose::STANDARD.encode(envelope("v1", "ConfigMap", &cm, "", ""));
    let got = decode("v1", "List", json!({"items": [{"raw": b64}, {}]}));
    assert_eq!(
        got["items"],
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}, "binaryData": {"z": "AAE="}}, null])
    );
    // meta/v1 kinds under any served group-version
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let got =
            decode(api_version, "DeleteOptions", json!({"gracePeriodSeconds": 0, "propagationPolicy": "Foreground"}));
        assert_eq!(
            got,
            json!({"apiVersion": api_version, "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                   "propagationPolicy": "Foreground"})
        );
    }
}

#[test]
fn json_names_and_schema_wrappers() {
    let got = decode(
        "apiextensions.k8s.io/v1",
        "JSONSchemaProps",
        json!({"type": "object", "$ref": "#/x", "x-kubernetes-preserve-unknown-fields": true, "maximum": 1.5,
               "items": {"schema": {"type": "string", "default": {"raw": "Ingi"}}},
               "additionalProperties": {"allows": false},
               "dependencies": {"a": {"property": ["b"]}},
               "enum": [{"raw": "MQ=="}]}),
    );
    assert_eq!(
        got,
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "JSONSchemaProps", "$ref": "#/x",
               "type": "object", "items": {"type": "string", "default": "x"}, "enum": [1], "maximum": 1.5,
               "additionalProperties": false, "dependencies": {"a": ["b"]},
               "x-kubernetes-preserve-unknown-fields": true})
    );
    let got = decode(
        "authentication.k8s.io/v1",
        "TokenRequest",
        json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "p", "uid": "u-1"}}}),
    );
    assert_eq!(got["spec"]["boundObjectRef"], json!({"kind": "Pod", "name": "p", "uid": "u-1"}));
    let got = decode(
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        json!({"spec": {"user": "u", "extra": {"scopes": {"items": ["a", "b"]}}}}),
    );
    assert_eq!(got["spec"], json!({"user": "u", "extra": {"scopes": ["a", "b"]}}));
    let got = decode("v1", "Service", json!({"spec": {"externalIPs": ["1.2.3.4"], "clusterIP": "None"}}));
    assert_eq!(got["spec"], json!({"externalIPs": ["1.2.3.4"], "clusterIP": "None"}));
    let got = decode(
        "apps/v1",
        "Deployment",
        json!({"spec": {"progressDeadlineSeconds": 600, "template": {"spec": {"nodeSelector": {"a": "b"}}}}}),
    );
    assert_eq!(
        got["spec"],
        json!({"progressDeadlineSeconds": 600, "template": {"spec": {"nodeSelector": {"a": "b"}}}})
    );
}

#[test]
fn time_and_duration_formats() {
    use super::json::{go_duration, rfc3339};
    assert_eq!(rfc3339(0, 0, false).unwrap(), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000, 999_999_999, false).unwrap(), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(951_782_400, 5_000, true).unwrap(), "2000-02-29T00:00:00.000005Z");
    assert_eq!(rfc3339(-1, 0, false).unwrap(), "1969-12-31T23:59:59Z");
    assert!(rfc3339(i64::MAX, 0, false).is_err());
    assert!(rfc3339(i64::MIN, 0, false).is_err());
    assert!(rfc3339(0, -1, true).is_err());
    for (nanos, want) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (1_000_000_000, "1s"),
        (61_500_000_000, "1m1.5s"),
        (3_600_000_000_000, "1h0m0s"),
        (-90_000_000_000, "-1m30s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ] {
        assert_eq!(go_duration(nanos), want);
    }
    let got = decode("autoscaling/v2", "HorizontalPodAutoscaler", json!({}));
    assert_eq!(got, json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler"}));
    let got = decode("meta.k8s.io/v1", "WatchEvent", json!({"type": "ADDED"}));
    assert_eq!(got["type"], "ADDED");
}

#[test]
fn schema_table_is_consistent() {
    assert!(MESSAGES.len() > 1000 && KINDS.len() > 1000, "{} messages, {} kinds", MESSAGES.len(), KINDS.len());
    for m in MESSAGES {
        assert!(m.fields.windows(2).all(|w| w[0].tag < w[1].tag), "{}: fields not sorted by tag", m.name);
        for f in m.fields {
            for ty in [f.ty, if let Label::Map(v) = f.label { v } else { f.ty }] {
                if let Ty::Message(i) = ty {
                    assert!(usize::from(i) < MESSAGES.len(), "{}.{}", m.name, f.json);
                }
            }
        }
    }
    assert!(KINDS.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    assert_eq!(schema::message(schema::UNKNOWN).name, "Unknown");
    let specials: Vec<_> = MESSAGES.iter().filter(|m| m.special != Special::None).map(|m| m.name).collect();
    assert!(
        specials.contains(&"Time") && specials.contains(&"IntOrString") && specials.contains(&"JSONSchemaPropsOrBool")
    );
    // JSON names that differ from prost's field names
    let field = |api_version, kind, json: &str| schema::kind(api_version, kind).unwrap().position(json).is_some();
    assert!(field("v1", "ServiceSpec", "externalIPs"));
    assert!(field("v1", "ServiceSpec", "clusterIP"));
    assert!(field("v1", "AWSElasticBlockStoreVolumeSource", "volumeID"));
    assert!(field("apiextensions.k8s.io/v1", "JSONSchemaProps", "$ref"));
    assert!(field("networking.k8s.io/v1", "IngressClassParametersReference", "apiGroup"));
    assert!(field("authentication.k8s.io/v1", "BoundObjectReference", "uid"));
    for (api_version, kind) in [
        ("v1", "Namespace"),
        ("v1", "Service"),
        ("v1", "Pod"),
        ("v1", "Endpoints"),
        ("v1", "Status"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("coordination.k8s.io/v1", "Lease"),
        ("events.k8s.io/v1", "Event"),
        ("networking.k8s.io/v1", "Ingress"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("storage.k8s.io/v1", "CSIDriver"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("admission.k8s.io/v1", "AdmissionReview"),
        ("meta.k8s.io/v1", "PartialObjectMetadataList"),
        ("metrics.k8s.io/v1beta1", "NodeMetrics"),
        ("custom.metrics.k8s.io/v1beta2", "MetricValue"),
    ] {
        assert!(schema::kind(api_version, kind).is_some(), "{api_version} {kind}");
    }
}
