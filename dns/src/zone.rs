//! The cluster zone: answers one question (name, type) from [`ClusterData`] with records, NXDOMAIN or
//! NODATA plus SOA, as the CoreDNS `kubernetes` plugin does (`handler.go`, `kubernetes.go`, `parse.go`,
//! `reverse.go`, `ns.go`, `plugin/backend_lookup.go`) for the kubernetes/dns schema 1.1.0. Pure: no IO,
//! no wire format; `server.rs` turns an [`Answer`] into a DNS message.

use crate::data::{ClusterData, Key, Kind, ServiceEntry};
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `dns-version.<zone>` TXT: the schema version served.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` TXT record (CoreDNS hard-codes it).
const VERSION_TTL: u32 = 28800;
/// Services with more endpoints than this get no prepared endpoint names (see [`Zone::names_of`]).
pub const MAX_PREPARED_ENDPOINTS: usize = 256;
/// CNAME chains longer than this stop being followed (`maxCnameChainLength`).
const MAX_CNAME_CHAIN: usize = 10;

/// Question types the zone tells apart; anything else is `Other` and answered as CoreDNS's default branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Cname,
    Ns,
    Soa,
    Ptr,
    Mx,
    Txt,
    Srv,
    Axfr,
    Ixfr,
    Other(u16),
}

/// The response codes the zone produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    NxDomain,
    ServFail,
    Refused,
}

/// Record data, names as FQDNs with the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Ns(String),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Txt(String),
    Soa { mname: String, rname: String, serial: u32, refresh: i32, retry: i32, expire: i32, minimum: u32 },
}

/// One resource record of class IN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

/// Zone-file form, e.g. `svc.ns.svc.cluster.local. 5 IN A 10.0.0.1` (tests compare these).
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} IN ", self.name, self.ttl)?;
        match &self.data {
            RData::A(ip) => write!(f, "A {ip}"),
            RData::Aaaa(ip) => write!(f, "AAAA {ip}"),
            RData::Cname(t) => write!(f, "CNAME {t}"),
            RData::Ptr(t) => write!(f, "PTR {t}"),
            RData::Ns(t) => write!(f, "NS {t}"),
            RData::Srv { priority, weight, port, target } => write!(f, "SRV {priority} {weight} {port} {target}"),
            RData::Txt(t) => write!(f, "TXT {t}"),
            RData::Soa { mname, rname, serial, refresh, retry, expire, minimum } => {
                write!(f, "SOA {mname} {rname} {serial} {refresh} {retry} {expire} {minimum}")
            }
        }
    }
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    pub answers: Vec<Record>,
    /// The SOA, for negative answers.
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
    /// An ExternalName CNAME target outside the zone: resolve it upstream for the same type and append.
    pub chase: Option<String>,
}

/// What the zone says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is ours: this is the answer.
    Answer(Answer),
    /// Not ours (outside the zone, or a reverse name no Service or endpoint has): forward it.
    NotOurs,
}

/// Settings of the zone.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain, e.g. `cluster.local` (any case, with or without the trailing dot).
    pub domain: String,
    /// TTL of every answer (CoreDNS `ttl`, default 5).
    pub ttl: u32,
    /// The addresses this server answers on: `ns.dns.<zone>` when no endpoint of a Service has them.
    pub local_addrs: Vec<SocketAddr>,
}

/// The cluster zone at one moment.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower case, without the trailing dot.
    domain: String,
    ttl: u32,
    local_addrs: Vec<SocketAddr>,
    data: ClusterData,
    serial: u32,
    synced: bool,
}

/// A name that does not exist (CoreDNS `errNoItems`, `errNsNotExposed`, `errInvalidRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameError;

/// What a name holds (CoreDNS `msg.Service`): an address, an alias or a text, with a port and the
/// name the entry lives at (the SRV target).
#[derive(Debug, Clone)]
struct Entry {
    host: Host,
    port: i32,
    key: String,
}

#[derive(Debug, Clone)]
enum Host {
    Ip(IpAddr),
    Name(String),
    Text(String),
}

type Found = Result<Vec<Entry>, NameError>;

