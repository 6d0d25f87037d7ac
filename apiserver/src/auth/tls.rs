//! The API server's TLS material: a self-signed CA (`ca.crt`/`ca.key`) and the serving certificate it signs
//! (`server.crt`/`server.key`), created on first run, reused and re-issued as needed, and the rustls
//! `ServerConfig` built from them.

use super::{AuthError, ensure_private_dir, read_optional, restrict_mode, write_atomic};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const SERVER_CERT_FILE: &str = "server.crt";
pub const SERVER_KEY_FILE: &str = "server.key";

/// Subject common name of the CA kplane generates.
pub const CA_COMMON_NAME: &str = "kplane-ca";
/// Subject common name of the serving certificate.
pub const SERVER_COMMON_NAME: &str = "kplane-apiserver";

/// Names every serving certificate carries, whatever the caller adds.
pub const DEFAULT_SANS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

const CA_VALIDITY: Duration = Duration::days(3650);
const SERVER_VALIDITY: Duration = Duration::days(365);
/// A certificate that expires within this window is replaced at start-up.
const RENEW_BEFORE: Duration = Duration::days(30);
/// Back-dating of `notBefore`, to tolerate small clock differences between server and clients.
const BACKDATE: Duration = Duration::hours(1);

/// The CA and serving certificate of one API server. The CA private key is not kept in memory.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    server_cert_pem: String,
    server_cert_der: CertificateDer<'static>,
    /// PKCS#8 DER of the serving key.
    server_key_der: Vec<u8>,
    server_names: Vec<String>,
    server_not_after: OffsetDateTime,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("server_names", &self.server_names)
            .field("server_not_after", &self.server_not_after)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Loads the CA and serving certificate from `dir`, creating what is missing.
    ///
    /// - The CA (ECDSA P-256, CN `kplane-ca`, 10 years) is created when `ca.crt` is absent and reused otherwise;
    ///   an existing CA that expires within 30 days is replaced. A CA whose files exist but cannot be used is an
    ///   error, and nothing is overwritten.
    /// - The serving certificate carries [`DEFAULT_SANS`] plus `hosts` (IP literals become IP SANs, anything else
    ///   a DNS SAN; unspecified addresses such as `0.0.0.0` are skipped). It is re-issued with a fresh key when its
    ///   SAN set differs, it expires within 30 days, it no longer chains to the CA, or its files are missing or
    ///   unreadable.
    ///
    /// Keys are written 0600, certificates 0644, `dir` is created 0700. `dir = None` keeps everything in memory.
    pub fn load_or_create(dir: Option<&Path>, hosts: &[String]) -> Result<TlsMaterial, AuthError> {
        let sans = desired_sans(hosts)?;
        // Whole seconds: certificates cannot carry more, and `server_not_after` should equal what the cert says.
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
        let Some(dir) = dir else {
            let ca = CaMaterial::generate(now)?;
            let server = issue_server_cert(&ca, &sans, now)?;
            return Ok(TlsMaterial::assemble(&ca, server));
        };
        ensure_private_dir(dir)?;
        let ca = load_or_create_ca(dir, now)?;
        let server = load_or_issue_server_cert(dir, &ca, &sans, now)?;
        Ok(TlsMaterial::assemble(&ca, server))
    }

    fn assemble(ca: &CaMaterial, server: ServerMaterial) -> TlsMaterial {
        TlsMaterial {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_cert_der: ca.cert_der.clone(),
            server_cert_pem: server.cert_pem,
            server_cert_der: server.cert_der,
            server_key_der: server.key_der,
            server_names: server.sans.iter().map(San::to_string).collect(),
            server_not_after: server.not_after,
        }
    }

    /// A rustls server configuration serving the certificate (no client certificates), ALPN `h2` then
    /// `http/1.1`. It always uses the ring provider, independent of any process-default provider.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, AuthError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert_der.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The CA certificate in PEM, for kubeconfigs and clients.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate in DER, e.g. for a rustls `RootCertStore`.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// The serving certificate in PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The serving certificate's SANs, sorted (DNS names first), e.g. for logging.
    pub fn server_names(&self) -> &[String] {
        &self.server_names
    }

    /// When the serving certificate expires.
    pub fn server_not_after(&self) -> OffsetDateTime {
        self.server_not_after
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A subject alternative name, normalised (DNS names lower-case without trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    fn to_rcgen(&self) -> Result<SanType, AuthError> {
        Ok(match self {
            San::Dns(name) => SanType::DnsName(name.clone().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

fn desired_sans(hosts: &[String]) -> Result<BTreeSet<San>, AuthError> {
    let mut sans = BTreeSet::new();
    for host in DEFAULT_SANS.iter().copied().chain(hosts.iter().map(String::as_str)) {
        if let Some(san) = parse_host(host)? {
            sans.insert(san);
        }
    }
    Ok(sans)
}

/// Parses one host for the serving certificate; `None` for hosts that make no sense in a certificate (empty,
/// unspecified addresses).
fn parse_host(host: &str) -> Result<Option<San>, AuthError> {
    let invalid = |reason: &str| AuthError::InvalidHost { host: host.to_string(), reason: reason.to_string() };
    let trimmed = host.trim();
    let unbracketed = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(trimmed);
    if unbracketed.is_empty() {
        return Ok(None);
    }
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        if ip.is_unspecified() {
            tracing::debug!(host, "not putting an unspecified address in the serving certificate");
            return Ok(None);
        }
        return Ok(Some(San::Ip(ip)));
    }
    let name = unbracketed.strip_suffix('.').unwrap_or(unbracketed).to_ascii_lowercase();
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for (i, label) in name.split('.').enumerate() {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("every DNS label must have 1 to 63 characters"));
        }
        if label == "*" && i == 0 {
            continue;
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid("not an IP address, and a DNS name may only hold letters, digits, '-' and '.'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a DNS label may not start or end with '-'"));
        }
    }
    Ok(Some(San::Dns(name)))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte, so the encoded length is stable
    SerialNumber::from_slice(&bytes)
}

// ---------------------------------------------------------------------------------------------------------------
// CA

struct CaMaterial {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    /// Where the CA came from, for error messages.
    origin: PathBuf,
    /// What an issued certificate needs to know about the CA: its subject and key identifier.
    issuer_params: CertificateParams,
}

impl CaMaterial {
    fn generate(now: OffsetDateTime) -> Result<CaMaterial, AuthError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(CaMaterial {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
            origin: PathBuf::from("<generated CA>"),
            issuer_params: params,
        })
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.issuer_params, &self.key)
    }

    fn write(&self, dir: &Path) -> Result<(), AuthError> {
        // Key first: a crash in between leaves a key without a certificate, which the next run replaces.
        write_atomic(&dir.join(CA_KEY_FILE), self.key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)
    }

    /// Loads an existing CA; errors describe why it cannot be used.
    fn load(cert_path: &Path, cert_pem: &[u8], key_path: &Path, key_pem: &[u8]) -> Result<CaMaterial, AuthError> {
        let bad_cert = |reason: String| AuthError::InvalidTlsFile { path: cert_path.to_path_buf(), reason };
        let bad_key = |reason: String| AuthError::InvalidTlsFile { path: key_path.to_path_buf(), reason };
        let cert_der = first_pem_cert(cert_pem).map_err(bad_cert)?;
        let info = CertInfo::parse(&cert_der).ok_or_else(|| bad_cert("malformed X.509 certificate".into()))?;
        let key_text = std::str::from_utf8(key_pem).map_err(|_| bad_key("not a PEM file".into()))?;
        let key = KeyPair::from_pem(key_text)
            .map_err(|e| bad_key(format!("not a usable PKCS#8 private key (\"PRIVATE KEY\" PEM): {e}")))?;
        if key.subject_public_key_info() != info.spki {
            return Err(bad_key(format!("does not match the public key of {}", cert_path.display())));
        }
        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = info.subject_dn().map_err(bad_cert)?;
        if let Some(ski) = info.subject_key_id {
            issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        }
        let cert_pem = std::str::from_utf8(cert_pem).map_err(|_| bad_cert("not a PEM file".into()))?.to_string();
        Ok(CaMaterial { cert_pem, cert_der, key, origin: cert_path.to_path_buf(), issuer_params })
    }
}

