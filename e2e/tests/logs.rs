//! `kubectl logs` against the real `kplane serve` binary with kubectl 1.27 and 1.33, on process
//! pods (`kplane.dev/run: process`): the whole log, `--tail`, `-f` (sees a line written after it
//! started and ends when the container does), `--previous` after a crash, and upstream's errors
//! for unknown pods, containers and previous instances. Each test has its own server.

use kplane_e2e::Server;
use std::time::{Duration, Instant};

fn ok(server: &Server, version: &str, args: &[&str]) -> String {
    server.kubectl_ok(version, args)
}

fn fails(server: &Server, version: &str, args: &[&str]) -> String {
    server.kubectl_fails(version, args)
}

const WITHIN: Duration = Duration::from_secs(60);

/// Polls `kubectl ARGS` until `check` accepts its stdout.
fn eventually(server: &Server, version: &str, args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let out = server.kubectl(version, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && check(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            kplane_e2e::describe_kubectl(version, args, &out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn process_pod(name: &str, containers: &str, restart: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    kplane.dev/run: process\n\
         spec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n  containers:\n{containers}"
    )
}

fn logs_with(version: &str) {
    let server = Server::start_ephemeral();
    let trigger = server.scratch_dir().join("more");
    let talk = format!(
        "  - name: c\n    image: busybox\n    command: [sh, -c]\n    args:\n      - \"echo one; echo two; echo three; \
         while [ ! -e {t} ]; do sleep 0.05; done; echo four; exec sleep 3600\"\n",
        t = trigger.display()
    );
    let two = "  - name: a\n    image: x\n    command: [sleep, \"3600\"]\n  - name: b\n    image: x\n    command: [sleep, \"3600\"]\n";
    let crash = "  - name: c\n    image: busybox\n    command: [sh, -c, \"echo attempt; exit 1\"]\n";
    for (file, name, containers, restart) in [
        ("talk.yaml", "talk", talk.as_str(), "Always"),
        ("two.yaml", "two", two, "Always"),
        ("crash.yaml", "crash", crash, "Always"),
    ] {
        let path = server.write_file(file, &process_pod(name, containers, restart));
        ok(&server, version, &["apply", "-f", path.to_str().expect("utf-8 path")]);
    }
    ok(&server, version, &["wait", "--for=condition=Ready", "pod/talk", "--timeout=60s"]);

    // The whole log, then the tail.
    let all = eventually(&server, version, &["logs", "talk"], "three lines", |s| s.ends_with("three\n"));
    assert_eq!(all, "one\ntwo\nthree\n");
    assert_eq!(ok(&server, version, &["logs", "talk", "--tail=1"]), "three\n");
    assert_eq!(ok(&server, version, &["logs", "pod/talk", "-c", "c", "--tail=2"]), "two\nthree\n");
    let stamped = ok(&server, version, &["logs", "talk", "--tail=1", "--timestamps"]);
    let (ts, rest) = stamped.split_once(' ').expect("a timestamp first");
    assert!(ts.contains('T') && ts.ends_with('Z'), "{stamped}");
    assert_eq!(rest, "three\n");

    // -f: sees a line written after it started, and ends when the container ends.
    let mut follow = server.kubectl_spawn(version, &["logs", "-f", "talk", "--tail=1"]);
    follow.wait_for_line(WITHIN, |l| l == "three").expect("the last line first");
    std::fs::write(&trigger, b"").expect("trigger");
    follow.wait_for_line(WITHIN, |l| l == "four").expect("the new line");
    ok(&server, version, &["delete", "pod", "talk", "--wait=false"]);
    let deadline = Instant::now() + WITHIN;
    while !follow.has_exited() {
        assert!(Instant::now() < deadline, "kubectl logs -f did not end with the container");
        std::thread::sleep(Duration::from_millis(50));
    }

    // --previous after a crash.
    eventually(
        &server,
        version,
        &["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"],
        "a restart",
        |s| s.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    );
    assert_eq!(ok(&server, version, &["logs", "crash", "--previous"]), "attempt\n");
    let reason = ok(
        &server,
        version,
        &["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.reason}"],
    );
    assert_eq!(reason, "Error");

    // Upstream's errors.
    let err = fails(&server, version, &["logs", "nosuch"]);
    assert!(err.contains("pods \"nosuch\" not found"), "{err}");
    let err = fails(&server, version, &["logs", "two", "-c", "zz"]);
    assert!(err.contains("container zz is not valid for pod two"), "{err}");
    let err = fails(&server, version, &["logs", "two", "-c", "a", "--previous"]);
    assert!(err.contains("previous terminated container \"a\" in pod \"two\" not found"), "{err}");
    // Several containers and none named: kubectl picks the first and says so.
    let out = server.kubectl(version, &["logs", "two"]);
    assert!(out.status.success(), "{}", kplane_e2e::describe_kubectl(version, &["logs", "two"], &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Defaulted container \"a\""), "{stderr}");
}

/// Conformance "Pods should contain environment variables for services" (spec §7 item 36): a
/// Service created first, then a pod that prints its environment.
fn service_env_with(version: &str) {
    let server = Server::start_ephemeral();
    let svc = concat!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: fooservice\nspec:\n",
        "  selector:\n    name: server\n  ports:\n  - port: 8765\n    protocol: TCP\n    targetPort: 8080\n"
    );
    let path = server.write_file("svc.yaml", svc);
    ok(&server, version, &["apply", "-f", path.to_str().expect("utf-8 path")]);
    let ip = ok(&server, version, &["get", "svc", "fooservice", "-o", "jsonpath={.spec.clusterIP}"]);
    let env = "  - name: env3cont\n    image: busybox\n    command: [sh, -c, env]\n";
    let path = server.write_file("env.yaml", &process_pod("client-envvars", env, "Never"));
    ok(&server, version, &["apply", "-f", path.to_str().expect("utf-8 path")]);
    let out = eventually(
        &server,
        version,
        &["get", "pod", "client-envvars", "-o", "jsonpath={.status.phase}"],
        "Succeeded",
        |s| s == "Succeeded",
    );
    assert_eq!(out, "Succeeded");
    let log = ok(&server, version, &["logs", "client-envvars"]);
    let lines: Vec<&str> = log.lines().collect();
    for want in [
        format!("FOOSERVICE_SERVICE_HOST={ip}"),
        "FOOSERVICE_SERVICE_PORT=8765".to_string(),
        format!("FOOSERVICE_PORT=tcp://{ip}:8765"),
        "FOOSERVICE_PORT_8765_TCP_PORT=8765".to_string(),
        "FOOSERVICE_PORT_8765_TCP_PROTO=tcp".to_string(),
        format!("FOOSERVICE_PORT_8765_TCP=tcp://{ip}:8765"),
        format!("FOOSERVICE_PORT_8765_TCP_ADDR={ip}"),
        "HOSTNAME=client-envvars".to_string(),
    ] {
        assert!(lines.contains(&want.as_str()), "{want} missing from:\n{log}");
    }
    assert!(lines.iter().any(|l| l.starts_with("KUBERNETES_SERVICE_HOST=")), "{log}");
    assert!(lines.iter().any(|l| l.starts_with("POD_IP=")), "{log}");
}

#[test]
fn kubectl_1_27_service_env() {
    service_env_with("1.27");
}

#[test]
fn kubectl_1_33_service_env() {
    service_env_with("1.33");
}

#[test]
fn kubectl_1_27_logs() {
    logs_with("1.27");
}

#[test]
fn kubectl_1_33_logs() {
    logs_with("1.33");
}

/// A kill -9 of kplane takes a process pod's whole process group with it: the main process and
/// what it started in the background.
#[test]
fn process_pods_die_with_kplane() {
    let mut server = Server::start_ephemeral();
    let background = "  - name: c\n    image: x\n    command: [sh, -c, \"sleep 3599 & echo bg=$!; wait\"]\n";
    let path = server.write_file("bg.yaml", &process_pod("bg", background, "Always"));
    ok(&server, "1.33", &["apply", "-f", path.to_str().expect("utf-8 path")]);
    let log = eventually(&server, "1.33", &["logs", "bg"], "the background pid", |s| s.starts_with("bg="));
    let pid: u32 = log.trim().trim_start_matches("bg=").parse().expect("a pid");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists(), "the background process runs");
    server.kill_9();
    let deadline = Instant::now() + Duration::from_secs(10);
    // A zombie left for init to reap counts as gone.
    let alive = || std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| !s.contains(") Z "));
    while alive() {
        assert!(Instant::now() < deadline, "process {pid}, started in the background by a container, outlived kplane");
        std::thread::sleep(Duration::from_millis(50));
    }
}
