//! resolv.conf both ways: reading the host's (upstream nameservers, search list) and writing a pod's
//! under `dnsPolicy: ClusterFirst` (kubelet `pkg/kubelet/network/dns/dns.go`).

use std::net::{IpAddr, SocketAddr};

/// At most this many nameservers are written (`MaxDNSNameservers`).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (`MaxDNSSearchPaths`).
pub const MAX_SEARCH_PATHS: usize = 32;
/// At most this many characters of search list (`MaxDNSSearchListChars`).
pub const MAX_SEARCH_CHARS: usize = 2048;

/// What a resolv.conf says that matters here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parse resolv.conf text; unknown lines and bad addresses are ignored, the last `search` or
    /// `domain` line wins (as glibc).
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A zone index (fe80::1%eth0) cannot be parsed into an IpAddr: such lines are skipped.
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    conf.search =
                        words.map(|w| w.trim_end_matches('.').to_string()).filter(|w| !w.is_empty()).collect();
                }
                _ => {}
            }
        }
        conf
    }

    /// The host's `/etc/resolv.conf`, or nothing when it cannot be read.
    pub fn system() -> Self {
        std::fs::read_to_string("/etc/resolv.conf").map(|t| Self::parse(&t)).unwrap_or_default()
    }

    /// The nameservers as upstreams on port 53, leaving out `exclude` (this server: no loops).
    pub fn upstreams(&self, exclude: &[SocketAddr]) -> Vec<SocketAddr> {
        self.nameservers.iter().map(|ip| SocketAddr::new(*ip, 53)).filter(|a| !exclude.contains(a)).collect()
    }
}

/// A pod's resolv.conf under `ClusterFirst`: the cluster DNS, `<ns>.svc.<zone> svc.<zone> <zone>` then
/// the host's search list (duplicates removed, limits applied), `options ndots:5`.
pub fn pod_resolv_conf(namespace: &str, cluster_domain: &str, nameservers: &[IpAddr], host: &ResolvConf) -> String {
    let zone = cluster_domain.trim_end_matches('.');
    let mut search: Vec<String> = vec![format!("{namespace}.svc.{zone}"), format!("svc.{zone}"), zone.to_string()];
    for s in &host.search {
        if !search.contains(s) {
            search.push(s.clone());
        }
    }
    search.truncate(MAX_SEARCH_PATHS);
    while search.iter().map(|s| s.len()).sum::<usize>() + search.len().saturating_sub(1) > MAX_SEARCH_CHARS {
        search.pop();
    }
    let mut out = String::new();
    for ns in nameservers.iter().take(MAX_NAMESERVERS) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    out.push_str(&format!("search {}\n", search.join(" ")));
    out.push_str("options ndots:5\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_host_file() {
        let text = "# generated\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver ::1 # v6\n\
                    options edns0 trust-ad\ndomain old.example\nsearch corp.example. lab.example\n";
        let conf = ResolvConf::parse(text);
        assert_eq!(conf.nameservers, vec!["127.0.0.53".parse::<IpAddr>().expect("ip"), "::1".parse().expect("ip")]);
        assert_eq!(conf.search, vec!["corp.example", "lab.example"]);
        let me: SocketAddr = "127.0.0.53:53".parse().expect("addr");
        assert_eq!(conf.upstreams(&[me]), vec!["[::1]:53".parse::<SocketAddr>().expect("addr")]);
    }

    #[test]
    fn pod_file_as_the_kubelet_writes_it() {
        let host = ResolvConf { nameservers: vec![], search: vec!["corp.example".into(), "svc.cluster.local".into()] };
        let ns: Vec<IpAddr> =
            ["127.96.0.10", "10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().map(|s| s.parse().expect("ip")).collect();
        assert_eq!(
            pod_resolv_conf("team-a", "cluster.local", &ns, &host),
            "nameserver 127.96.0.10\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n\
             search team-a.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        let long = ResolvConf { nameservers: vec![], search: (0..40).map(|i| format!("d{i}.example")).collect() };
        let text = pod_resolv_conf("x", "cluster.local", &ns[..1], &long);
        let search = text.lines().find_map(|l| l.strip_prefix("search ")).expect("search line");
        assert_eq!(search.split(' ').count(), MAX_SEARCH_PATHS);
        let huge =
            ResolvConf { nameservers: vec![], search: (0..20).map(|i| format!("{i}{}", "a".repeat(200))).collect() };
        let text = pod_resolv_conf("x", "cluster.local", &ns[..1], &huge);
        let search = text.lines().find_map(|l| l.strip_prefix("search ")).expect("search line");
        assert!(search.len() <= MAX_SEARCH_CHARS);
    }
}