/// The parts of a name under the zone (`recordRequest`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Request<'a> {
    port: &'a str,
    protocol: &'a str,
    endpoint: &'a str,
    service: &'a str,
    namespace: &'a str,
    /// `svc`, `pod`, or empty for the apex, `svc.<zone>` and `pod.<zone>`.
    pod_or_svc: &'a str,
}

impl Zone {
    /// A zone over `data`. `serial` is the SOA serial (the Unix time of the last change); until
    /// `synced`, names that would be NXDOMAIN are SERVFAIL.
    pub fn new(config: &ZoneConfig, data: ClusterData, serial: u32, synced: bool) -> Self {
        Zone {
            domain: config.domain.trim_end_matches('.').to_ascii_lowercase(),
            ttl: config.ttl,
            local_addrs: config.local_addrs.clone(),
            data,
            serial,
            synced,
        }
    }

    /// Whether every reflector had listed when this zone was built.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The cluster domain, lower case, without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` is the cluster domain or under it (these are never forwarded).
    pub fn contains(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').as_bytes();
        let domain = self.domain.as_bytes();
        match name.len().checked_sub(domain.len()) {
            Some(0) => name.eq_ignore_ascii_case(domain),
            Some(cut) => name[cut - 1] == b'.' && name[cut..].eq_ignore_ascii_case(domain),
            None => false,
        }
    }

    /// The indexes, to update in place (then [`Zone::touch`]).
    pub fn data_mut(&mut self) -> &mut ClusterData {
        &mut self.data
    }

    pub fn data(&self) -> &ClusterData {
        &self.data
    }

    /// Record a change at `serial` (the SOA serial: Unix seconds of the last change).
    pub fn touch(&mut self, serial: u32) {
        self.serial = serial;
    }

    pub fn set_synced(&mut self, synced: bool) {
        self.synced = synced;
    }

    /// The names whose answers depend only on the Service `key`, its EndpointSlices and its
    /// namespace: the Service name, `_port._proto.` names of its named ports, and its endpoint
    /// names (at most [`MAX_PREPARED_ENDPOINTS`]). Lower case, fully qualified. ExternalName
    /// Services have none (their CNAME may lead to other Services).
    pub fn names_of(&self, key: &Key) -> Vec<String> {
        let Some(svc) = self.data.services.get(key) else { return Vec::new() };
        if !self.data.namespaces.contains(&key.0) || matches!(svc.kind, Kind::ExternalName(_)) {
            return Vec::new();
        }
        let name = self.service_name(key);
        let groups = self.data.endpoints.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut names = vec![name.clone()];
        let ports = svc.ports.iter().chain(groups.iter().flat_map(|g| &g.ports));
        for p in ports.filter(|p| !p.name.is_empty() && !p.protocol.is_empty()) {
            let port = format!("_{}._{}.{name}", p.name, p.protocol).to_ascii_lowercase();
            if !names.contains(&port) {
                names.push(port);
            }
        }
        let endpoints: Vec<&str> = groups.iter().flat_map(|g| &g.endpoints).map(|e| e.hostname.as_str()).collect();
        if endpoints.len() <= MAX_PREPARED_ENDPOINTS {
            let start = names.len();
            for host in endpoints {
                let ep = format!("{host}.{name}");
                if !names[start..].contains(&ep) {
                    names.push(ep);
                }
            }
        }
        names
    }

    /// Answer `qtype` for `qname` (any case; the answers keep the question's spelling).
    pub fn lookup(&self, qname: &str, qtype: QType) -> Lookup {
        let owner = fqdn(qname);
        let lower = owner.to_ascii_lowercase();
        if let Some(ip) = reverse_ip(&lower) {
            return self.reverse(&owner, ip, qtype);
        }
        if !self.contains(&lower) {
            return Lookup::NotOurs;
        }
        let apex = lower.trim_end_matches('.') == self.domain;
        let mut extra = Vec::new();
        let mut chase = None;
        let result: Result<Vec<Record>, NameError> = match qtype {
            QType::A | QType::Aaaa => self.address(&owner, qtype, &mut Vec::new(), &mut chase),
            QType::Txt => self.txt(&owner),
            QType::Cname => self.cname(&owner),
            QType::Srv => self.srv(&owner, &mut extra),
            QType::Ptr => self.records(self.base(&lower)).map(|_| Vec::new()),
            QType::Mx => self.services(&lower, qtype).map(|_| Vec::new()),
            QType::Soa if apex => Ok(vec![self.soa()]),
            QType::Soa => Ok(Vec::new()),
            QType::Axfr | QType::Ixfr => return Lookup::Answer(refused()),
            QType::Ns if apex => Ok(self.ns(&owner, &mut extra)),
            QType::Ns | QType::Other(_) => {
                self.address(&owner, QType::A, &mut Vec::new(), &mut None).map(|_| Vec::new())
            }
        };
        Lookup::Answer(match result {
            Err(NameError) if !self.synced => self.negative(Rcode::ServFail),
            Err(NameError) => self.negative(Rcode::NxDomain),
            Ok(records) if records.is_empty() && chase.is_none() => self.negative(Rcode::NoError),
            Ok(answers) => Answer { rcode: Rcode::NoError, answers, authority: Vec::new(), additionals: extra, chase },
        })
    }

