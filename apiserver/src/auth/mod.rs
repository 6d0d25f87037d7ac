//! Client authentication material: the error type, the bearer token, and the private-file helpers shared by
//! [`tls`] (CA and serving certificate) and [`kubeconfig`] (handing both to kubectl).

pub mod kubeconfig;
pub mod tls;

pub use kubeconfig::{KubeconfigOutcome, default_kubeconfig_path, write_kubeconfig};
pub use tls::TlsMaterial;

use base64::Engine as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Name of the token file inside the state directory.
pub const TOKEN_FILE: &str = "token";

/// Everything that can go wrong while loading, creating or writing authentication material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// A certificate or key file exists but cannot be used (not PEM, wrong key, not a CA we can sign with, ...).
    #[error("{}: {reason}", path.display())]
    InvalidTlsFile { path: PathBuf, reason: String },
    /// A host passed for the serving certificate is neither an IP address nor a DNS name.
    #[error("invalid host {host:?} for the serving certificate: {reason}")]
    InvalidHost { host: String, reason: String },
    /// Certificate generation or signing failed.
    #[error("generating certificate: {0}")]
    CertGen(#[from] rcgen::Error),
    /// rustls rejected the material (building the server configuration or verifying an issued certificate).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The token file exists but does not hold a usable token.
    #[error("{}: {reason}", path.display())]
    InvalidToken { path: PathBuf, reason: String },
    /// A kubeconfig that kplane does not own cannot be parsed or does not look like a kubeconfig; it was left
    /// untouched.
    #[error("kubeconfig {}: {reason} (file left untouched)", path.display())]
    Kubeconfig { path: PathBuf, reason: String },
}

impl AuthError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        AuthError::Io { op, path: path.to_path_buf(), source }
    }
}

/// Loads the API bearer token from `dir/token`, creating it (32 random bytes, base64url without padding, mode
/// 0600) on first use. `dir = None` returns a fresh in-memory token (ephemeral mode).
pub fn load_or_create_token(dir: Option<&Path>) -> Result<String, AuthError> {
    let Some(dir) = dir else {
        return Ok(generate_token());
    };
    ensure_private_dir(dir)?;
    let path = dir.join(TOKEN_FILE);
    match read_optional(&path)? {
        Some(bytes) => {
            let invalid = |reason: &str| AuthError::InvalidToken { path: path.clone(), reason: reason.to_string() };
            let text = std::str::from_utf8(&bytes).map_err(|_| invalid("token file is not UTF-8"))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(invalid("token file is empty"));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("token must be printable ASCII without whitespace"));
            }
            restrict_mode(&path, 0o600)?;
            Ok(token.to_string())
        }
        None => {
            let token = generate_token();
            write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)?;
            tracing::info!(path = %path.display(), "created API bearer token");
            Ok(token)
        }
    }
}

fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether an `Authorization` header value carries `expected` as a bearer token (`Bearer <token>`, scheme
/// case-insensitive as RFC 7235 says). The token comparison takes time independent of where the tokens differ.
/// An empty `expected` never matches.
pub fn token_matches(expected: &str, authorization_header: Option<&str>) -> bool {
    let Some(header) = authorization_header else {
        return false;
    };
    let header = header.trim();
    let Some((scheme, presented)) = header.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let presented = presented.trim_start();
    if expected.is_empty() || presented.is_empty() {
        return false;
    }
    constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

/// Compares in time that depends only on `expected.len()`.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = expected.len() ^ presented.len();
    for (i, &e) in expected.iter().enumerate() {
        let p = if presented.is_empty() { 0 } else { presented[i % presented.len()] };
        diff |= usize::from(e ^ p);
    }
    std::hint::black_box(diff) == 0
}

/// Reads a file, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, AuthError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuthError::io("reading", path, e)),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory keeps its mode: the caller may have
/// pointed us at a shared directory, and the secrets inside are 0600 anyway.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), AuthError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| AuthError::io("creating directory", dir, e))
}

/// Removes group/other permission bits beyond `mode` from an existing secret file.
pub(crate) fn restrict_mode(path: &Path, mode: u32) -> Result<(), AuthError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = fs::metadata(path).map_err(|e| AuthError::io("inspecting", path, e))?;
        let current = meta.permissions().mode() & 0o777;
        if current & !mode != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{current:o}"), "tightening permissions to {mode:o}");
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| AuthError::io("setting permissions of", path, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Replaces `path` atomically: the contents go to a temporary file (created with `mode`) in the same directory,
/// are synced, and the temporary file is renamed over `path`. A crash leaves either the old or the new file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), AuthError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        AuthError::io("writing", path, io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
    })?;
    let tmp =
        dir.join(format!(".{}.tmp-{}-{:016x}", file_name.to_string_lossy(), std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(AuthError::io("writing", path, e));
    }
    // Make the rename itself durable; failure here only weakens crash safety, never correctness.
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    pub(crate) fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn token_is_stable_and_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let first = load_or_create_token(Some(&dir)).expect("create token");
        let second = load_or_create_token(Some(&dir)).expect("load token");
        assert_eq!(first, second);
        assert_eq!(first.len(), 43, "32 bytes base64url without padding");
        assert!(first.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&dir.join(TOKEN_FILE)), 0o600);
            assert_eq!(mode_of(&dir), 0o700);
        }
    }

    #[test]
    fn ephemeral_tokens_differ() {
        let a = load_or_create_token(None).expect("token");
        let b = load_or_create_token(None).expect("token");
        assert_ne!(a, b);
    }

    #[test]
    fn hand_written_token_is_used_and_bad_one_rejected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(TOKEN_FILE), "my-own-token\n").expect("write");
        assert_eq!(load_or_create_token(Some(tmp.path())).expect("load"), "my-own-token");
        #[cfg(unix)]
        assert_eq!(mode_of(&tmp.path().join(TOKEN_FILE)), 0o600, "loose permissions are tightened");

        fs::write(tmp.path().join(TOKEN_FILE), "\n").expect("write");
        assert!(matches!(load_or_create_token(Some(tmp.path())), Err(AuthError::InvalidToken { .. })));
        fs::write(tmp.path().join(TOKEN_FILE), "two words").expect("write");
        assert!(matches!(load_or_create_token(Some(tmp.path())), Err(AuthError::InvalidToken { .. })));
    }

    #[test]
    fn token_matching() {
        let t = "abc123";
        assert!(token_matches(t, Some("Bearer abc123")));
        assert!(token_matches(t, Some("bearer abc123")));
        assert!(token_matches(t, Some("  Bearer   abc123 ")));
        assert!(!token_matches(t, None));
        assert!(!token_matches(t, Some("")));
        assert!(!token_matches(t, Some("Bearer")));
        assert!(!token_matches(t, Some("Bearer ")));
        assert!(!token_matches(t, Some("abc123")));
        assert!(!token_matches(t, Some("Basic abc123")));
        assert!(!token_matches(t, Some("Bearerabc123")));
        assert!(!token_matches(t, Some("Bearer abc124")));
        assert!(!token_matches(t, Some("Bearer abc12")));
        assert!(!token_matches(t, Some("Bearer abc1234")));
        assert!(!token_matches(t, Some("Bearer abc123 extra")));
        assert!(!token_matches("", Some("Bearer ")));
        assert!(!token_matches("", Some("Bearer x")));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> =
            fs::read_dir(tmp.path()).expect("read_dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }
}
