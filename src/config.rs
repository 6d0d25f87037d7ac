//! The cluster's configuration: addresses, ranges and where state lives, with DESIGN.md's defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// A bad setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid { flag: &'static str, value: String, reason: String },
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, value: value.to_string(), reason: reason.into() }
}

/// An inclusive port range (`--node-port-range 30000-32767`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for NodePortRange {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (a, b) = s.split_once('-').ok_or_else(|| invalid("--node-port-range", s, "expected FIRST-LAST"))?;
        let parse = |p: &str| p.trim().parse::<u16>().map_err(|e| invalid("--node-port-range", s, e.to_string()));
        let (first, last) = (parse(a)?, parse(b)?);
        if first == 0 || first > last {
            return Err(invalid("--node-port-range", s, "FIRST must be at least 1 and not above LAST"));
        }
        Ok(Self { first, last })
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    fn parse(flag: &'static str, s: &str) -> Result<Self, ConfigError> {
        let (a, p) = s.split_once('/').ok_or_else(|| invalid(flag, s, "expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = a.parse().map_err(|e: std::net::AddrParseError| invalid(flag, s, e.to_string()))?;
        let prefix: u8 = p.parse().map_err(|e: std::num::ParseIntError| invalid(flag, s, e.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid(flag, s, format!("prefix longer than {max}")));
        }
        Ok(Self { addr, prefix })
    }

    /// The `n`th address of the network (`n` = 1 is the first usable one).
    pub fn nth(&self, n: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n as u32))),
            IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(n))),
        }
    }
}

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where state lives; `None` keeps everything in memory (`--ephemeral`).
    pub data_dir: Option<PathBuf>,
    /// The HTTPS address; `None` serves in-process only.
    pub listen: Option<SocketAddr>,
    /// Where to write the kubeconfig; `None` writes none.
    pub kubeconfig: Option<PathBuf>,
    /// `--service-cidr`: one range, or two (IPv4,IPv6) for dual stack.
    pub service_cidr: String,
    pub pod_cidr: String,
    pub node_port_range: NodePortRange,
    /// `--lb-pool`: where LoadBalancer ingress IPs come from, one range or one per family;
    /// `None` runs no LoadBalancer IPAM (status stays empty, as on a cluster without one).
    pub lb_pool: Option<String>,
    pub cluster_domain: String,
    /// The cluster DNS address (UDP and TCP); `None` runs no DNS server.
    pub dns_listen: Option<SocketAddr>,
    /// Where the cluster DNS forwards other names; empty: the nameservers of /etc/resolv.conf.
    pub dns_upstreams: Vec<SocketAddr>,
    /// TTL of cluster DNS answers, in seconds.
    pub dns_ttl: u32,
    /// The service proxy's settings; `None` runs no proxy.
    pub proxy: Option<kplane_proxy::ProxyConfig>,
    /// `--max-endpoints-per-slice`: endpoints per EndpointSlice (1–1000).
    pub max_endpoints_per_slice: usize,
    /// The node agent (one Node, pods with IPs from `pod_cidr`); `None` runs none.
    pub node: Option<NodeConfig>,
}

/// The node agent's Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `--node-name`; by default the host's name, lower case, as the kubelet takes it.
    pub name: String,
    /// `--node-ip`: the Node's `InternalIP` and every pod's `hostIP`.
    pub ip: IpAddr,
}

impl Default for NodeConfig {
    /// The host's name made a valid node name (a host named `My_Box` gives `my-box`), and 127.0.0.1.
    fn default() -> Self {
        let host = kplane_controllers::node::host::hostname();
        let cleaned: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let labels: Vec<&str> = cleaned.split('.').map(|l| l.trim_matches('-')).filter(|l| !l.is_empty()).collect();
        let mut name = labels.iter().map(|l| l[..l.len().min(63)].trim_end_matches('-')).collect::<Vec<_>>().join(".");
        name.truncate(253);
        let name = name.trim_end_matches(['.', '-']).to_string();
        Self { name: if name.is_empty() { "localhost".into() } else { name }, ip: IpAddr::V4(Ipv4Addr::LOCALHOST) }
    }
}

