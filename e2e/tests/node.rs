//! The node agent and `kplane env` against the real binary: kubectl sees a Ready node, `kubectl
//! run` gives a Running pod with an IP that `kubectl delete` removes promptly, and the output of
//! `kplane env`, sourced by `sh`, holds the Service variables a pod would get (spec §6, §7 item 36).

use kplane_e2e::{DISPATCHER, Server, kplane_bin, run_with_deadline};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const V: &str = "1.33";

fn ok(server: &Server, version: &str, args: &[&str]) -> String {
    let out = server.kubectl(version, args);
    assert!(out.status.success(), "kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kplane_env(args: &[&str], kubeconfig_env: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(kplane_bin().expect("kplane binary"));
    cmd.arg("env").args(args).env_remove("KUBECONFIG").stdin(Stdio::null());
    if let Some(k) = kubeconfig_env {
        cmd.env("KUBECONFIG", k);
    }
    run_with_deadline(&mut cmd, Duration::from_secs(60)).expect("kplane env ran")
}

/// Sources `script` in `sh` and prints the named variables, one per line.
fn sourced(server: &Server, script: &str, names: &[&str]) -> Vec<String> {
    let file = server.write_file("env.sh", script);
    let echo: Vec<String> = names.iter().map(|n| format!("echo \"${{{n}-<unset>}}\"")).collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(". '{}' && {}", file.display(), echo.join(" && ")))
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "sourcing failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn kubectl_sees_a_ready_node_and_runs_pods() {
    let server = Server::start_ephemeral();
    let nodes = ok(&server, DISPATCHER, &["get", "nodes", "--no-headers"]);
    let row: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(row.get(1), Some(&"Ready"), "{nodes}");
    assert_eq!(row.get(2), Some(&"<none>"), "{nodes}");
    assert!(row.get(4).is_some_and(|v| v.starts_with("v1.33.")), "{nodes}");
    let node = row[0].to_string();

    ok(&server, V, &["run", "x", "--image=nginx"]);
    ok(&server, V, &["wait", "--for=condition=Ready", "pod/x", "--timeout=60s"]);
    let got = ok(&server, V, &["get", "pod", "x", "-o", "jsonpath={.status.phase} {.status.podIP} {.spec.nodeName}"]);
    let fields: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{got}");
    assert_eq!(fields[0], "Running");
    assert!(fields[1].starts_with("127.244."), "{got}");
    assert_eq!(fields[2], node);
    let wide = ok(&server, V, &["get", "pod", "x", "-o", "wide", "--no-headers"]);
    let cols: Vec<&str> = wide.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["1/1", "Running"], "{wide}");
    assert!(cols.contains(&fields[1]) && cols.contains(&node.as_str()), "{wide}");

    // kubectl delete waits for the pod to go: a simulated container stops at once, not after 30 s.
    let start = Instant::now();
    ok(&server, V, &["delete", "pod", "x"]);
    assert!(start.elapsed() < Duration::from_secs(15), "delete took {:?}", start.elapsed());
    let out = server.kubectl(V, &["get", "pod", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"), "{:?}", out);
}

#[test]
fn kplane_env_prints_what_a_pod_would_get() {
    let server = Server::start_ephemeral();
    ok(&server, V, &["create", "service", "clusterip", "fooservice", "--tcp=8765:8080"]);
    ok(&server, V, &["create", "namespace", "other"]);
    ok(&server, V, &["create", "service", "clusterip", "bar-svc", "-n", "other", "--tcp=80:8080"]);
    let foo_ip = ok(&server, V, &["get", "svc", "fooservice", "-o", "jsonpath={.spec.clusterIP}"]);
    let k8s_ip = ok(&server, V, &["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]);
    let kubeconfig = server.kubeconfig().to_str().expect("utf-8 path").to_string();

    let out = kplane_env(&["-n", "default", "--kubeconfig", &kubeconfig], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(script.lines().all(|l| l.starts_with("export ") && l.ends_with('\'')), "{script}");
    let names = [
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "KUBERNETES_SERVICE_PORT_HTTPS",
        "KUBERNETES_PORT_443_TCP",
        "FOOSERVICE_SERVICE_HOST",
        "FOOSERVICE_SERVICE_PORT",
        "FOOSERVICE_PORT",
        "FOOSERVICE_PORT_8765_TCP_PROTO",
        "FOOSERVICE_PORT_8765_TCP_PORT",
        "FOOSERVICE_PORT_8765_TCP_ADDR",
        "BAR_SVC_SERVICE_HOST",
    ];
    let values = sourced(&server, &script, &names);
    let want = [
        k8s_ip.clone(),
        "443".into(),
        "443".into(),
        format!("tcp://{k8s_ip}:443"),
        foo_ip.clone(),
        "8765".into(),
        format!("tcp://{foo_ip}:8765"),
        "tcp".into(),
        "8765".into(),
        foo_ip.clone(),
        "<unset>".into(),
    ];
    assert_eq!(values, want);

    // $KUBECONFIG is found as kubectl finds it; another namespace sees its own Services.
    let out = kplane_env(&["-n", "other"], Some(server.kubeconfig()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let values = sourced(&server, &String::from_utf8_lossy(&out.stdout), &names);
    assert_eq!(values[0], k8s_ip);
    assert_eq!(values[4], "<unset>", "fooservice is in default");
    assert_ne!(values[10], "<unset>", "bar-svc is in other");
    // enableServiceLinks false: only default/kubernetes.
    let out = kplane_env(&["-n", "other", "--enable-service-links=false", "--kubeconfig", &kubeconfig], None);
    let values = sourced(&server, &String::from_utf8_lossy(&out.stdout), &names);
    assert_eq!(values[0], k8s_ip);
    assert_eq!(values[10], "<unset>");

    // No cluster to be found: a clear failure, nothing printed.
    let missing = server.scratch_dir().join("missing-kubeconfig");
    let out = kplane_env(&["--kubeconfig", missing.to_str().expect("utf-8")], None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing-kubeconfig"), "{out:?}");
}
