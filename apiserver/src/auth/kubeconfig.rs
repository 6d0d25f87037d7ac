//! Writing the kubeconfig that points kubectl at this API server: a file kplane owns is rewritten, anyone
//! else's kubeconfig gets only kplane's cluster/user/context entries merged in, always atomically and 0600.

use super::{AuthError, ensure_private_dir, read_optional, write_atomic};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// First line of every kubeconfig kplane owns. A file that does not start with it is someone else's and is only
/// ever merged into. (`kubectl config set-*` rewrites files without comments, so a kplane file edited by kubectl
/// becomes a foreign one and its edits are kept from then on.)
pub const OWNER_MARKER: &str = "# written by kplane";

const OWNER_HEADER: &str = "# written by kplane: rewritten on every start. \
Delete this line to keep your own edits; kplane will then only update its own entries.\n";

/// What [`write_kubeconfig`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeconfigOutcome {
    /// The file did not exist, was empty, or was kplane's own: it now holds exactly kplane's config.
    Written,
    /// The file belongs to someone else: kplane's entries were inserted or replaced, everything else kept.
    Merged,
}

/// Writes a kubeconfig at `path` whose cluster, user and context are all named `name`: cluster `server` =
/// `server_url` with `certificate-authority-data` = base64 of `ca_pem`, user `token` = `token`.
///
/// A missing, empty or kplane-owned file (first line [`OWNER_MARKER`]) is rewritten whole. Any other file is
/// parsed as YAML and only the `clusters`/`users`/`contexts` entries named `name` are replaced or appended;
/// `current-context` is set only if it was unset. A foreign file that cannot be parsed, or is not a kubeconfig,
/// is an error and is not touched. Comments in a foreign file are not preserved.
///
/// The parent directory is created (0700) if needed; the file is replaced atomically and ends up 0600. A symlink
/// at `path` is followed, so the file it points to is updated.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
) -> Result<KubeconfigOutcome, AuthError> {
    let target = resolve_symlink(path)?;
    let invalid = |reason: String| AuthError::Kubeconfig { path: target.clone(), reason };
    if name.is_empty() {
        return Err(invalid("the cluster/user/context name must not be empty".into()));
    }
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let cluster = json!({ "certificate-authority-data": ca_data, "server": server_url });
    let user = json!({ "token": token });
    let context = json!({ "cluster": name, "user": name });

    let existing = match read_optional(&target)? {
        None => None,
        Some(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
            if text.starts_with(OWNER_MARKER) { None } else { Some(text) }
        }
    };
    let foreign = match existing {
        Some(text) => match parse_yaml(&text).map_err(invalid)? {
            Value::Null => None,
            doc => Some(doc),
        },
        None => None,
    };

    let (doc, outcome) = match foreign {
        Some(mut doc) => {
            merge(&mut doc, name, cluster, user, context).map_err(invalid)?;
            (doc, KubeconfigOutcome::Merged)
        }
        None => {
            let doc = json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{ "name": name, "cluster": cluster }],
                "users": [{ "name": name, "user": user }],
                "contexts": [{ "name": name, "context": context }],
                "current-context": name,
                "preferences": {},
            });
            (doc, KubeconfigOutcome::Written)
        }
    };

    let yaml = to_yaml(&doc).map_err(invalid)?;
    let contents = match outcome {
        KubeconfigOutcome::Written => format!("{OWNER_HEADER}{yaml}"),
        KubeconfigOutcome::Merged => yaml,
    };
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_private_dir(parent)?;
    }
    write_atomic(&target, contents.as_bytes(), 0o600)?;
    tracing::info!(path = %target.display(), ?outcome, "wrote kubeconfig");
    Ok(outcome)
}

/// Where kplane writes its kubeconfig by default: the first entry of `$KUBECONFIG` when that is set and not empty,
/// else `$HOME/.kube/kplane.yaml`. `None` when neither variable helps.
pub fn default_kubeconfig_path() -> Option<PathBuf> {
    kubeconfig_path_from(std::env::var_os("KUBECONFIG"), std::env::var_os("HOME"))
}

