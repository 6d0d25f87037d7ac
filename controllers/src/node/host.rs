//! Facts about this machine as the kubelet reports them on its Node: name, CPUs, memory, disk,
//! OS, kernel, architecture and IDs (`pkg/kubelet/nodestatus/setters.go` `MachineInfo`,
//! `NodeInfo`; cadvisor's machine info; `pkg/util/node` `GetHostname`).

use std::path::Path;

/// What the Node reports about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: usize,
    /// `MemTotal` of /proc/meminfo, in KiB.
    pub memory_kib: u64,
    /// Size of the filesystem holding the agent's data, in bytes.
    pub storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// Go's `GOARCH` naming: `amd64`, `arm64`, ….
    pub architecture: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The host's name as the kubelet takes it: lower case, trimmed.
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}

/// Rust's target architecture in Go's `GOARCH` spelling.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `MemTotal` of a /proc/meminfo text, in KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `PRETTY_NAME` of an os-release text.
fn pretty_name(os_release: &str) -> Option<String> {
    let line = os_release.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    let value = line.trim_start_matches("PRETTY_NAME=").trim();
    Some(value.trim_matches('"').trim_matches('\'').to_string()).filter(|v| !v.is_empty())
}

/// Total bytes of the filesystem at `path` (statvfs).
fn filesystem_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_blocks.saturating_mul(st.f_frsize))
}

impl HostFacts {
    /// Reads the facts; `data_dir` is where the agent keeps state (its disk is the one reported).
    pub fn read(data_dir: Option<&Path>) -> Self {
        let storage_path = data_dir.filter(|d| d.exists()).unwrap_or(Path::new("/"));
        let machine_id = read_trimmed("/etc/machine-id").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib: std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total_kib(&m)).unwrap_or(0),
            storage_bytes: filesystem_bytes(storage_path).unwrap_or(0),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|r| pretty_name(&r))
                .unwrap_or_else(|| "Linux".into()),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid").unwrap_or_else(|| machine_id.clone()),
            machine_id,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            architecture: go_arch().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_os_release() {
        assert_eq!(mem_total_kib("MemTotal:       16331412 kB\nMemFree: 1 kB\n"), Some(16_331_412));
        assert_eq!(pretty_name("NAME=x\nPRETTY_NAME=\"Ubuntu 24.04 LTS\"\n").as_deref(), Some("Ubuntu 24.04 LTS"));
        assert_eq!(pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let h = HostFacts::read(None);
        assert!(h.cpus >= 1);
        assert!(h.memory_kib > 0);
        assert!(h.storage_bytes > 0);
        assert!(["amd64", "arm64"].contains(&h.architecture.as_str()) || !h.architecture.is_empty());
        assert_eq!(hostname(), hostname().to_lowercase());
    }
}