impl Config {
    /// In memory, in-process, nothing written anywhere.
    pub fn ephemeral() -> Self {
        Self {
            data_dir: None,
            listen: None,
            kubeconfig: None,
            service_cidr: "127.96.0.0/12".into(),
            pod_cidr: "127.244.0.0/16".into(),
            node_port_range: NodePortRange { first: 30000, last: 32767 },
            lb_pool: Some("127.240.0.0/16".into()),
            cluster_domain: "cluster.local".into(),
            dns_listen: None,
            dns_upstreams: Vec::new(),
            dns_ttl: 5,
            proxy: None,
            max_endpoints_per_slice: kplane_controllers::endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            node: Some(NodeConfig::default()),
        }
    }

    /// The service ranges, parsed.
    pub fn service_cidrs(&self) -> Result<Vec<Cidr>, ConfigError> {
        let cidrs: Vec<Cidr> =
            self.service_cidr.split(',').map(|s| Cidr::parse("--service-cidr", s.trim())).collect::<Result<_, _>>()?;
        match cidrs.as_slice() {
            [_] => Ok(cidrs),
            [a, b] if a.addr.is_ipv4() != b.addr.is_ipv4() => Ok(cidrs),
            _ => Err(invalid("--service-cidr", &self.service_cidr, "expected one range, or one IPv4 and one IPv6")),
        }
    }

    /// The LoadBalancer pools, parsed.
    pub fn lb_pools(&self) -> Result<Vec<Cidr>, ConfigError> {
        let pools = self.lb_pool.as_deref().into_iter().flat_map(|p| p.split(','));
        pools.map(|s| Cidr::parse("--lb-pool", s.trim())).collect()
    }

    /// The ClusterIP of `default/kubernetes`: the first address of the primary range.
    pub fn kubernetes_service_ip(&self) -> String {
        self.service_cidrs().ok().and_then(|c| c.first().map(|c| c.nth(1).to_string())).unwrap_or_default()
    }

    /// The ClusterIP of `kube-system/kube-dns`: the tenth address of the primary range.
    pub fn dns_service_ip(&self) -> Option<IpAddr> {
        self.service_cidrs().ok().and_then(|c| c.first().map(|c| c.nth(10)))
    }

    /// The cluster DNS settings for a server on `listen`.
    pub fn dns_config(&self, listen: SocketAddr) -> kplane_dns::DnsConfig {
        kplane_dns::DnsConfig {
            listen,
            cluster_domain: self.cluster_domain.clone(),
            ttl: self.dns_ttl,
            upstreams: self.dns_upstreams.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.service_cidrs()?;
        Cidr::parse("--pod-cidr", &self.pod_cidr)?;
        self.lb_pools()?;
        let d = &self.cluster_domain;
        if d.is_empty() || d.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(invalid("--cluster-domain", d, "must be a DNS domain such as cluster.local"));
        }
        if self.dns_ttl > 3600 {
            return Err(invalid("--dns-ttl", &self.dns_ttl.to_string(), "must be 0-3600"));
        }
        if let Some(node) = &self.node {
            let n = &node.name;
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if n.len() > 253 || !n.split('.').all(label_ok) {
                return Err(invalid("--node-name", n, "must be a lowercase RFC 1123 DNS subdomain, e.g. my-node"));
            }
        }
        if !(1..=1000).contains(&self.max_endpoints_per_slice) {
            let n = self.max_endpoints_per_slice.to_string();
            return Err(invalid("--max-endpoints-per-slice", &n, "must be 1-1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_on_loopback() {
        let c = Config::ephemeral();
        c.validate().expect("defaults are valid");
        assert_eq!(c.kubernetes_service_ip(), "127.96.0.1");
        assert_eq!(c.dns_service_ip(), Some(IpAddr::V4(Ipv4Addr::new(127, 96, 0, 10))));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!("32767-30000".parse::<NodePortRange>().is_err());
        assert!("abc".parse::<NodePortRange>().is_err());
        assert_eq!("30000-32767".parse::<NodePortRange>().ok(), Some(NodePortRange { first: 30000, last: 32767 }));
        let mut c = Config::ephemeral();
        c.service_cidr = "10.0.0.0/8,10.1.0.0/16".into();
        assert!(c.validate().is_err());
        c.service_cidr = "127.96.0.0/12,fd00:10:96::/112".into();
        assert!(c.validate().is_ok());
        c.cluster_domain = "bad..domain".into();
        assert!(c.validate().is_err());
        let mut c = Config::ephemeral();
        c.node = Some(NodeConfig { name: "Bad_Name".into(), ..NodeConfig::default() });
        assert!(c.validate().is_err());
        assert!(Config::ephemeral().node.is_some_and(|n| !n.name.is_empty()));
    }
}