fn kubeconfig_path_from(kubeconfig: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(list) = kubeconfig.filter(|v| !v.is_empty())
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Some(first);
    }
    let home = home.filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".kube").join("kplane.yaml"))
}

/// Follows a symlink at `path` so that the atomic rename replaces the file it points to, not the link.
fn resolve_symlink(path: &Path) -> Result<PathBuf, AuthError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => Ok(target),
            // A dangling link: write where it points.
            Err(_) => {
                let link = std::fs::read_link(path).map_err(|e| AuthError::io("reading link", path, e))?;
                Ok(match path.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                })
            }
        },
        _ => Ok(path.to_path_buf()),
    }
}

/// Parses YAML the way kubectl (YAML 1.1 via sigs.k8s.io/yaml) reads it: `yes`/`on` are booleans, `0777` is
/// octal.
fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| format!("not valid YAML: {e}"))
}

/// Serialises to YAML and checks that it reads back to the same value, so a serializer quirk can never leave a
/// kubeconfig that means something else.
fn to_yaml(doc: &Value) -> Result<String, String> {
    let mut options = serde_saphyr::SerializerOptions::default();
    // Plain or quoted scalars only: long tokens and certificate data stay on one line, as kubectl writes them.
    options.prefer_block_scalars = false;
    let yaml =
        serde_saphyr::to_string_with_options(doc, options).map_err(|e| format!("cannot serialise as YAML: {e}"))?;
    match parse_yaml(&yaml) {
        Ok(back) if back == *doc => Ok(yaml),
        Ok(_) => Err("the YAML serialisation does not read back identically; not writing it".into()),
        Err(e) => Err(format!("the YAML serialisation does not read back: {e}")),
    }
}

/// Inserts or replaces kplane's entries in a foreign kubeconfig.
fn merge(doc: &mut Value, name: &str, cluster: Value, user: Value, context: Value) -> Result<(), String> {
    let Value::Object(obj) = doc else {
        return Err("top level is not a mapping, so this is not a kubeconfig".into());
    };
    match obj.get("kind") {
        None | Some(Value::Null) => {
            obj.insert("kind".into(), "Config".into());
        }
        Some(Value::String(kind)) if kind == "Config" => {}
        Some(other) => return Err(format!("kind is {other}, not Config")),
    }
    if obj.get("apiVersion").is_none_or(Value::is_null) {
        obj.insert("apiVersion".into(), "v1".into());
    }
    upsert(obj, "clusters", "cluster", name, cluster)?;
    upsert(obj, "users", "user", name, user)?;
    upsert(obj, "contexts", "context", name, context)?;
    let current_is_set = matches!(obj.get("current-context"), Some(Value::String(s)) if !s.is_empty());
    if !current_is_set {
        obj.insert("current-context".into(), name.into());
    }
    Ok(())
}