    fn negative(&self, rcode: Rcode) -> Answer {
        Answer { rcode, answers: Vec::new(), authority: vec![self.soa()], additionals: Vec::new(), chase: None }
    }

    /// `plugin.SOA`: TTL min(ttl, 300), minimum = ttl.
    fn soa(&self) -> Record {
        Record {
            name: format!("{}.", self.domain),
            ttl: self.ttl.min(300),
            data: RData::Soa {
                mname: format!("ns.dns.{}.", self.domain),
                rname: format!("hostmaster.{}.", self.domain),
                serial: self.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: self.ttl,
            },
        }
    }

    /// `plugin.A` / `plugin.AAAA`: addresses of the family, following in-zone CNAMEs.
    fn address(
        &self,
        owner: &str,
        qtype: QType,
        chain: &mut Vec<String>,
        chase: &mut Option<String>,
    ) -> Result<Vec<Record>, NameError> {
        let lower = owner.to_ascii_lowercase();
        let entries = self.services(&lower, qtype)?;
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            match entry.host {
                Host::Name(target) => {
                    let target = fqdn(&target);
                    let target_lower = target.to_ascii_lowercase();
                    if target_lower == lower || chain.len() > MAX_CNAME_CHAIN || chain.contains(&target_lower) {
                        continue;
                    }
                    let cname = Record { name: owner.to_string(), ttl: self.ttl, data: RData::Cname(target.clone()) };
                    if self.contains(&target_lower) {
                        chain.push(target_lower);
                        if let Ok(next) = self.address(&target, qtype, chain, chase)
                            && !next.is_empty()
                        {
                            records.push(cname);
                            records.extend(next);
                        }
                        continue;
                    }
                    records.push(cname);
                    *chase = Some(target);
                }
                Host::Ip(IpAddr::V4(ip)) if qtype == QType::A && seen.insert(entry.host_ip()) => {
                    records.push(Record { name: owner.to_string(), ttl: self.ttl, data: RData::A(ip) });
                }
                Host::Ip(IpAddr::V6(ip)) if qtype == QType::Aaaa && seen.insert(entry.host_ip()) => {
                    records.push(Record { name: owner.to_string(), ttl: self.ttl, data: RData::Aaaa(ip) });
                }
                Host::Ip(_) | Host::Text(_) => {}
            }
        }
        Ok(records)
    }

    /// `plugin.TXT`: only `dns-version.<zone>` has one.
    fn txt(&self, owner: &str) -> Result<Vec<Record>, NameError> {
        let entries = self.services(&owner.to_ascii_lowercase(), QType::Txt)?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match e.host {
                Host::Text(t) => Some(Record { name: owner.to_string(), ttl: VERSION_TTL, data: RData::Txt(t) }),
                _ => None,
            })
            .collect())
    }

    /// `plugin.CNAME`: an ExternalName's target.
    fn cname(&self, owner: &str) -> Result<Vec<Record>, NameError> {
        let entries = self.services(&owner.to_ascii_lowercase(), QType::Cname)?;
        Ok(match entries.into_iter().next() {
            Some(Entry { host: Host::Name(target), .. }) => {
                vec![Record { name: owner.to_string(), ttl: self.ttl, data: RData::Cname(fqdn(&target)) }]
            }
            _ => Vec::new(),
        })
    }

    /// `plugin.SRV`: priority 0, weight floor(100 / entries) (at least 1), target the entry's name,
    /// with its address in Additional.
    fn srv(&self, owner: &str, extra: &mut Vec<Record>) -> Result<Vec<Record>, NameError> {
        let entries = self.services(&owner.to_ascii_lowercase(), QType::Srv)?;
        let weight = u16::try_from(100 / entries.len().max(1)).unwrap_or(1).max(1);
        let mut records = Vec::new();
        let mut seen_srv = HashSet::new();
        let mut seen_addr = HashSet::new();
        for entry in &entries {
            let (Host::Ip(ip), Ok(port)) = (&entry.host, u16::try_from(entry.port)) else { continue };
            if seen_srv.insert((entry.key.clone(), port)) {
                let data = RData::Srv { priority: 0, weight, port, target: entry.key.clone() };
                records.push(Record { name: owner.to_string(), ttl: self.ttl, data });
            }
            if seen_addr.insert((entry.key.clone(), *ip)) {
                extra.push(self.address_record(&entry.key, *ip));
            }
        }
        Ok(records)
    }

    /// `plugin.NS` at the apex: `ns.dns.<zone>` (or the DNS Service's names) with addresses as glue.
    fn ns(&self, owner: &str, extra: &mut Vec<Record>) -> Vec<Record> {
        let mut records = Vec::new();
        for (name, ip) in self.ns_addrs() {
            extra.push(self.address_record(&name, ip));
            let ns = Record { name: owner.to_string(), ttl: self.ttl, data: RData::Ns(name) };
            if !records.contains(&ns) {
                records.push(ns);
            }
        }
        records
    }

    fn address_record(&self, name: &str, ip: IpAddr) -> Record {
        let data = match ip {
            IpAddr::V4(ip) => RData::A(ip),
            IpAddr::V6(ip) => RData::Aaaa(ip),
        };
        Record { name: name.to_string(), ttl: self.ttl, data }
    }

    /// `nsAddrs`: the Services with an endpoint at this server's address (IP and port: in kplane other
    /// servers share the IP), else the addresses themselves.
    fn ns_addrs(&self) -> Vec<(String, IpAddr)> {
        let mut out = Vec::new();
        let mut found = false;
        for (key, groups) in &self.data.endpoints {
            let ours = groups.iter().any(|g| {
                g.ports.iter().any(|p| self.local_addrs.iter().any(|l| i32::from(l.port()) == p.port))
                    && g.endpoints.iter().any(|e| self.local_addrs.iter().any(|l| l.ip() == e.ip))
            });
            let Some(svc) = self.data.services.get(key).filter(|_| ours) else { continue };
            found = true;
            let name = self.service_name(key);
            match &svc.kind {
                Kind::Headless => {
                    for ep in groups.iter().flat_map(|g| &g.endpoints) {
                        out.push((format!("{}.{name}", ep.hostname), ep.ip));
                    }
                }
                Kind::ClusterIp(ips) => out.extend(ips.iter().map(|ip| (name.clone(), *ip))),
                Kind::ExternalName(_) => {}
            }
        }
        if !found {
            out = self.local_addrs.iter().map(|a| (format!("ns.dns.{}.", self.domain), a.ip())).collect();
        }
        out
    }

    /// `<svc>.<ns>.svc.<zone>.`
    fn service_name(&self, (ns, svc): &Key) -> String {
        format!("{svc}.{ns}.svc.{}.", self.domain)
    }

    /// `Kubernetes.Services`: the entries at a (lower-case, fully qualified) name for a question type.
    fn services(&self, name: &str, qtype: QType) -> Found {
        let base = self.base(name);
        if qtype == QType::Txt {
            if base == "dns-version" {
                return Ok(vec![Entry { host: Host::Text(SCHEMA_VERSION.into()), port: 0, key: name.into() }]);
            }
            // The name exists with no TXT: NODATA. CoreDNS also answers NXDOMAIN for the apex and
            // `<ns>.svc` here; kplane keeps NODATA for every existing name (spec §5.2).
            return self.records(base).map(|_| Vec::new());
        }
        if base == "ns.dns" {
            let want_v4 = qtype == QType::A;
            let want_v6 = qtype == QType::Aaaa;
            return Ok(self
                .ns_addrs()
                .into_iter()
                .filter(|(_, ip)| (ip.is_ipv4() && want_v4) || (ip.is_ipv6() && want_v6))
                .map(|(_, ip)| Entry { host: Host::Ip(ip), port: 0, key: name.into() })
                .collect());
        }
        let entries = self.records(base)?;
        if qtype != QType::Srv {
            return Ok(entries);
        }
        // ExternalName services have no SRV records.
        Ok(entries.into_iter().filter(|e| !matches!(e.host, Host::Name(_))).collect())
    }

    /// The part of a name left of the zone ("" for the apex).
    fn base<'a>(&self, name: &'a str) -> &'a str {
        let name = name.trim_end_matches('.');
        name.strip_suffix(self.domain.as_str()).map(|b| b.trim_end_matches('.')).unwrap_or(name)
    }

    /// `Kubernetes.Records`.
    fn records(&self, base: &str) -> Found {
        let r = parse(base)?;
        if r.pod_or_svc.is_empty() {
            return Ok(Vec::new());
        }
        if !self.data.namespaces.contains(r.namespace) {
            return Err(NameError);
        }
        if r.pod_or_svc == "pod" { self.find_pods(&r) } else { self.find_services(&r) }
    }

    /// `findPods`, mode `verified`: `a-b-c-d.<ns>.pod` exists if a pod in `<ns>` has that IP.
    fn find_pods(&self, r: &Request<'_>) -> Found {
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let dashes = r.service.matches('-').count();
        let text = if dashes == 3 && !r.service.contains("--") {
            r.service.replace('-', ".")
        } else {
            r.service.replace('-', ":")
        };
        let ip: IpAddr = text.parse().map_err(|_| NameError)?;
        match self.data.pod_ips.get(&ip) {
            Some(namespaces) if namespaces.contains_key(r.namespace) => Ok(vec![Entry {
                host: Host::Ip(ip),
                port: 0,
                key: format!("{}.{}.pod.{}.", r.service, r.namespace, self.domain),
            }]),
            _ => Err(NameError),
        }
    }

    /// `findServices`.
    fn find_services(&self, r: &Request<'_>) -> Found {
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let key = (r.namespace.to_string(), r.service.to_string());
        let Some(svc) = self.data.services.get(&key) else { return Err(NameError) };
        let name = self.service_name(&key);
        match &svc.kind {
            Kind::ExternalName(target) => {
                if !r.endpoint.is_empty() || !r.port.is_empty() || !r.protocol.is_empty() {
                    return Err(NameError);
                }
                // An IP is not a CNAME target: the name does not exist.
                if target.is_empty() || target.trim_end_matches('.').parse::<IpAddr>().is_ok() {
                    return Err(NameError);
                }
                Ok(vec![Entry { host: Host::Name(target.clone()), port: 0, key: name }])
            }
            Kind::Headless => self.endpoint_entries(r, &key, &name),
            Kind::ClusterIp(_) if !r.endpoint.is_empty() => self.endpoint_entries(r, &key, &name),
            Kind::ClusterIp(ips) => cluster_ip_entries(r, svc, ips, &name),
        }
    }

    /// Endpoints of a headless Service, or `<endpoint>.<svc>` of any Service: one entry per ready
    /// address and matching port.
    fn endpoint_entries(&self, r: &Request<'_>, key: &Key, name: &str) -> Found {
        let mut out = Vec::new();
        for group in self.data.endpoints.get(key).into_iter().flatten() {
            for ep in &group.endpoints {
                if !r.endpoint.is_empty() && !r.endpoint.eq_ignore_ascii_case(&ep.hostname) {
                    continue;
                }
                for p in &group.ports {
                    if matches_port(r, &p.name, &p.protocol) {
                        out.push(Entry { host: Host::Ip(ep.ip), port: p.port, key: format!("{}.{name}", ep.hostname) });
                    }
                }
            }
        }
        if out.is_empty() { Err(NameError) } else { Ok(out) }
    }

    /// PTR under `in-addr.arpa` / `ip6.arpa` (`reverse.go`): a ClusterIP gives its Service (first match);
    /// otherwise every Service endpoint with the IP. Anything else falls through to the upstreams.
    fn reverse(&self, owner: &str, ip: IpAddr, qtype: QType) -> Lookup {
        if qtype != QType::Ptr {
            return Lookup::NotOurs;
        }
        let targets: Vec<String> = match self.data.service_ips.get(&ip) {
            Some(key) => vec![self.service_name(key)],
            None => {
                let mut t: Vec<String> = Vec::new();
                for (key, hostname) in self.data.endpoint_ips.get(&ip).into_iter().flat_map(|at| at.keys()) {
                    let name = format!("{hostname}.{}", self.service_name(key));
                    if !t.contains(&name) {
                        t.push(name);
                    }
                }
                t
            }
        };
        if targets.is_empty() {
            return Lookup::NotOurs;
        }
        let answers = targets
            .into_iter()
            .map(|t| Record { name: owner.to_string(), ttl: self.ttl, data: RData::Ptr(t) })
            .collect();
        Lookup::Answer(Answer {
            rcode: Rcode::NoError,
            answers,
            authority: Vec::new(),
            additionals: Vec::new(),
            chase: None,
        })
    }
}

