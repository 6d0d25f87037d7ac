//! A Deployment rollout driven with kubectl 1.27 and 1.33 against the real binary (its node agent
//! runs the pods): create → rollout status → expose (three endpoints) → scale → set image →
//! history → undo → restart, each step waited for with `kubectl rollout status`.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane_e2e::Server;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::time::Duration;

fn ok(server: &Server, version: &str, args: &[&str]) -> String {
    let out = server.kubectl(version, args);
    assert!(
        out.status.success(),
        "kubectl.{version} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rollout_status(server: &Server, version: &str) {
    let out = ok(server, version, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("deployment \"web\" successfully rolled out"), "{out}");
}

/// Waits until the Service's EndpointSlices and Endpoints both list `n` ready addresses.
async fn endpoints(server: &Server, n: usize) {
    let client = server.client().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let mut events = watcher::watcher(slices, watcher::Config::default().labels("kubernetes.io/service-name=web"))
        .reflect(writer)
        .boxed();
    let ready = |reader: &reflector::Store<EndpointSlice>| {
        reader
            .state()
            .iter()
            .flat_map(|s| s.endpoints.clone())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .count()
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            // The store holds a (re)list only once it is done.
            if !matches!(ev, Ok(watcher::Event::Init | watcher::Event::InitApply(_))) && ready(&reader) == n {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} ready endpoints in slices; have {}", ready(&reader)));

    let eps: Api<Endpoints> = Api::namespaced(client, "default");
    let cond = |e: Option<&Endpoints>| {
        e.and_then(|e| e.subsets.as_ref())
            .is_some_and(|ss| ss.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum::<usize>() == n)
    };
    tokio::time::timeout(Duration::from_secs(30), kube::runtime::wait::await_condition(eps, "web", cond))
        .await
        .expect("Endpoints list the pods")
        .expect("watch");
}

fn revisions(server: &Server, version: &str) -> Vec<(String, String)> {
    let out = ok(server, version, &["rollout", "history", "deployment/web"]);
    out.lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_once(char::is_whitespace).map(|(r, c)| (r.to_string(), c.trim().to_string())))
        .collect()
}

async fn rollout_with(version: &str) {
    let server = Server::start_ephemeral();
    ok(&server, version, &["create", "deployment", "web", "--image=x", "--replicas=3"]);
    rollout_status(&server, version);
    let row = ok(&server, version, &["get", "deployment", "web", "--no-headers"]);
    assert!(row.split_whitespace().take(4).eq(["web", "3/3", "3", "3"]), "{row}");

    ok(&server, version, &["expose", "deployment", "web", "--port", "80"]);
    endpoints(&server, 3).await;

    ok(&server, version, &["scale", "deployment/web", "--replicas=5"]);
    rollout_status(&server, version);
    endpoints(&server, 5).await;

    ok(&server, version, &["set", "image", "deployment/web", "x=y"]);
    ok(&server, version, &["annotate", "deployment/web", "kubernetes.io/change-cause=image y"]);
    rollout_status(&server, version);
    let history = revisions(&server, version);
    assert_eq!(
        history,
        [("1".to_string(), "<none>".to_string()), ("2".to_string(), "image y".to_string())],
        "{history:?}"
    );

    ok(&server, version, &["rollout", "undo", "deployment/web"]);
    rollout_status(&server, version);
    let image =
        ok(&server, version, &["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "x");
    let history: Vec<String> = revisions(&server, version).into_iter().map(|(r, _)| r).collect();
    assert_eq!(history, ["2", "3"], "undo makes revision 1 into 3");
    let rs =
        ok(&server, version, &["get", "rs", "--no-headers", "-o", "custom-columns=N:.metadata.name,D:.spec.replicas"]);
    assert_eq!(rs.lines().count(), 2, "the old ReplicaSet was reused: {rs}");

    ok(&server, version, &["rollout", "restart", "deployment/web"]);
    rollout_status(&server, version);
    let restarted = ok(
        &server,
        version,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        ],
    );
    assert!(!restarted.is_empty(), "restart annotation set");
    let history: Vec<String> = revisions(&server, version).into_iter().map(|(r, _)| r).collect();
    assert_eq!(history, ["2", "3", "4"]);
    endpoints(&server, 5).await;
}

#[tokio::test]
async fn deployment_rollout_with_kubectl_1_27() {
    rollout_with("1.27").await;
}

#[tokio::test]
async fn deployment_rollout_with_kubectl_1_33() {
    rollout_with("1.33").await;
}
