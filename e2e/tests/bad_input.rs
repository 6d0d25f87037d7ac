//! Raw HTTPS requests a well-behaved client would never send. Each gets upstream's status code
//! and a `Status` body; afterwards the server still serves and nothing stored changed.

use kplane_e2e::Server;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

struct Raw {
    server: Server,
    http: reqwest::Client,
    token: String,
}

impl Raw {
    fn start() -> Self {
        let server = Server::start_ephemeral();
        let http = server.https_client().build().expect("http client");
        let token = server.token();
        Raw { server, http, token }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.server.url())).bearer_auth(&self.token)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request failed at the transport level");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Everything stored that these tests could touch: (kind, namespace/name) → resourceVersion.
    async fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for path in ["/api/v1/configmaps", "/api/v1/namespaces", "/api/v1/services", "/api/v1/secrets"] {
            let (status, list) = self.send(self.request(Method::GET, path)).await;
            assert_eq!(status, StatusCode::OK, "{path}: {list}");
            for item in list["items"].as_array().unwrap() {
                let m = &item["metadata"];
                let key = format!("{path} {}/{}", m["namespace"].as_str().unwrap_or(""), m["name"].as_str().unwrap());
                out.insert(key, m["resourceVersion"].as_str().unwrap().to_string());
            }
        }
        out
    }

    /// Sends `req`, asserts the status code and a `Status` body with `reason`; then checks the
    /// server is healthy and nothing stored changed.
    async fn expect(&self, what: &str, req: reqwest::RequestBuilder, code: u16, reason: &str) -> Value {
        let before = self.snapshot().await;
        let (status, body) = self.send(req).await;
        assert_eq!(status.as_u16(), code, "{what}: status; body {body:#}");
        assert_eq!(body["kind"], "Status", "{what}: body is not a Status: {body:#}");
        assert_eq!(body["apiVersion"], "v1", "{what}: {body:#}");
        assert_eq!(body["status"], "Failure", "{what}: {body:#}");
        assert_eq!(body["code"], code, "{what}: {body:#}");
        assert_eq!(body["reason"], reason, "{what}: {body:#}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message: {body:#}");

        let (status, _) = self.send(self.request(Method::GET, "/readyz")).await;
        assert_eq!(status, StatusCode::OK, "{what}: the server stopped serving");
        assert_eq!(self.snapshot().await, before, "{what}: stored state changed");
        body
    }
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[tokio::test]
async fn malformed_and_mismatched_bodies() {
    let raw = Raw::start();
    // A valid create first, so there is something that must not change.
    let (status, _) = raw.send(raw.request(Method::POST, CMS).json(&cm("keep"))).await;
    assert_eq!(status, StatusCode::CREATED);

    let malformed = raw.request(Method::POST, CMS).header("content-type", "application/json").body(r#"{"metadata": {"#);
    raw.expect("malformed JSON", malformed, 400, "BadRequest").await;

    let not_object = raw.request(Method::POST, CMS).header("content-type", "application/json").body("[1,2]");
    raw.expect("a JSON array", not_object, 400, "BadRequest").await;

    let mut wrong_kind = cm("wrong-kind");
    wrong_kind["kind"] = "Secret".into();
    raw.expect("kind Secret to configmaps", raw.request(Method::POST, CMS).json(&wrong_kind), 400, "BadRequest").await;

    let mut wrong_version = cm("wrong-version");
    wrong_version["apiVersion"] = "apps/v1".into();
    let body = raw
        .expect(
            "apiVersion apps/v1 to configmaps",
            raw.request(Method::POST, CMS).json(&wrong_version),
            400,
            "BadRequest",
        )
        .await;
    assert!(body["message"].as_str().unwrap().contains("apps/v1"), "{body:#}");

    let mut other_ns = cm("other-ns");
    other_ns["metadata"]["namespace"] = "kube-system".into();
    let body =
        raw.expect("namespace in body ≠ path", raw.request(Method::POST, CMS).json(&other_ns), 400, "BadRequest").await;
    assert!(body["message"].as_str().unwrap().contains("does not match the namespace"), "{body:#}");

    // PUT with a body naming another object.
    let put = raw.request(Method::PUT, &format!("{CMS}/keep")).json(&cm("not-keep"));
    raw.expect("name in body ≠ path", put, 400, "BadRequest").await;

    let body =
        raw.expect("non-DNS name", raw.request(Method::POST, CMS).json(&cm("Not_A_DNS_Name")), 422, "Invalid").await;
    let causes = body["details"]["causes"].as_array().unwrap_or_else(|| panic!("no causes: {body:#}"));
    assert!(causes.iter().any(|c| c["field"] == "metadata.name" && c["reason"] == "FieldValueInvalid"), "{body:#}");
    assert_eq!(body["details"]["name"], "Not_A_DNS_Name", "{body:#}");
    assert_eq!(body["details"]["kind"], "ConfigMap", "{body:#}");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let raw = Raw::start();
    let big = "x".repeat(3 * 1024 * 1024 + 1024);
    let mut obj = cm("big");
    obj["data"]["k"] = big.into();
    let req = raw.request(Method::POST, CMS).json(&obj);
    raw.expect("a body over 3 MiB", req, 413, "RequestEntityTooLarge").await;
    // Just under the limit is fine (and is the one write here).
    let mut ok = cm("almost-big");
    ok["data"]["k"] = "y".repeat(1024 * 1024).into();
    let (status, body) = raw.send(raw.request(Method::POST, CMS).json(&ok)).await;
    assert_eq!(status, StatusCode::CREATED, "{body:#}");
}

#[tokio::test]
async fn bad_paths_methods_and_media_types() {
    let raw = Raw::start();
    raw.expect("unknown resource", raw.request(Method::GET, "/api/v1/namespaces/default/foos"), 404, "NotFound").await;
    raw.expect("unknown group", raw.request(Method::GET, "/apis/nope.example.com/v1/things"), 404, "NotFound").await;
    raw.expect("unknown version", raw.request(Method::GET, "/apis/apps/v9/deployments"), 404, "NotFound").await;
    let body = raw.expect("missing object", raw.request(Method::GET, &format!("{CMS}/nope")), 404, "NotFound").await;
    assert_eq!(body["message"], r#"configmaps "nope" not found"#, "{body:#}");

    let text = raw.request(Method::POST, CMS).header("content-type", "text/plain").body("hello");
    raw.expect("text/plain body", text, 415, "UnsupportedMediaType").await;
    let patch = raw.request(Method::PATCH, &format!("{CMS}/nope")).header("content-type", "text/plain").body("{}");
    raw.expect("text/plain patch", patch, 415, "UnsupportedMediaType").await;

    let put = raw.request(Method::PUT, CMS).json(&cm("x"));
    raw.expect("PUT on a collection", put, 405, "MethodNotAllowed").await;
    let patch = raw.request(Method::PATCH, CMS).header("content-type", "application/merge-patch+json").body("{}");
    raw.expect("PATCH on a collection", patch, 405, "MethodNotAllowed").await;
    let post = raw.request(Method::POST, &format!("{CMS}/some-name")).json(&cm("some-name"));
    raw.expect("POST on an object", post, 405, "MethodNotAllowed").await;
}

#[tokio::test]
async fn bad_query_parameters() {
    let raw = Raw::start();
    raw.expect(
        "invalid labelSelector",
        raw.request(Method::GET, &format!("{CMS}?labelSelector=a%20in%20(")),
        400,
        "BadRequest",
    )
    .await;
    raw.expect(
        "invalid labelSelector on watch",
        raw.request(Method::GET, &format!("{CMS}?watch=true&labelSelector=%3D%3D")),
        400,
        "BadRequest",
    )
    .await;
    raw.expect(
        "unsupported fieldSelector",
        raw.request(Method::GET, &format!("{CMS}?fieldSelector=spec.nope%3Dx")),
        400,
        "BadRequest",
    )
    .await;
    // Upstream's storage answers a resourceVersion that is not a number with 400
    // ("invalid resource version: ..."), on list and watch alike.
    raw.expect(
        "non-numeric resourceVersion (list)",
        raw.request(Method::GET, &format!("{CMS}?resourceVersion=abc")),
        400,
        "BadRequest",
    )
    .await;
    raw.expect(
        "non-numeric resourceVersion (watch)",
        raw.request(Method::GET, &format!("{CMS}?watch=true&resourceVersion=abc")),
        400,
        "BadRequest",
    )
    .await;
    raw.expect("non-numeric limit", raw.request(Method::GET, &format!("{CMS}?limit=many")), 400, "BadRequest").await;
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let raw = Raw::start();
    for (what, auth) in
        [("no token", None), ("wrong token", Some("Bearer nope")), ("basic auth", Some("Basic Zm9vOmJhcg=="))]
    {
        let mut req = raw.http.get(format!("{}{CMS}", raw.server.url()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        raw.expect(what, req, 401, "Unauthorized").await;
    }
    let post = raw.http.post(format!("{}{CMS}", raw.server.url())).json(&cm("sneaky"));
    raw.expect("unauthenticated create", post, 401, "Unauthorized").await;
    // The public endpoints stay public.
    let (status, version) = raw.send(raw.http.get(format!("{}/version", raw.server.url()))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["major"], "1");
}