impl Entry {
    fn host_ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            _ => None,
        }
    }
}

/// The ClusterIP branch of `findServices`: one entry per matching port and IP.
fn cluster_ip_entries(r: &Request<'_>, svc: &ServiceEntry, ips: &[IpAddr], name: &str) -> Found {
    let mut found = false;
    let mut out = Vec::new();
    for p in &svc.ports {
        if !matches_port(r, &p.name, &p.protocol) {
            continue;
        }
        found = true;
        out.extend(ips.iter().map(|ip| Entry { host: Host::Ip(*ip), port: p.port, key: name.to_string() }));
    }
    if found { Ok(out) } else { Err(NameError) }
}

/// `matchPortAndProtocol`: empty request parts are wildcards; case-insensitive.
fn matches_port(r: &Request<'_>, name: &str, protocol: &str) -> bool {
    (r.port.is_empty() || r.port.eq_ignore_ascii_case(name))
        && (r.protocol.is_empty() || r.protocol.eq_ignore_ascii_case(protocol))
}

/// `parseRequest` (no multicluster, no zonal names): `[_port._proto.|endpoint.]svc.ns.svc`, `pod.ns.pod`.
fn parse(base: &str) -> Result<Request<'_>, NameError> {
    let mut r = Request::default();
    if base.is_empty() || base == "svc" || base == "pod" {
        return Ok(r);
    }
    let mut segs: Vec<&str> = base.split('.').collect();
    let Some(kind) = segs.pop() else { return Ok(r) };
    if kind != "svc" && kind != "pod" {
        return Err(NameError);
    }
    r.pod_or_svc = kind;
    let Some(ns) = segs.pop() else { return Ok(r) };
    r.namespace = ns;
    let Some(svc) = segs.pop() else { return Ok(r) };
    r.service = svc;
    match segs.as_slice() {
        [] => {}
        [endpoint] => r.endpoint = endpoint,
        [port, protocol] => {
            r.port = port.strip_prefix('_').unwrap_or(port);
            r.protocol = protocol.strip_prefix('_').unwrap_or(protocol);
        }
        _ => return Err(NameError),
    }
    Ok(r)
}

fn refused() -> Answer {
    Answer { rcode: Rcode::Refused, answers: Vec::new(), authority: Vec::new(), additionals: Vec::new(), chase: None }
}

/// `name` with exactly one trailing dot.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The address a full reverse name stands for (`dnsutil.ExtractAddressFromReverse`), or `None` for any
/// other name, partial reverse names included.
pub fn reverse_ip(name: &str) -> Option<IpAddr> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        for (i, label) in labels.iter().rev().enumerate() {
            if label.is_empty() || label.len() > 3 || !label.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            octets[i] = label.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = lower.strip_suffix(".ip6.arpa")?;
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for label in labels.iter().rev() {
        let [b] = label.as_bytes() else { return None };
        let nibble = (*b as char).to_digit(16)?;
        value = (value << 4) | u128::from(nibble);
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

/// Whether a name is under one of the reverse zones the cluster answers PTRs in.
pub fn is_reverse(name: &str) -> bool {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    ["in-addr.arpa", "ip6.arpa"].iter().any(|z| lower == *z || lower.ends_with(&format!(".{z}")))
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