fn load_or_create_ca(dir: &Path, now: OffsetDateTime) -> Result<CaMaterial, AuthError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let cert = read_optional(&cert_path)?;
    let key = read_optional(&key_path)?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            restrict_mode(&key_path, 0o600)?;
            let ca = CaMaterial::load(&cert_path, &cert, &key_path, &key)?;
            let not_after = CertInfo::parse(&ca.cert_der).map(|i| i.not_after);
            match not_after {
                Some(t) if t > now + RENEW_BEFORE => Ok(ca),
                _ => {
                    tracing::warn!(path = %cert_path.display(), "CA expires within 30 days; generating a new CA");
                    let ca = CaMaterial::generate(now)?;
                    ca.write(dir)?;
                    Ok(ca)
                }
            }
        }
        (Some(_), None) => Err(AuthError::InvalidTlsFile {
            path: key_path,
            reason: format!(
                "missing, but {} exists; restore the key or remove the certificate to generate a new CA",
                cert_path.display()
            ),
        }),
        (None, key) => {
            if key.is_some() {
                tracing::warn!(path = %key_path.display(), "CA key without certificate; generating a new CA");
            }
            let ca = CaMaterial::generate(now)?;
            ca.write(dir)?;
            tracing::info!(path = %cert_path.display(), "generated CA");
            Ok(ca)
        }
    }
}