/// Replaces the entry `{name: <name>, <item_key>: ...}` of the list `list_key` (dropping any duplicates of it),
/// or appends one.
fn upsert(obj: &mut Map<String, Value>, list_key: &str, item_key: &str, name: &str, body: Value) -> Result<(), String> {
    let list = obj.entry(list_key).or_insert_with(|| Value::Array(Vec::new()));
    if list.is_null() {
        *list = Value::Array(Vec::new());
    }
    let Value::Array(items) = list else {
        return Err(format!("{list_key} is not a list"));
    };
    let entry = json!({ "name": name, item_key: body });
    let is_ours = |item: &Value| item.get("name").and_then(Value::as_str) == Some(name);
    match items.iter().position(is_ours) {
        Some(first) => {
            items[first] = entry;
            let mut index = 0;
            items.retain(|item| {
                let keep = index <= first || !is_ours(item);
                index += 1;
                keep
            });
        }
        None => items.push(entry),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::process::Command;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

    /// The kubectl to check files with: `$KPLANE_TEST_KUBECTL`, else `kubectl.1.33` beside the real `kubectl`,
    /// else `kubectl` itself. `None` (test skipped) when there is none.
    fn kubectl() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("KPLANE_TEST_KUBECTL") {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        let found = std::env::split_paths(&path).map(|d| d.join("kubectl")).find(|p| p.is_file())?;
        let real = fs::canonicalize(&found).unwrap_or(found);
        let pinned = real.with_file_name("kubectl.1.33");
        Some(if pinned.is_file() { pinned } else { real })
    }

    /// `kubectl --kubeconfig F config view --raw -o json`, or `None` without kubectl.
    fn kubectl_view(path: &Path) -> Option<Value> {
        let Some(kubectl) = kubectl() else {
            eprintln!("kubectl not found; skipping the kubectl check");
            return None;
        };
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(path)
            .args(["config", "view", "--raw", "-o", "json"])
            .output()
            .expect("run kubectl");
        assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(serde_json::from_slice(&out.stdout).expect("kubectl JSON"))
    }

    fn named<'a>(doc: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
        doc[list].as_array()?.iter().find(|e| e["name"] == name)
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        super::super::tests::mode_of(path)
    }

    #[test]
    fn fresh_kubeconfig_is_private_and_read_by_kubectl() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("nested/.kube/kplane.yaml");
        let out = write_kubeconfig(&path, "https://127.0.0.1:6443", CA, "tok-123", "kplane").expect("write");
        assert_eq!(out, KubeconfigOutcome::Written);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(OWNER_MARKER));
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        let ours = parse_yaml(&text).expect("parse");
        assert_eq!(ours["current-context"], "kplane");
        assert_eq!(ours["kind"], "Config");

        if let Some(view) = kubectl_view(&path) {
            assert_eq!(view["current-context"], "kplane");
            let cluster = named(&view, "clusters", "kplane").expect("cluster");
            assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
            let ca_b64 = cluster["cluster"]["certificate-authority-data"].as_str().expect("ca data");
            let ca = base64::engine::general_purpose::STANDARD.decode(ca_b64).expect("base64");
            assert_eq!(ca, CA.as_bytes());
            assert_eq!(named(&view, "users", "kplane").expect("user")["user"]["token"], "tok-123");
            let ctx = named(&view, "contexts", "kplane").expect("context");
            assert_eq!(ctx["context"]["cluster"], "kplane");
            assert_eq!(ctx["context"]["user"], "kplane");
        }
    }

    #[test]
    fn own_file_is_rewritten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("kplane.yaml");
        write_kubeconfig(&path, "https://127.0.0.1:6443", CA, "old", "kplane").expect("write");
        let out = write_kubeconfig(&path, "https://127.0.0.1:7443", CA, "new", "kplane").expect("rewrite");
        assert_eq!(out, KubeconfigOutcome::Written);
        let doc = parse_yaml(&fs::read_to_string(&path).expect("read")).expect("parse");
        assert_eq!(doc["users"][0]["user"]["token"], "new");
        assert_eq!(doc["clusters"][0]["cluster"]["server"], "https://127.0.0.1:7443");
        assert_eq!(doc["clusters"].as_array().map(Vec::len), Some(1));
    }

    const FOREIGN: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod
  cluster:
    server: https://prod.example:443
    insecure-skip-tls-verify: true
    extensions:
    - name: client.authentication.k8s.io/exec
      extension:
        audience: "on"
        weird: "0777"
- name: kplane
  cluster:
    server: https://stale.example
users:
- name: prod-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: gke-gcloud-auth-plugin
      args: ["--flag", "value with spaces"]
      env:
      - name: LONG
        value: "line one
          continued"
      interactiveMode: IfAvailable
      provideClusterInfo: true
contexts:
- name: prod
  context:
    cluster: prod
    user: prod-admin
    namespace: "yes"
current-context: prod
extensions:
- name: my-ext
  extension:
    anything: [1, 2.5, null]
