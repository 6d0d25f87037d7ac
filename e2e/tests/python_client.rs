//! The official Python client (`pip install kubernetes`) against a real `kplane serve`: runs
//! `e2e/python/test_client.py`. Skipped, loudly, only when `import kubernetes` fails.

use kplane_e2e::{Server, run_with_deadline};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn python_kubernetes_client() {
    let probe = Command::new("python3").args(["-c", "import kubernetes"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "SKIPPED python_kubernetes_client: `import kubernetes` failed ({}); run `pip install kubernetes`",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED python_kubernetes_client: python3 is not runnable ({e})");
            return;
        }
    }

    let server = Server::start_ephemeral();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(server.kubeconfig()).env_remove("KUBECONFIG").env("PYTHONUNBUFFERED", "1");
    let out = run_with_deadline(&mut cmd, Duration::from_secs(120)).expect("running the Python client test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver stderr:\n{}",
        script.display(),
        out.status.code(),
        server.stderr()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    println!("{stdout}");
}