/// The first certificate of a PEM file.
fn first_pem_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    match rustls_pemfile::certs(&mut &pem[..]).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(format!("not a PEM certificate: {e}")),
        None => Err("no PEM certificate in file".to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Serving certificate

struct ServerMaterial {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// PKCS#8, DER and PEM.
    key_der: Vec<u8>,
    key_pem: String,
    sans: BTreeSet<San>,
    not_after: OffsetDateTime,
}

fn issue_server_cert(ca: &CaMaterial, sans: &BTreeSet<San>, now: OffsetDateTime) -> Result<ServerMaterial, AuthError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, SERVER_COMMON_NAME);
    params.distinguished_name = dn;
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + SERVER_VALIDITY;
    params.serial_number = Some(random_serial());
    let cert: Certificate = params.signed_by(&key, &ca.issuer())?;
    // A CA loaded from disk is rebuilt from its parsed subject; make sure what we issued really chains to it.
    verify_chain(&ca.cert_der, cert.der(), now).map_err(|e| AuthError::InvalidTlsFile {
        path: ca.origin.clone(),
        reason: format!("a certificate issued with this CA does not verify against it: {e}"),
    })?;
    Ok(ServerMaterial {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
        sans: sans.clone(),
        not_after: params.not_after,
    })
}

fn load_or_issue_server_cert(
    dir: &Path,
    ca: &CaMaterial,
    sans: &BTreeSet<San>,
    now: OffsetDateTime,
) -> Result<ServerMaterial, AuthError> {
    let cert_path = dir.join(SERVER_CERT_FILE);
    let key_path = dir.join(SERVER_KEY_FILE);
    let cert = read_optional(&cert_path)?;
    let key = read_optional(&key_path)?;
    if key.is_some() {
        restrict_mode(&key_path, 0o600)?;
    }
    let reason = match (cert, key) {
        (Some(cert), Some(key)) => match check_server_cert(ca, &cert, &key, sans, now) {
            Ok(existing) => {
                tracing::debug!(path = %cert_path.display(), "reusing serving certificate");
                return Ok(existing);
            }
            Err(reason) => reason,
        },
        _ => "no serving certificate yet".to_string(),
    };
    tracing::info!(path = %cert_path.display(), reason, "issuing serving certificate");
    let server = issue_server_cert(ca, sans, now)?;
    write_atomic(&key_path, server.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, server.cert_pem.as_bytes(), 0o644)?;
    Ok(server)
}