"#;

    #[test]
    fn foreign_file_is_merged() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config");
        fs::write(&path, FOREIGN).expect("write");
        let out = write_kubeconfig(&path, "https://127.0.0.1:6443", CA, "tok", "kplane").expect("merge");
        assert_eq!(out, KubeconfigOutcome::Merged);
        let text = fs::read_to_string(&path).expect("read");
        assert!(!text.starts_with(OWNER_MARKER), "a merged file must stay foreign");
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);

        let before = parse_yaml(FOREIGN).expect("parse before");
        let after = parse_yaml(&text).expect("parse after");
        assert_eq!(after["current-context"], "prod");
        assert_eq!(after["preferences"], before["preferences"]);
        assert_eq!(after["extensions"], before["extensions"]);
        assert_eq!(named(&after, "clusters", "prod"), named(&before, "clusters", "prod"));
        assert_eq!(named(&after, "users", "prod-admin"), named(&before, "users", "prod-admin"));
        assert_eq!(named(&after, "contexts", "prod"), named(&before, "contexts", "prod"));
        assert_eq!(after["clusters"].as_array().map(Vec::len), Some(2), "stale kplane entry replaced in place");
        assert_eq!(named(&after, "clusters", "kplane").expect("kplane")["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(named(&after, "users", "kplane").expect("user")["user"]["token"], "tok");
        assert!(named(&after, "contexts", "kplane").is_some());
        // Key order of the foreign file is kept.
        let keys: Vec<&String> = after.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["apiVersion", "kind", "preferences", "clusters", "users", "contexts", "current-context", "extensions"]
        );

        // Merging again changes nothing.
        let out = write_kubeconfig(&path, "https://127.0.0.1:6443", CA, "tok", "kplane").expect("merge again");
        assert_eq!(out, KubeconfigOutcome::Merged);
        assert_eq!(fs::read_to_string(&path).expect("read"), text);

        if let (Some(view_before), Some(view_after)) = (
            {
                let orig = tmp.path().join("orig");
                fs::write(&orig, FOREIGN).expect("write");
                kubectl_view(&orig)
            },
            kubectl_view(&path),
        ) {
            assert_eq!(view_after["current-context"], "prod");
            for (list, name) in [("clusters", "prod"), ("users", "prod-admin"), ("contexts", "prod")] {
                assert_eq!(named(&view_after, list, name), named(&view_before, list, name), "{list}/{name}");
            }
            assert_eq!(view_after["preferences"], view_before["preferences"]);
            assert_eq!(view_after["extensions"], view_before["extensions"]);
            assert_eq!(named(&view_after, "users", "kplane").expect("user")["user"]["token"], "tok");
        }
    }

    #[test]
    fn foreign_file_without_current_context_gets_ours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config");
        fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\nusers: null\ncurrent-context: \"\"\n")
            .expect("write");
        let out = write_kubeconfig(&path, "https://[::1]:6443", CA, "tok", "kplane").expect("merge");
        assert_eq!(out, KubeconfigOutcome::Merged);
        let doc = parse_yaml(&fs::read_to_string(&path).expect("read")).expect("parse");
        assert_eq!(doc["current-context"], "kplane");
        assert_eq!(doc["users"][0]["name"], "kplane");
        assert_eq!(doc["contexts"][0]["context"]["user"], "kplane");
        if let Some(view) = kubectl_view(&path) {
            assert_eq!(view["current-context"], "kplane");
            assert_eq!(view["clusters"][0]["cluster"]["server"], "https://[::1]:6443");
        }
    }

    #[test]
    fn unusable_foreign_files_are_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config");
        for original in [
            &b"apiVersion: v1\nclusters: [unclosed\n"[..],
            b"- just\n- a list\n",
            b"apiVersion: v1\nkind: Config\nclusters: 5\n",
            b"apiVersion: apps/v1\nkind: Deployment\n",
            b"a: 1\na: 2\n",
            b"\xff\xfe not utf8",
        ] {
            fs::write(&path, original).expect("write");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            }
            let err = write_kubeconfig(&path, "https://127.0.0.1:6443", CA, "tok", "kplane").expect_err("must fail");
            assert!(matches!(err, AuthError::Kubeconfig { .. }), "{err}");
            assert_eq!(fs::read(&path).expect("read"), original, "file must be byte-identical");
            #[cfg(unix)]
            assert_eq!(mode_of(&path), 0o644);
        }
        assert_eq!(fs::read_dir(tmp.path()).expect("read_dir").count(), 1, "no temp files left");
    }

    #[test]
    fn empty_file_is_taken_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("config");
        fs::write(&path, "# nothing here\n").expect("write");
        let out = write_kubeconfig(&path, "https://127.0.0.1:6443", CA, "tok", "kplane").expect("write");
        assert_eq!(out, KubeconfigOutcome::Written);
        assert!(fs::read_to_string(&path).expect("read").starts_with(OWNER_MARKER));
    }

    #[cfg(unix)]
    #[test]
    fn symlink_is_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real.yaml");
        let link = tmp.path().join("link.yaml");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        write_kubeconfig(&link, "https://127.0.0.1:6443", CA, "tok", "kplane").expect("write");
        assert!(fs::symlink_metadata(&link).expect("meta").file_type().is_symlink());
        assert!(fs::read_to_string(&real).expect("read").starts_with(OWNER_MARKER));
    }

    /// kubectl (Go's TLS stack) trusts the generated CA, accepts the serving cert for 127.0.0.1 and sends the
    /// token: a one-shot HTTP/1.1 server answers `/version`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_talks_to_a_server_using_this_material() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Some(kubectl) = kubectl() else {
            eprintln!("kubectl not found; skipping");
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let material = super::super::TlsMaterial::load_or_create(Some(tmp.path()), &[]).expect("tls");
        let token = super::super::load_or_create_token(Some(tmp.path())).expect("token");
        let mut config = (*material.server_config().expect("server config")).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()]; // the responder below only speaks HTTP/1.1
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0-kplane","platform":"linux/amd64"}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(response.as_bytes()).await?;
            tls.shutdown().await?;
            std::io::Result::Ok(String::from_utf8_lossy(&request).into_owned())
        });

        let kubeconfig = tmp.path().join("kubeconfig");
        let url = format!("https://127.0.0.1:{port}");
        write_kubeconfig(&kubeconfig, &url, material.ca_pem(), &token, "kplane").expect("kubeconfig");
        let home = tmp.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(kubectl)
                .env("HOME", home)
                .env_remove("KUBECONFIG")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["version", "-o", "json", "--request-timeout=10s"])
                .output()
        })
        .await
        .expect("join")
        .expect("run kubectl");
        let request = server.await.expect("join").expect("server");
        assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
        let version: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(version["serverVersion"]["gitVersion"], "v1.33.0-kplane");
        assert!(request.starts_with("GET /version"), "{request}");
        let auth = format!("authorization: bearer {}", token.to_ascii_lowercase());
        assert!(request.to_ascii_lowercase().contains(&auth), "token not sent: {request}");
    }

    #[test]
    fn default_path() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(kubeconfig_path_from(os("/a/b:/c/d"), os("/home/u")), Some(PathBuf::from("/a/b")));
        assert_eq!(kubeconfig_path_from(os(":/c/d"), os("/home/u")), Some(PathBuf::from("/c/d")));
        assert_eq!(kubeconfig_path_from(os(""), os("/home/u")), Some(PathBuf::from("/home/u/.kube/kplane.yaml")));
        assert_eq!(kubeconfig_path_from(None, os("/home/u")), Some(PathBuf::from("/home/u/.kube/kplane.yaml")));
        assert_eq!(kubeconfig_path_from(None, None), None);
        assert_eq!(kubeconfig_path_from(None, os("")), None);
    }
}
