//! Host processes of process pods: spawning one container instance in its own process group
//! (all of it dying with kplane, through a guard process), signalling groups, container IDs,
//! and the runtime's wording for a process that cannot start (runc's, as containerd reports it).

use super::logs::PodKey;
use std::hash::{BuildHasher, Hasher};
use std::process::Stdio;

/// The runtime's message for a process that could not be started (runc's wording).
pub fn start_error_message(program: &str, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound if program.contains('/') => format!("stat {program}: no such file or directory"),
        std::io::ErrorKind::NotFound => "executable file not found in $PATH".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    format!("unable to start container process: exec: {program:?}: {why}")
}

/// Signals every process of a group; a group that is gone is no error.
pub fn kill_group(pgid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// A container ID in the runtime's `<type>://<id>` form.
pub fn new_container_id(pod: &PodKey, container: &str, attempt: u32) -> String {
    let mut id = String::from("kplane://");
    for salt in 0..4u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(pod.uid.as_bytes());
        h.write(container.as_bytes());
        h.write_u32(attempt);
        h.write_u8(salt);
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

pub fn spawn(argv: &[String], env: &[(String, String)], dir: Option<&str>) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe system call (prctl).
    unsafe {
        cmd.pre_exec(|| {
            // If kplane dies without stopping the pod, its processes go too.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn()?;
    if let Some(pgid) = child.id() {
        // Without it, only the main process would die with kplane (the death signal reaches a
        // direct child only); a group that is already gone needs no guard.
        let _ = spawn_guard(pgid);
    }
    Ok(child)
}

/// A guard in the container's process group: told by its own death signal (USR1) that kplane
/// is gone, it kills the whole group, so processes a container started in the background go
/// too. It ignores the TERM a graceful stop sends the group, and goes with the group's KILL
/// (a stop, or the end of the main process).
fn spawn_guard(pgid: u32) -> std::io::Result<()> {
    const SCRIPT: &str = "trap '' TERM INT HUP; trap 'kill -KILL 0' USR1; while :; do sleep 3600 & wait $!; done";
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.args(["-c", SCRIPT])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(i32::try_from(pgid).map_err(|_| std::io::ErrorKind::InvalidInput)?);
    // SAFETY: as in `spawn`: one async-signal-safe system call before exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::USR1))
                .map_err(std::io::Error::from)
        });
    }
    // Not awaited: tokio reaps it when the group's KILL ends it.
    cmd.spawn().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_read_as_runc_says() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            start_error_message("nope", &nf),
            "unable to start container process: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            start_error_message("/no/such", &nf),
            "unable to start container process: exec: \"/no/such\": stat /no/such: no such file or directory"
        );
    }
}