/// Why an existing serving certificate must be replaced, or the reusable material.
fn check_server_cert(
    ca: &CaMaterial,
    cert_pem: &[u8],
    key_pem: &[u8],
    sans: &BTreeSet<San>,
    now: OffsetDateTime,
) -> Result<ServerMaterial, String> {
    let cert_der = first_pem_cert(cert_pem)?;
    let info = CertInfo::parse(&cert_der).ok_or("malformed serving certificate")?;
    let key_text = std::str::from_utf8(key_pem).map_err(|_| "serving key is not PEM")?;
    let key = KeyPair::from_pem(key_text).map_err(|e| format!("serving key unusable: {e}"))?;
    if key.subject_public_key_info() != info.spki {
        return Err("serving key does not match the certificate".into());
    }
    match &info.sans {
        Some(existing) if existing == sans => {}
        Some(existing) => {
            let added: Vec<String> = sans.difference(existing).map(San::to_string).collect();
            let removed: Vec<String> = existing.difference(sans).map(San::to_string).collect();
            return Err(format!("SANs changed (added {added:?}, removed {removed:?})"));
        }
        None => return Err("certificate has SANs kplane does not manage".into()),
    }
    if info.not_after <= now + RENEW_BEFORE {
        return Err(format!("expires {}", info.not_after));
    }
    verify_chain(&ca.cert_der, &cert_der, now).map_err(|e| format!("does not verify against the CA: {e}"))?;
    let cert_pem = std::str::from_utf8(cert_pem).map_err(|_| "serving certificate is not PEM")?.to_string();
    Ok(ServerMaterial {
        cert_pem,
        cert_der,
        key_der: key.serialize_der(),
        key_pem: key_text.to_string(),
        sans: sans.clone(),
        not_after: info.not_after,
    })
}

/// Verifies `cert` as a TLS server certificate for `localhost` issued by `ca` at time `at`.
fn verify_chain(ca: &CertificateDer<'_>, cert: &CertificateDer<'_>, at: OffsetDateTime) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone().into_owned()).map_err(|e| e.to_string())?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().map_err(|e| e.to_string())?;
    let secs = u64::try_from(at.unix_timestamp()).map_err(|_| "time before 1970".to_string())?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    verifier.verify_server_cert(cert, &[], &name, &[], now).map(|_| ()).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// Minimal X.509 reading: just the fields load_or_create needs (rcgen can only parse certificates with its
// `x509-parser` feature, which would pull in another dependency tree).

struct CertInfo {
    /// The subject `Name` as (attribute OID, value tag, value bytes), in order.
    subject: Vec<(Vec<u64>, u8, Vec<u8>)>,
    not_after: OffsetDateTime,
    /// DER of `SubjectPublicKeyInfo`.
    spki: Vec<u8>,
    /// `None` when the certificate has a SAN of a kind other than DNS or IP.
    sans: Option<BTreeSet<San>>,
    subject_key_id: Option<Vec<u8>>,
}

mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    pub const OCTET_STRING: u8 = 0x04;
    pub const INTEGER: u8 = 0x02;
    pub const BOOLEAN: u8 = 0x01;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;

    pub struct Tlv<'a> {
        pub tag: u8,
        pub body: &'a [u8],
        /// Header and body.
        pub raw: &'a [u8],
    }

    /// Reads one definite-length TLV with a single-byte tag from the front of `input`.
    pub fn read<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
        let data: &'a [u8] = input;
        let (&tag, rest) = data.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let header = data.len() - rest.len();
        let tlv = Tlv { tag, body: &rest[..len], raw: &data[..header + len] };
        *input = &rest[len..];
        Some(tlv)
    }

    pub fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<Tlv<'a>> {
        read(input).filter(|t| t.tag == tag)
    }

    pub fn oid_components(body: &[u8]) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        let mut acc: u64 = 0;
        for (i, &b) in body.iter().enumerate() {
            acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                if out.is_empty() {
                    let first = (acc / 40).min(2);
                    out.push(first);
                    out.push(acc - first * 40);
                } else {
                    out.push(acc);
                }
                acc = 0;
            } else if i == body.len() - 1 {
                return None;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];

impl CertInfo {
    fn parse(cert: &[u8]) -> Option<CertInfo> {
        use der::*;
        let mut input = cert;
        let certificate = expect(&mut input, SEQUENCE)?;
        let mut c = certificate.body;
        let tbs = expect(&mut c, SEQUENCE)?;
        let mut t = tbs.body;
        let mut serial = read(&mut t)?;
        if serial.tag == 0xa0 {
            serial = read(&mut t)?;
        }
        if serial.tag != INTEGER {
            return None;
        }
        expect(&mut t, SEQUENCE)?; // signature algorithm
        expect(&mut t, SEQUENCE)?; // issuer
        let validity = expect(&mut t, SEQUENCE)?;
        let subject = expect(&mut t, SEQUENCE)?;
        let spki = expect(&mut t, SEQUENCE)?;
        let mut extensions = None;
        while !t.is_empty() {
            let item = read(&mut t)?;
            if item.tag == 0xa3 {
                extensions = Some(item.body);
            }
        }

        let mut v = validity.body;
        read(&mut v)?; // notBefore
        let not_after = parse_time(&read(&mut v)?)?;

        let mut subject_attrs = Vec::new();
        let mut names = subject.body;
        while !names.is_empty() {
            let rdn = expect(&mut names, SET)?;
            let mut atvs = rdn.body;
            while !atvs.is_empty() {
                let atv = expect(&mut atvs, SEQUENCE)?;
                let mut a = atv.body;
                let oid = oid_components(expect(&mut a, OID)?.body)?;
                let value = read(&mut a)?;
                subject_attrs.push((oid, value.tag, value.body.to_vec()));
            }
        }

        let mut sans = Some(BTreeSet::new());
        let mut subject_key_id = None;
        if let Some(mut e) = extensions {
            let list = expect(&mut e, SEQUENCE)?;
            let mut exts = list.body;
            while !exts.is_empty() {
                let ext = expect(&mut exts, SEQUENCE)?;
                let mut x = ext.body;
                let oid = expect(&mut x, OID)?;
                let mut value = read(&mut x)?;
                if value.tag == BOOLEAN {
                    value = read(&mut x)?;
                }
                if value.tag != OCTET_STRING {
                    return None;
                }
                let mut inner = value.body;
                if oid.body == OID_SUBJECT_ALT_NAME {
                    let names = expect(&mut inner, SEQUENCE)?;
                    let mut n = names.body;
                    let mut set = BTreeSet::new();
                    let mut supported = true;
                    while !n.is_empty() {
                        let name = read(&mut n)?;
                        match name.tag {
                            0x82 => {
                                let dns = std::str::from_utf8(name.body).ok()?;
                                set.insert(San::Dns(dns.to_ascii_lowercase()));
                            }
                            0x87 => match name.body.len() {
                                4 => {
                                    let octets: [u8; 4] = name.body.try_into().ok()?;
                                    set.insert(San::Ip(IpAddr::from(octets)));
                                }
                                16 => {
                                    let octets: [u8; 16] = name.body.try_into().ok()?;
                                    set.insert(San::Ip(IpAddr::from(octets)));
                                }
                                _ => return None,
                            },
                            _ => supported = false,
                        }
                    }
                    sans = supported.then_some(set);
                } else if oid.body == OID_SUBJECT_KEY_ID {
                    subject_key_id = Some(expect(&mut inner, OCTET_STRING)?.body.to_vec());
                }
            }
        }
        Some(CertInfo { subject: subject_attrs, not_after, spki: spki.raw.to_vec(), sans, subject_key_id })
    }

    /// The subject as an rcgen name, so certificates issued by this CA carry it byte for byte as their issuer.
    fn subject_dn(&self) -> Result<DistinguishedName, String> {
        let mut dn = DistinguishedName::new();
        for (oid, tag, bytes) in &self.subject {
            let text =
                || String::from_utf8(bytes.clone()).map_err(|_| "subject attribute is not valid text".to_string());
            let unsupported = |e: rcgen::Error| format!("unsupported subject attribute value: {e}");
            let value = match *tag {
                0x0c => DnValue::Utf8String(text()?),
                0x13 => DnValue::PrintableString(text()?.try_into().map_err(unsupported)?),
                0x16 => DnValue::Ia5String(text()?.try_into().map_err(unsupported)?),
                0x14 => DnValue::TeletexString(text()?.try_into().map_err(unsupported)?),
                0x1e => DnValue::BmpString(rcgen::string::BmpString::from_utf16be(bytes.clone()).map_err(unsupported)?),
                0x1c => DnValue::UniversalString(
                    rcgen::string::UniversalString::from_utf32be(bytes.clone()).map_err(unsupported)?,
                ),
                other => return Err(format!("unsupported subject attribute type tag 0x{other:02x}")),
            };
            let ty = DnType::from_oid(oid);
            if dn.get(&ty).is_some() {
                return Err("subject repeats an attribute, which kplane cannot reproduce".into());
            }
            dn.push(ty, value);
        }
        Ok(dn)
    }
}

fn parse_time(tlv: &der::Tlv<'_>) -> Option<OffsetDateTime> {
    let s = std::str::from_utf8(tlv.body).ok()?;
    if !s.bytes().take(s.len().saturating_sub(1)).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match tlv.tag {
        der::UTC_TIME => {
            let yy: i32 = s.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        der::GENERALIZED_TIME => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let field = |i: usize| rest.get(i..i + 2).and_then(|f| f.parse::<u8>().ok());
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        fs::read(dir.join(name)).expect("read file")
    }

    fn sans_of(pem: &str) -> BTreeSet<String> {
        let der = first_pem_cert(pem.as_bytes()).expect("pem");
        let info = CertInfo::parse(&der).expect("parse");
        info.sans.expect("sans").iter().map(San::to_string).collect()
    }

    #[test]
    fn ephemeral_material_has_all_sans() {
        let m =
            TlsMaterial::load_or_create(None, &hosts(&["10.1.2.3", "127.96.0.1", "My.Host.", "0.0.0.0", "[fd00::1]"]))
                .expect("create");
        let sans = sans_of(m.server_cert_pem());
        for want in DEFAULT_SANS.iter().copied().chain(["10.1.2.3", "127.96.0.1", "my.host", "fd00::1"]) {
            assert!(sans.contains(want), "missing {want} in {sans:?}");
        }
        assert!(!sans.contains("0.0.0.0"));
        assert_eq!(sans.len(), DEFAULT_SANS.len() + 4);
        assert!(m.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let now = OffsetDateTime::now_utc();
        assert!(m.server_not_after() > now + Duration::days(360));
        let ca = CertInfo::parse(m.ca_der()).expect("ca");
        assert!(ca.not_after > now + Duration::days(3649));
        assert_eq!(ca.subject, vec![(vec![2, 5, 4, 3], 0x0c, CA_COMMON_NAME.as_bytes().to_vec())]);
        // IP literals are IP SANs: verification by IP works.
        verify_chain(m.ca_der(), &m.server_cert_der, now).expect("chain");
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        for bad in ["bad host", "host:6443", "-x.example", "a..b", "https://x"] {
            let r = TlsMaterial::load_or_create(None, &hosts(&[bad]));
            assert!(matches!(r, Err(AuthError::InvalidHost { .. })), "{bad}: {r:?}");
        }
    }

    #[test]
    fn ca_is_reused_and_files_are_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pki");
        let h = hosts(&["192.168.1.10", "127.96.0.1"]);
        let first = TlsMaterial::load_or_create(Some(&dir), &h).expect("first");
        let (ca_crt, ca_key, srv_crt, srv_key) = (
            read(&dir, CA_CERT_FILE),
            read(&dir, CA_KEY_FILE),
            read(&dir, SERVER_CERT_FILE),
            read(&dir, SERVER_KEY_FILE),
        );
        let second = TlsMaterial::load_or_create(Some(&dir), &h).expect("second");
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.server_cert_pem(), second.server_cert_pem(), "unchanged hosts keep the serving cert");
        assert_eq!(read(&dir, CA_CERT_FILE), ca_crt);
        assert_eq!(read(&dir, CA_KEY_FILE), ca_key);
        assert_eq!(read(&dir, SERVER_CERT_FILE), srv_crt);
        assert_eq!(read(&dir, SERVER_KEY_FILE), srv_key);
        assert_eq!(second.ca_pem().as_bytes(), &ca_crt[..]);
        #[cfg(unix)]
        {
            use super::super::tests::mode_of;
            assert_eq!(mode_of(&dir), 0o700);
            assert_eq!(mode_of(&dir.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode_of(&dir.join(SERVER_KEY_FILE)), 0o600);
        }
    }

    #[test]
    fn serving_cert_is_reissued_when_hosts_change() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let a = TlsMaterial::load_or_create(Some(dir), &hosts(&["10.0.0.1"])).expect("a");
        let b = TlsMaterial::load_or_create(Some(dir), &hosts(&["10.0.0.1", "api.example"])).expect("b");
        assert_eq!(a.ca_pem(), b.ca_pem(), "CA is kept");
        assert_ne!(a.server_cert_pem(), b.server_cert_pem());
        assert!(sans_of(b.server_cert_pem()).contains("api.example"));
        assert_eq!(read(dir, SERVER_CERT_FILE), b.server_cert_pem().as_bytes());
        // Removing a host re-issues too.
        let c = TlsMaterial::load_or_create(Some(dir), &hosts(&["api.example"])).expect("c");
        assert_ne!(b.server_cert_pem(), c.server_cert_pem());
        assert!(!sans_of(c.server_cert_pem()).contains("10.0.0.1"));
        // Order and spelling of the same set do not.
        let d = TlsMaterial::load_or_create(Some(dir), &hosts(&["API.example.", "localhost"])).expect("d");
        assert_eq!(c.server_cert_pem(), d.server_cert_pem());
        verify_chain(d.ca_der(), &d.server_cert_der, OffsetDateTime::now_utc()).expect("chain");
    }

    #[test]
    fn serving_cert_expiring_soon_is_reissued() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let first = TlsMaterial::load_or_create(Some(dir), &[]).expect("first");
        // Replace the serving cert with one that expires in 10 days, signed by the same CA.
        let ca = CaMaterial::load(
            &dir.join(CA_CERT_FILE),
            &read(dir, CA_CERT_FILE),
            &dir.join(CA_KEY_FILE),
            &read(dir, CA_KEY_FILE),
        )
        .expect("load ca");
        let now = OffsetDateTime::now_utc();
        let sans = desired_sans(&[]).expect("sans");
        let short = issue_server_cert(&ca, &sans, now - SERVER_VALIDITY + Duration::days(10)).expect("issue");
        write_atomic(&dir.join(SERVER_KEY_FILE), short.key_pem.as_bytes(), 0o600).expect("write key");
        write_atomic(&dir.join(SERVER_CERT_FILE), short.cert_pem.as_bytes(), 0o644).expect("write cert");
        let second = TlsMaterial::load_or_create(Some(dir), &[]).expect("second");
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_ne!(second.server_cert_pem(), short.cert_pem);
        assert!(second.server_not_after() > now + Duration::days(360));
    }

    #[test]
    fn broken_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let first = TlsMaterial::load_or_create(Some(dir), &[]).expect("first");
        // A corrupt serving certificate is simply replaced.
        fs::write(dir.join(SERVER_CERT_FILE), "garbage").expect("write");
        let second = TlsMaterial::load_or_create(Some(dir), &[]).expect("second");
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_ne!(first.server_cert_pem(), second.server_cert_pem());
        // A serving key that does not match is replaced too.
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        fs::write(dir.join(SERVER_KEY_FILE), other.serialize_pem()).expect("write");
        let third = TlsMaterial::load_or_create(Some(dir), &[]).expect("third");
        assert_ne!(second.server_cert_pem(), third.server_cert_pem());
        // A corrupt CA key is an error and nothing is overwritten.
        let ca_crt = read(dir, CA_CERT_FILE);
        fs::write(dir.join(CA_KEY_FILE), "not a key").expect("write");
        let err = TlsMaterial::load_or_create(Some(dir), &[]).expect_err("must fail");
        assert!(matches!(err, AuthError::InvalidTlsFile { .. }), "{err}");
        assert_eq!(read(dir, CA_CERT_FILE), ca_crt);
        assert_eq!(read(dir, CA_KEY_FILE), b"not a key");
        // A CA key that belongs to another certificate is an error too.
        fs::write(dir.join(CA_KEY_FILE), other.serialize_pem()).expect("write");
        let err = TlsMaterial::load_or_create(Some(dir), &[]).expect_err("must fail");
        assert!(err.to_string().contains("does not match"), "{err}");
        // A certificate without its key: error, certificate kept.
        fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
        let err = TlsMaterial::load_or_create(Some(dir), &[]).expect_err("must fail");
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(read(dir, CA_CERT_FILE), ca_crt);
    }

    #[test]
    fn foreign_ca_with_richer_subject_is_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, DnValue::PrintableString("DE".to_string().try_into().expect("printable")));
        dn.push(DnType::OrganizationName, "Example Org");
        dn.push(DnType::CommonName, "Example Root");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("self-sign");
        fs::write(dir.join(CA_CERT_FILE), cert.pem()).expect("write");
        fs::write(dir.join(CA_KEY_FILE), key.serialize_pem()).expect("write");
        let m = TlsMaterial::load_or_create(Some(dir), &[]).expect("load");
        assert_eq!(m.ca_pem(), cert.pem());
        verify_chain(m.ca_der(), &m.server_cert_der, OffsetDateTime::now_utc()).expect("chain");
    }

    fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("add root");
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Serves one TLS connection per name on a loopback listener and returns (negotiated ALPN, payload) per client.
    async fn handshake(
        material: &TlsMaterial,
        client: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> std::io::Result<(Option<Vec<u8>>, Vec<u8>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config().expect("server config"));
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            tls.write_all(b"hello").await?;
            tls.shutdown().await?;
            std::io::Result::Ok(())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(client);
        let result = async {
            let mut tls = connector.connect(name, tcp).await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok((alpn, buf))
        }
        .await;
        let _ = server.await;
        result
    }

    #[tokio::test]
    async fn tls_handshake_over_loopback() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = TlsMaterial::load_or_create(Some(tmp.path()), &hosts(&["127.96.0.1"])).expect("material");
        let client = client_config(m.ca_der(), &[b"h2", b"http/1.1"]);

        let by_name = ServerName::try_from("localhost").expect("name");
        let (alpn, body) = handshake(&m, client.clone(), by_name).await.expect("handshake localhost");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(body, b"hello");

        let by_ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let (_, body) = handshake(&m, client.clone(), by_ip).await.expect("handshake 127.0.0.1");
        assert_eq!(body, b"hello");

        let http1 = client_config(m.ca_der(), &[b"http/1.1"]);
        let (alpn, _) = handshake(&m, http1, ServerName::try_from("kubernetes.default.svc").expect("name"))
            .await
            .expect("handshake http/1.1");
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

        // A name outside the SANs, or a client trusting another CA, fails.
        let wrong = ServerName::try_from("example.com").expect("name");
        assert!(handshake(&m, client, wrong).await.is_err());
        let other = TlsMaterial::load_or_create(None, &[]).expect("other");
        let stranger = client_config(other.ca_der(), &[]);
        assert!(handshake(&m, stranger, ServerName::try_from("localhost").expect("name")).await.is_err());
    }
}
