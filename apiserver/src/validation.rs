//! Generic API validation (names, labels, annotations, finalizers, owner references, IPs and `ObjectMeta`),
//! following apimachinery v0.33 (Kubernetes 1.33) `pkg/util/validation/validation.go` and `ip.go`,
//! `pkg/api/validation/objectmeta.go`, `generic.go`, `path/name.go` and `pkg/apis/meta/v1/validation/validation.go`,
//! plus the finalizer-name rule that `k8s.io/kubernetes/pkg/apis/core/validation` adds for built-in types.
//!
//! The `is_*` functions return upstream's messages (exact text); the `validate_*` functions return
//! [`FieldError`]s with upstream's field paths. Metadata is read from JSON (`serde_json::Value`); a field of the
//! wrong JSON type is reported as a `TypeInvalid` error instead of panicking.

use crate::error::{FieldError, FieldErrorType};
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::LazyLock;

/// `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE_ERROR_MSG: &str = "field is immutable";
/// `IsNegativeErrorMsg`.
pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";
/// `TotalAnnotationSizeLimitB`: 256 KiB of annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * (1 << 10);
/// `DNS1123LabelMaxLength`, `DNS1035LabelMaxLength`, the qualified-name name part and `LabelValueMaxLength`.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// `DNS1123SubdomainMaxLength`.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
const FIELD_MANAGER_MAX_LENGTH: usize = 128;
const MAX_SUBRESOURCE_NAME_LENGTH: usize = 256;
/// `metav1.FinalizerOrphanDependents`.
pub const FINALIZER_ORPHAN_DEPENDENTS: &str = "orphan";
/// `metav1.FinalizerDeleteDependents`.
pub const FINALIZER_DELETE_DEPENDENTS: &str = "foregroundDeletion";
/// `core.FinalizerKubernetes`.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";

/// `ValidateNameFunc`: validates a name; `prefix` is true for a `generateName` prefix (a suffix will be appended).
pub type NameFn = fn(&str, bool) -> Vec<String>;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";

fn anchored(fmt: &str) -> Regex {
    // The patterns are the constants above; they are known to compile.
    Regex::new(&format!("^(?:{fmt})$")).expect("constant regex compiles")
}

static QUALIFIED_NAME_RE: LazyLock<Regex> = LazyLock::new(|| anchored(QUALIFIED_NAME_FMT));
static LABEL_VALUE_RE: LazyLock<Regex> = LazyLock::new(|| anchored(LABEL_VALUE_FMT));
static DNS1123_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1123_LABEL_FMT));
static DNS1123_SUBDOMAIN_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1123_SUBDOMAIN_FMT));
static DNS1035_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1035_LABEL_FMT));

// ---------------------------------------------------------------------------------------------------------------
// Message helpers (`MaxLenError`, `RegexError`, `EmptyError`, `InclusiveRangeError`).

/// `MaxLenError`: `must be no more than 63 characters`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `RegexError`: note upstream's `'a',  or 'b', ` spacing, kept verbatim.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(e);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

/// `EmptyError`.
pub fn empty_error() -> String {
    "must be non-empty".to_string()
}

/// `InclusiveRangeError`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

// ---------------------------------------------------------------------------------------------------------------
// String formats (`pkg/util/validation/validation.go`).

/// `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(is_dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(DNS1123_LABEL_MAX_LENGTH)));
    }
    if !QUALIFIED_NAME_RE.is_match(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or at most 63 alphanumerics, `-`, `_`, `.` starting and ending alphanumeric.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !LABEL_VALUE_RE.is_match(value) {
        errs.push(regex_error(LABEL_VALUE_ERR_MSG, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errs
}

/// `IsDNS1123Label`.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1123_LABEL_RE.is_match(value) {
        if DNS1123_SUBDOMAIN_RE.is_match(value) {
            // A valid subdomain but not a label: length was checked above, so it must be the dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(DNS1123_LABEL_ERR_MSG, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !DNS1123_SUBDOMAIN_RE.is_match(value) {
        errs.push(regex_error(DNS1123_SUBDOMAIN_ERR_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// `IsDNS1035Label`.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1035_LABEL_RE.is_match(value) {
        errs.push(regex_error(DNS1035_LABEL_ERR_MSG, DNS1035_LABEL_FMT, &["my-name", "abc-123"]));
    }
    errs
}

/// `IsValidPortNum`: 1..=65535.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    is_in_range(port, 1, 65535)
}

/// `IsInRange` (inclusive).
pub fn is_in_range(value: i64, min: i64, max: i64) -> Vec<String> {
    if (min..=max).contains(&value) { Vec::new() } else { vec![inclusive_range_error(min, max)] }
}

/// `IsValidPortName` (IANA_SVC_NAME): at most 15 characters of `[-a-z0-9]`, at least one letter, no `--`, and no
/// leading or trailing `-`.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty() || !port.bytes().all(|b| b == b'-' || b.is_ascii_lowercase() || b.is_ascii_digit()) {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !port.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

// ---------------------------------------------------------------------------------------------------------------
// IP addresses (`pkg/util/validation/ip.go`).

const IP_INVALID_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// `IsValidIP`: an IPv4 or IPv6 address, strictly parsed (no leading zeros, no IPv4-mapped IPv6) and in canonical
/// form.
pub fn is_valid_ip(value: &str) -> Vec<String> {
    match parse_ip(value, true) {
        (Some(ip), errs) if errs.is_empty() => {
            // Rust's `Display` is Go's `net.IP.String()` for everything but IPv4-mapped IPv6 (rejected above).
            let canonical = ip.to_string();
            if canonical == value { Vec::new() } else { vec![format!("must be in canonical form ({canonical:?})")] }
        }
        (_, errs) => errs,
    }
}

/// `IsValidIPForLegacyField`: as upstream, `strict` false also allows IPv4 octets with leading zeros and
/// IPv4-mapped IPv6 addresses; values in `valid_old` (from the old object on update) are always accepted.
pub fn is_valid_ip_for_legacy_field(value: &str, strict: bool, valid_old: &[&str]) -> Vec<String> {
    if valid_old.contains(&value) {
        return Vec::new();
    }
    parse_ip(value, strict).1
}

/// `parseIP`: `netutils.ParseIPSloppy`, then (when strict) `netip.ParseAddr`'s stricter rules.
fn parse_ip(value: &str, strict: bool) -> (Option<IpAddr>, Vec<String>) {
    let Some(ip) = parse_ip_sloppy(value) else {
        return (None, vec![IP_INVALID_MSG.to_string()]);
    };
    let mut errs = Vec::new();
    if strict {
        match value.parse::<IpAddr>() {
            // ParseIPSloppy accepted it but the strict parser did not: leading zeros.
            Err(_) => errs.push("must not have leading 0s".to_string()),
            Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
                errs.push("must not be an IPv4-mapped IPv6 address".to_string())
            }
            Ok(_) => {}
        }
    }
    (Some(ip), errs)
}

/// `netutils.ParseIPSloppy` (Go's pre-1.17 `net.ParseIP`): the strict grammar except that decimal octets and hex
/// groups may carry any number of leading zeros; done by stripping them before a strict parse.
pub(crate) fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    fn strip(part: &str) -> &str {
        let t = part.trim_start_matches('0');
        if t.is_empty() && !part.is_empty() { "0" } else { t }
    }
    let v4 = |part: &str| part.split('.').map(strip).collect::<Vec<_>>().join(".");
    let normalized = if s.contains(':') {
        s.split(':').map(|g| if g.contains('.') { v4(g) } else { strip(g).to_string() }).collect::<Vec<_>>().join(":")
    } else {
        v4(s)
    };
    normalized.parse().ok()
}

// ---------------------------------------------------------------------------------------------------------------
// Name functions (`pkg/api/validation/generic.go`, `path/name.go`).

/// `maskTrailingDash`: upstream replaces the LAST TWO bytes of a `-`-terminated prefix with `a` (so `"ab-"`
/// validates as `"aa"`), which keeps `"foo-"` valid while a lone `"-"` stays invalid.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        let kept = &name.as_bytes()[..name.len() - 2];
        format!("{}a", String::from_utf8_lossy(kept))
    } else {
        name.to_string()
    }
}

/// `NameIsDNSSubdomain`.
pub fn name_is_dns_subdomain(name: &str, prefix: bool) -> Vec<String> {
    if prefix { is_dns1123_subdomain(&mask_trailing_dash(name)) } else { is_dns1123_subdomain(name) }
}

/// `NameIsDNSLabel` (also `ValidateNamespaceName`).
pub fn name_is_dns_label(name: &str, prefix: bool) -> Vec<String> {
    if prefix { is_dns1123_label(&mask_trailing_dash(name)) } else { is_dns1123_label(name) }
}

/// `NameIsDNS1035Label` (e.g. Service names).
pub fn name_is_dns1035_label(name: &str, prefix: bool) -> Vec<String> {
    if prefix { is_dns1035_label(&mask_trailing_dash(name)) } else { is_dns1035_label(name) }
}

/// `path.IsValidPathSegmentName`: a name usable as a URL path segment (and storage key).
pub fn validate_path_segment_name(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    validate_path_segment_prefix(name)
}

/// `path.IsValidPathSegmentPrefix`: as [`validate_path_segment_name`] without the exact `.`/`..` check.
pub fn validate_path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"].iter().filter(|c| name.contains(*c)).map(|c| format!("may not contain '{c}'")).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// JSON access helpers.

fn child(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn type_error(path: &str, value: &Value, expected: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        kind: FieldErrorType::TypeInvalid,
        value: Some(value.clone()),
        detail: format!("must be of type {expected}"),
    }
}

/// A string field; absent or `null` reads as "", any other type is reported.
fn str_field<'a>(obj: &'a Map<String, Value>, key: &str, path: &str, errs: &mut Vec<FieldError>) -> &'a str {
    match obj.get(key) {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(other) => {
            errs.push(type_error(&child(path, key), other, "string"));
            ""
        }
    }
}

/// An integer field; absent or `null` is `None`.
fn int_field(obj: &Map<String, Value>, key: &str, path: &str, errs: &mut Vec<FieldError>) -> Option<i64> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => v.as_i64().or_else(|| {
            errs.push(type_error(&child(path, key), v, "integer"));
            None
        }),
    }
}

fn object_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<&'a Map<String, Value>> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            errs.push(type_error(&child(path, key), other, "object"));
            None
        }
    }
}

fn array_field<'a>(obj: &'a Map<String, Value>, key: &str, path: &str, errs: &mut Vec<FieldError>) -> &'a [Value] {
    match obj.get(key) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            errs.push(type_error(&child(path, key), other, "array"));
            &[]
        }
    }
}

/// Strings of a JSON string array; other elements are reported at `path[i]`.
fn string_items<'a>(items: &'a [Value], path: &str, errs: &mut Vec<FieldError>) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        match v {
            Value::String(s) => out.push(s.as_str()),
            other => errs.push(type_error(&index(path, i), other, "string")),
        }
    }
    out
}

/// Go's `%#v` of a `[]string`, as upstream prints such values in messages.
pub(crate) fn go_string_slice(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

// ---------------------------------------------------------------------------------------------------------------
// Labels, annotations, finalizers, owner references (`objectmeta.go`, `meta/v1/validation`).

/// `ValidateLabelName`.
pub fn validate_label_name(name: &str, path: &str) -> Vec<FieldError> {
    is_qualified_name(name).into_iter().map(|m| FieldError::invalid(path, name, m)).collect()
}

/// `ValidateLabels`: errors carry the map's path (no key), as upstream. Non-string values are type errors.
pub fn validate_labels(labels: &Map<String, Value>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        errs.extend(validate_label_name(k, path));
        match v {
            Value::String(v) => {
                errs.extend(is_valid_label_value(v).into_iter().map(|m| FieldError::invalid(path, v.as_str(), m)))
            }
            other => errs.push(type_error(&format!("{path}[{k}]"), other, "string")),
        }
    }
    errs
}

/// `ValidateAnnotations`: keys are qualified names compared lowercased; keys plus values total at most 256 KiB
/// (`Too long: may not be more than 262144 bytes`).
pub fn validate_annotations(annotations: &Map<String, Value>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        total += k.len();
        match v {
            Value::String(s) => total += s.len(),
            other => errs.push(type_error(&format!("{path}[{k}]"), other, "string")),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
        errs.push(FieldError::too_long(path, "", TOTAL_ANNOTATION_SIZE_LIMIT_B));
    }
    errs
}

/// `schema.FromAPIVersionAndKind` reduced to (group, version): an unparsable apiVersion gives no version.
fn parse_group_version(api_version: &str) -> (&str, &str) {
    if api_version.is_empty() || api_version == "/" {
        return ("", "");
    }
    match api_version.matches('/').count() {
        0 => ("", api_version),
        1 => api_version.split_once('/').unwrap_or(("", "")),
        _ => ("", ""),
    }
}

/// `ValidateOwnerReferences`: apiVersion, kind, name and uid must be set, `v1/Event` cannot own, and at most one
/// reference may be the controller.
pub fn validate_owner_references(refs: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for (i, r) in refs.iter().enumerate() {
        let Some(obj) = r.as_object() else {
            errs.push(type_error(&index(path, i), r, "object"));
            continue;
        };
        let api_version = str_field(obj, "apiVersion", path, &mut errs);
        let kind = str_field(obj, "kind", path, &mut errs);
        let name = str_field(obj, "name", path, &mut errs);
        let uid = str_field(obj, "uid", path, &mut errs);
        let (group, version) = parse_group_version(api_version);
        if version.is_empty() {
            errs.push(FieldError::invalid(child(path, "apiVersion"), api_version, "version must not be empty"));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(child(path, "kind"), kind, "kind must not be empty"));
        }
        if name.is_empty() {
            errs.push(FieldError::invalid(child(path, "name"), name, "name must not be empty"));
        }
        if uid.is_empty() {
            errs.push(FieldError::invalid(child(path, "uid"), uid, "uid must not be empty"));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            let detail = format!("{group}/{version}, Kind={kind} is disallowed from being an owner");
            errs.push(FieldError::invalid(path, r.clone(), detail));
        }
        if obj.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    Value::Array(refs.to_vec()),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// apimachinery's `ValidateFinalizers`: each name is a qualified name (errors at `path`), and `orphan` and
/// `foregroundDeletion` are exclusive.
fn validate_finalizers_generic(finalizers: &[&str], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in finalizers {
        errs.extend(is_qualified_name(f).into_iter().map(|m| FieldError::invalid(path, *f, m)));
    }
    if finalizers.contains(&FINALIZER_ORPHAN_DEPENDENTS) && finalizers.contains(&FINALIZER_DELETE_DEPENDENTS) {
        let value: Vec<Value> = finalizers.iter().map(|f| Value::from(*f)).collect();
        errs.push(FieldError::invalid(
            path,
            value,
            format!("finalizer {FINALIZER_ORPHAN_DEPENDENTS} and {FINALIZER_DELETE_DEPENDENTS} cannot be both set"),
        ));
    }
    errs
}

/// The built-in types' `validateKubeFinalizerName`: a name without `/` must be a standard finalizer
/// (`kubernetes`, `orphan`, `foregroundDeletion`); errors at `path[i]`.
fn validate_kube_finalizer_names(finalizers: &[&str], path: &str) -> Vec<FieldError> {
    let standard = [FINALIZER_KUBERNETES, FINALIZER_ORPHAN_DEPENDENTS, FINALIZER_DELETE_DEPENDENTS];
    finalizers
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.contains('/') && !standard.contains(f))
        .map(|(i, f)| {
            FieldError::invalid(
                index(path, i),
                *f,
                "name is neither a standard finalizer name nor is it fully qualified",
            )
        })
        .collect()
}

/// `ValidateFinalizers` as the built-in types see it: apimachinery's checks (qualified names at `path`,
/// `orphan`/`foregroundDeletion` conflict), then `k8s.io/kubernetes`' rule that a name without `/` must be one of
/// the standard finalizers (`kubernetes`, `orphan`, `foregroundDeletion`), reported at `path[i]`.
pub fn validate_finalizers(finalizers: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let names = string_items(finalizers, path, &mut errs);
    errs.extend(validate_finalizers_generic(&names, path));
    errs.extend(validate_kube_finalizer_names(&names, path));
    errs
}

/// `ValidateManagedFields`.
pub fn validate_managed_fields(entries: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let p = index(path, i);
        let Some(obj) = e.as_object() else {
            errs.push(type_error(&p, e, "object"));
            continue;
        };
        let op = str_field(obj, "operation", &p, &mut errs);
        if op != "Apply" && op != "Update" {
            errs.push(FieldError::invalid(child(&p, "operation"), op, "must be `Apply` or `Update`"));
        }
        let fields_type = str_field(obj, "fieldsType", &p, &mut errs);
        if !fields_type.is_empty() && fields_type != "FieldsV1" {
            errs.push(FieldError::invalid(child(&p, "fieldsType"), fields_type, "must be `FieldsV1`"));
        }
        let manager = str_field(obj, "manager", &p, &mut errs);
        errs.extend(validate_field_manager(manager, &child(&p, "manager")));
        if str_field(obj, "subresource", &p, &mut errs).len() > MAX_SUBRESOURCE_NAME_LENGTH {
            errs.push(FieldError::too_long(child(&p, "subresource"), "", MAX_SUBRESOURCE_NAME_LENGTH));
        }
    }
    errs
}

/// `ValidateFieldManager`: at most 128 bytes, printable characters only.
pub fn validate_field_manager(manager: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        errs.push(FieldError::too_long(path, "", FIELD_MANAGER_MAX_LENGTH));
    }
    for (i, c) in manager.char_indices() {
        if !is_print(c) {
            let detail = format!("invalid character U+{:04X} (at position {i})", c as u32);
            errs.push(FieldError::invalid(path, manager, detail));
        }
    }
    errs
}

/// An approximation of Go's `unicode.IsPrint` (std has no Unicode category tables): ASCII space, or not a control,
/// other whitespace or common format character.
fn is_print(c: char) -> bool {
    let format_char = matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}');
    c == ' ' || !(c.is_control() || c.is_whitespace() || format_char)
}

/// `ValidateLabelSelector` (metav1): `matchLabels` as labels; each `matchExpressions[i]` needs values for
/// `In`/`NotIn`, none for `Exists`/`DoesNotExist`, a known operator, a qualified-name key and (unless
/// `allow_invalid_label_value`) valid label values. `null` is valid.
pub fn validate_label_selector(selector: &Value, path: &str, allow_invalid_label_value: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let obj = match selector {
        Value::Null => return errs,
        Value::Object(o) => o,
        other => return vec![type_error(path, other, "object")],
    };
    if let Some(ml) = object_field(obj, "matchLabels", path, &mut errs) {
        errs.extend(validate_labels(ml, &child(path, "matchLabels")));
    }
    let exprs_path = child(path, "matchExpressions");
    for (i, expr) in array_field(obj, "matchExpressions", path, &mut errs).iter().enumerate() {
        let p = index(&exprs_path, i);
        let Some(expr) = expr.as_object() else {
            errs.push(type_error(&p, expr, "object"));
            continue;
        };
        let values_path = child(&p, "values");
        let values = string_items(array_field(expr, "values", &p, &mut errs), &values_path, &mut errs);
        let op = str_field(expr, "operator", &p, &mut errs);
        match op {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                values_path.as_str(),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                values_path.as_str(),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => errs.push(FieldError::invalid(child(&p, "operator"), op, "not a valid selector operator")),
        }
        let key = str_field(expr, "key", &p, &mut errs);
        errs.extend(validate_label_name(key, &child(&p, "key")));
        if !allow_invalid_label_value {
            for (vi, v) in values.iter().enumerate() {
                for msg in is_valid_label_value(v) {
                    errs.push(FieldError::invalid(index(&values_path, vi), *v, msg));
                }
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------------------------
// ObjectMeta (`objectmeta.go`).

/// `ValidateObjectMeta` for `metadata` (paths `metadata.*`), as the built-in types run it: generateName and name via
/// `name_fn`, namespace required (a DNS label) when `namespaced` and forbidden otherwise, generation, labels,
/// annotations, ownerReferences, finalizers, managedFields, then the built-in finalizer-name rule. Absent or
/// `null` metadata reads as empty. Name generation must already have happened (as upstream).
pub fn validate_object_meta(meta: &Value, namespaced: bool, name_fn: NameFn) -> Vec<FieldError> {
    const P: &str = "metadata";
    let mut errs = Vec::new();
    let empty = Map::new();
    let meta = match meta {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => return vec![type_error(P, other, "object")],
    };
    let generate_name = str_field(meta, "generateName", P, &mut errs);
    if !generate_name.is_empty() {
        for msg in name_fn(generate_name, true) {
            errs.push(FieldError::invalid("metadata.generateName", generate_name, msg));
        }
    }
    let name = str_field(meta, "name", P, &mut errs);
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        for msg in name_fn(name, false) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    let namespace = str_field(meta, "namespace", P, &mut errs);
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in name_is_dns_label(namespace, false) {
                errs.push(FieldError::invalid("metadata.namespace", namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden("metadata.namespace", "not allowed on this type"));
    }
    if let Some(generation) = int_field(meta, "generation", P, &mut errs).filter(|g| *g < 0) {
        errs.push(FieldError::invalid("metadata.generation", generation, IS_NEGATIVE_ERROR_MSG));
    }
    // Upstream order: labels, annotations, ownerReferences, finalizers, managedFields, then the built-in rule.
    validate_meta_maps_and_refs(meta, &mut errs);
    let finalizers = string_items(array_field(meta, "finalizers", P, &mut errs), "metadata.finalizers", &mut errs);
    errs.extend(validate_finalizers_generic(&finalizers, "metadata.finalizers"));
    let managed = array_field(meta, "managedFields", P, &mut errs);
    errs.extend(validate_managed_fields(managed, "metadata.managedFields"));
    errs.extend(validate_kube_finalizer_names(&finalizers, "metadata.finalizers"));
    errs
}

/// Labels, annotations and ownerReferences of `metadata`, in upstream's order.
fn validate_meta_maps_and_refs(meta: &Map<String, Value>, errs: &mut Vec<FieldError>) {
    const P: &str = "metadata";
    if let Some(labels) = object_field(meta, "labels", P, errs) {
        errs.extend(validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = object_field(meta, "annotations", P, errs) {
        errs.extend(validate_annotations(annotations, "metadata.annotations"));
    }
    let refs = array_field(meta, "ownerReferences", P, errs);
    errs.extend(validate_owner_references(refs, "metadata.ownerReferences"));
}

/// `ValidateObjectMetaUpdate` for `metadata` as the built-in types run it: no new finalizers once deleting,
/// resourceVersion set, generation not decremented; name, namespace, uid, creationTimestamp, deletionTimestamp and
/// deletionGracePeriodSeconds immutable (`field is immutable`, so deletion fields can be neither set, changed nor
/// cleared by an update); the new labels, annotations, ownerReferences and managedFields valid; then the
/// built-in finalizer-name rule on the new finalizers. As upstream, generateName is not checked, and the caller
/// (like `rest.BeforeUpdate`) should first carry over fields the server owns (uid if empty, creationTimestamp,
/// deletionTimestamp, deletionGracePeriodSeconds, resourceVersion for unconditional updates).
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    const P: &str = "metadata";
    let mut errs = Vec::new();
    let (empty_new, empty_old) = (Map::new(), Map::new());
    let new = match new {
        Value::Object(m) => m,
        Value::Null => &empty_new,
        other => return vec![type_error(P, other, "object")],
    };
    let old = match old {
        Value::Object(m) => m,
        Value::Null => &empty_old,
        other => return vec![type_error(P, other, "object")],
    };
    let mut ignored = Vec::new();
    let new_finalizers = string_items(array_field(new, "finalizers", P, &mut errs), "metadata.finalizers", &mut errs);
    if old.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
        let old_finalizers: BTreeSet<&str> =
            string_items(array_field(old, "finalizers", P, &mut ignored), "", &mut ignored).into_iter().collect();
        let extra: BTreeSet<&str> = new_finalizers.iter().copied().filter(|f| !old_finalizers.contains(f)).collect();
        if !extra.is_empty() {
            let extra: Vec<&str> = extra.into_iter().collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_string_slice(&extra)
                ),
            ));
        }
    }
    let resource_version = str_field(new, "resourceVersion", P, &mut errs);
    if resource_version.is_empty() {
        errs.push(FieldError::invalid("metadata.resourceVersion", resource_version, "must be specified for an update"));
    }
    let new_generation = int_field(new, "generation", P, &mut errs).unwrap_or(0);
    if new_generation < int_field(old, "generation", P, &mut ignored).unwrap_or(0) {
        errs.push(FieldError::invalid("metadata.generation", new_generation, "must not be decremented"));
    }
    for key in ["name", "namespace", "uid"] {
        let n = str_field(new, key, P, &mut errs);
        if n != str_field(old, key, P, &mut ignored) {
            errs.push(FieldError::invalid(child(P, key), n, FIELD_IMMUTABLE_ERROR_MSG));
        }
    }
    // creationTimestamp is a metav1.Time value (absent = zero time); deletionTimestamp is a pointer (absent = nil,
    // which upstream prints as "null").
    let (new_ct, old_ct) = (go_time(new.get("creationTimestamp")), go_time(old.get("creationTimestamp")));
    if new_ct.as_deref().unwrap_or(GO_ZERO_TIME) != old_ct.as_deref().unwrap_or(GO_ZERO_TIME) {
        let shown = new_ct.unwrap_or_else(|| GO_ZERO_TIME.to_string());
        errs.push(FieldError::invalid("metadata.creationTimestamp", shown, FIELD_IMMUTABLE_ERROR_MSG));
    }
    let new_dt = go_time(new.get("deletionTimestamp"));
    if new_dt != go_time(old.get("deletionTimestamp")) {
        let shown = new_dt.unwrap_or_else(|| "null".to_string());
        errs.push(FieldError::invalid("metadata.deletionTimestamp", shown, FIELD_IMMUTABLE_ERROR_MSG));
    }
    let (new_gp, old_gp) = (new.get("deletionGracePeriodSeconds"), old.get("deletionGracePeriodSeconds"));
    let (new_gp, old_gp) = (new_gp.filter(|v| !v.is_null()), old_gp.filter(|v| !v.is_null()));
    if new_gp != old_gp {
        let shown = new_gp.cloned().unwrap_or_else(|| Value::from("null"));
        errs.push(FieldError::invalid("metadata.deletionGracePeriodSeconds", shown, FIELD_IMMUTABLE_ERROR_MSG));
    }
    validate_meta_maps_and_refs(new, &mut errs);
    let managed = array_field(new, "managedFields", P, &mut errs);
    errs.extend(validate_managed_fields(managed, "metadata.managedFields"));
    errs.extend(validate_kube_finalizer_names(&new_finalizers, "metadata.finalizers"));
    errs
}

/// Go's zero `time.Time`, as `time.Time.String()` prints it.
const GO_ZERO_TIME: &str = "0001-01-01 00:00:00 +0000 UTC";

static RFC3339_UTC_RE: LazyLock<Regex> =
    LazyLock::new(|| anchored(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?[Zz]"));

/// A `metav1.Time` JSON value as upstream compares and prints it (Go's `time.Time.String()`, e.g.
/// `1970-01-01 00:16:40 +0000 UTC` for `1970-01-01T00:16:40Z`); `None` when absent or `null`. Timestamps with a
/// non-UTC offset (never written by the server) are kept, and compared, as given.
fn go_time(v: Option<&Value>) -> Option<String> {
    match v.filter(|v| !v.is_null())? {
        Value::String(s) => Some(match RFC3339_UTC_RE.captures(s) {
            Some(c) => {
                let frac = c.get(3).map_or("", |m| m.as_str().trim_end_matches('0'));
                let frac = if frac == "." { "" } else { frac };
                format!("{} {}{frac} +0000 UTC", &c[1], &c[2])
            }
            None => s.clone(),
        }),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    // TestIsDNS1123Label / TestIsDNS1123Subdomain / TestIsDNS1035Label.
    #[test]
    fn dns_formats_accept_and_reject_upstream_cases() {
        let a63 = "a".repeat(63);
        let good_label = ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a", "1--a--b--2"];
        for v in good_label.iter().copied().chain([a63.as_str()]) {
            assert!(is_dns1123_label(v).is_empty(), "{v}");
            assert!(is_dns1123_subdomain(v).is_empty(), "{v}");
        }
        let a64 = "a".repeat(64);
        let bad_label = [
            "", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_", "_a", "a_b", "1_", "_1",
            "1_2", ".", "a.", ".a", "a.b", "1.", ".1", "1.2", " ", "a ", " a", "a b", "1 ", " 1", "1 2",
        ];
        for v in bad_label.iter().copied().chain([a64.as_str()]) {
            assert!(!is_dns1123_label(v).is_empty(), "{v}");
            assert!(!is_dns1035_label(v).is_empty(), "{v}");
        }
        let good_sub =
            ["a.a", "ab.a", "a--1--2--b.1", "0.1", "1--a--b--2.1", "a.b.c.d.e", "1.2.3.4.5", "11.22.33.44.55"];
        let a253 = "a".repeat(253);
        for v in good_sub.iter().copied().chain([a253.as_str()]) {
            assert!(is_dns1123_subdomain(v).is_empty(), "{v}");
        }
        let a254 = "a".repeat(254);
        let bad_sub = [
            "",
            "A",
            "-",
            "a-",
            "-a",
            "_",
            "a_b",
            ".",
            "a.",
            ".a",
            "a..b",
            "1..2",
            "a b",
            "A.a",
            "aB.a",
            "ab.A",
            "0.A",
            "A.B.C.D.E",
            "a.B.c.d.e",
            "a@b",
            "a,b",
            "a;b",
            "a:b",
            "a%b",
            "a?b",
            "a$b",
        ];
        for v in bad_sub.iter().copied().chain([a254.as_str()]) {
            assert!(!is_dns1123_subdomain(v).is_empty(), "{v}");
        }
        for v in ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", a63.as_str()] {
            assert!(is_dns1035_label(v).is_empty(), "{v}");
        }
        for v in ["0", "01", "012", "1a", "1-a", "1--a--b--2"] {
            assert!(!is_dns1035_label(v).is_empty(), "{v}");
        }
    }

    #[test]
    fn dns_messages_are_upstream_text() {
        assert_eq!(
            is_dns1123_label("Foo"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start \
                  and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
                  '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(is_dns1123_label(&"a".repeat(64)), vec!["must be no more than 63 characters"]);
        assert_eq!(
            is_dns1123_subdomain("A"),
            vec![
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
                  must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
                  '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert_eq!(
            is_dns1035_label("1a"),
            vec![
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
                  alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex \
                  used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_subdomain(&"a".repeat(254)), vec!["must be no more than 253 characters"]);
    }

    // TestIsQualifiedName.
    #[test]
    fn qualified_names() {
        let long_ok = format!("{}/{}", "a".repeat(253), "b".repeat(63));
        let good = [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes",
            "now.with.dots/simple",
            "now-with.dashes-and.dots/simple",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "Uppercase_Is_OK_123",
            "example.com/Uppercase_Is_OK_123",
            "requests.storage-foo",
        ];
        let a63 = "a".repeat(63);
        for v in good.iter().copied().chain([a63.as_str(), long_ok.as_str()]) {
            assert!(is_qualified_name(v).is_empty(), "{v}: {:?}", is_qualified_name(v));
        }
        let (a64, long_prefix) = ("a".repeat(64), format!("{}/abc", "a".repeat(254)));
        let bad = [
            "nospecialchars%^=@",
            "cantendwithadash-",
            "-cantstartwithadash-",
            "only/one/slash",
            "Example.com/abc",
            "example_com/abc",
            "example.com/",
            "/simple",
        ];
        for v in bad.iter().copied().chain([a64.as_str(), long_prefix.as_str()]) {
            assert!(!is_qualified_name(v).is_empty(), "{v}");
        }
        let regex_tail = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                          alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                          validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        assert_eq!(
            is_qualified_name("only/one/slash"),
            vec![format!(
                "a qualified name {regex_tail} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        );
        assert_eq!(is_qualified_name("-a"), vec![format!("name part {regex_tail}")]);
        assert_eq!(is_qualified_name("/a"), vec!["prefix part must be non-empty"]);
        assert_eq!(
            is_qualified_name("a/"),
            vec!["name part must be non-empty".to_string(), format!("name part {regex_tail}")]
        );
        assert_eq!(is_qualified_name(&a64), vec!["name part must be no more than 63 characters"]);
        assert!(is_qualified_name("Example.com/abc")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
    }

    // TestIsValidLabelValue.
    #[test]
    fn label_values() {
        let a63 = "a".repeat(63);
        for v in ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234", a63.as_str(), ""] {
            assert!(is_valid_label_value(v).is_empty(), "{v}");
        }
        let a64 = "a".repeat(64);
        let bad = [
            "nospecialchars%^=@",
            "Tama-nui-te-rā.is.Māori.sun",
            "\\backslashes\\are\\bad",
            "-starts-with-dash",
            "ends-with-dash-",
            ".starts.with.dot",
            "ends.with.dot.",
            a64.as_str(),
        ];
        for v in bad {
            assert!(!is_valid_label_value(v).is_empty(), "{v}");
        }
        assert_eq!(
            is_valid_label_value("-x"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and \
                  must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
                  regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
    }

    // TestIsValidPortName / TestIsValidPortNum.
    #[test]
    fn port_names_and_numbers() {
        for v in ["telnet", "re-mail-ck", "pop3", "a", "a-1", "1-a", "a-1-b-2-c", "1-a-2-b-3"] {
            assert!(is_valid_port_name(v).is_empty(), "{v}");
        }
        let a16 = "a".repeat(16);
        let bad = ["longerthan15characters", "", &a16, "12345", "1-2-3-4", "-begin", "end-", "two--hyphens", "whois++"];
        for v in bad {
            assert!(!is_valid_port_name(v).is_empty(), "{v}");
        }
        assert_eq!(
            is_valid_port_name("-"),
            ["must contain at least one letter (a-z)", "must not begin or end with a hyphen"]
        );
        assert_eq!(
            is_valid_port_name("HTTP_"),
            [
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "must contain at least one letter (a-z)"
            ]
        );
        assert_eq!(is_valid_port_name(&a16), ["must be no more than 15 characters"]);
        for p in [1, 2, 1000, 16384, 32768, 65535] {
            assert!(is_valid_port_num(p).is_empty());
        }
        for p in [0, -1, 65536, 100000] {
            assert_eq!(is_valid_port_num(p), ["must be between 1 and 65535, inclusive"]);
        }
    }

    // TestIsValidIP: (input, strict error, legacy non-strict error, legacy strict error).
    #[test]
    fn ip_addresses() {
        const BAD: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
        let cases: &[(&str, &str, &str, &str)] = &[
            ("1.2.3.4", "", "", ""),
            ("0.0.0.0", "", "", ""),
            ("255.255.255.255", "", "", ""),
            ("1234::abcd", "", "", ""),
            ("::", "", "", ""),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "", "", ""),
            ("0:0:0:0:0:0:0:0", r#"must be in canonical form ("::")"#, "", ""),
            ("0001:002:03:4::", r#"must be in canonical form ("1:2:3:4::")"#, "", ""),
            ("1234::ABCD", r#"must be in canonical form ("1234::abcd")"#, "", ""),
            ("::1.2.3.4", r#"must be in canonical form ("::102:304")"#, "", ""),
            ("1.1.1.01", "must not have leading 0s", "", "must not have leading 0s"),
            (
                "::ffff:1.1.1.1",
                "must not be an IPv4-mapped IPv6 address",
                "",
                "must not be an IPv4-mapped IPv6 address",
            ),
            ("::ffff:01.1.1.1", "must not have leading 0s", "", "must not have leading 0s"),
            ("00001::", "must not have leading 0s", "", "must not have leading 0s"),
            ("", BAD, BAD, BAD),
            ("aaaaaaa", BAD, BAD, BAD),
            ("myhost.mydomain", BAD, BAD, BAD),
            ("1.2.3.0/24", BAD, BAD, BAD),
            ("1.2.3.400", BAD, BAD, BAD),
            ("-1.0.0.0", BAD, BAD, BAD),
            ("2001:db8::10005", BAD, BAD, BAD),
            ("1.2.3.4:80", BAD, BAD, BAD),
            ("[2001:db8::1]", BAD, BAD, BAD),
            ("[2001:db8::1]:80", BAD, BAD, BAD),
            ("example.com:80", BAD, BAD, BAD),
            ("1234::abcd%eth0", BAD, BAD, BAD),
            ("169.254.0.0%eth0", BAD, BAD, BAD),
            ("1::2::3", BAD, BAD, BAD),
        ];
        let one = |v: Vec<String>| v.into_iter().next().unwrap_or_default();
        for &(ip, strict, legacy, legacy_strict) in cases {
            assert_eq!(one(is_valid_ip(ip)), strict, "strict {ip}");
            assert_eq!(one(is_valid_ip_for_legacy_field(ip, false, &[])), legacy, "legacy {ip}");
            assert_eq!(one(is_valid_ip_for_legacy_field(ip, true, &[])), legacy_strict, "legacy strict {ip}");
            assert!(is_valid_ip_for_legacy_field(ip, true, &[ip]).is_empty(), "old value {ip}");
        }
    }

    #[test]
    fn name_functions_mask_a_trailing_dash_for_prefixes() {
        assert!(name_is_dns_subdomain("foo-", true).is_empty());
        assert!(!name_is_dns_subdomain("foo-", false).is_empty());
        assert!(name_is_dns_label("a-", true).is_empty());
        assert!(!name_is_dns_label("-", true).is_empty());
        assert!(name_is_dns1035_label("web-", true).is_empty());
        assert!(!name_is_dns1035_label("1web-", true).is_empty());
        assert!(!name_is_dns_subdomain("Foo-", true).is_empty());
        // Multi-byte characters before the dash must not panic.
        assert!(!name_is_dns_subdomain("é-", true).is_empty());
    }

    #[test]
    fn path_segment_names() {
        assert_eq!(validate_path_segment_name("."), ["may not be '.'"]);
        assert_eq!(validate_path_segment_name(".."), ["may not be '..'"]);
        assert_eq!(validate_path_segment_name("a/b%c"), ["may not contain '/'", "may not contain '%'"]);
        assert!(validate_path_segment_name("a..b").is_empty());
        assert!(validate_path_segment_prefix("..").is_empty());
    }

    // TestValidateLabels.
    #[test]
    fn labels() {
        let good = [
            json!({"simple": "bar"}),
            json!({"now-with-dashes/simple": "bar"}),
            json!({"1.2.3.4/5678": "bar"}),
            json!({"UpperCaseAreOK123": "bar"}),
            json!({"goodvalue": "123_-.BaR"}),
        ];
        for l in good {
            assert!(validate_labels(&map(l.clone()), "field").is_empty(), "{l}");
        }
        let cases = [
            (json!({"nospecialchars^=@": "bar"}), "name part must consist of"),
            (json!({"cantendwithadash-": "bar"}), "name part must consist of"),
            (json!({"only/one/slash": "bar"}), "a qualified name must consist of"),
            (json!({"a".repeat(254): "bar"}), "must be no more than"),
            (json!({"toolongvalue": "a".repeat(64)}), "must be no more than"),
            (json!({"backslashesinvalue": "some\\bad\\value"}), "a valid label must be an empty string or consist of"),
            (json!({"nocommasallowed": "bad,value"}), "a valid label must be an empty string or consist of"),
            (json!({"strangecharsinvalue": "?#$notsogood"}), "a valid label must be an empty string or consist of"),
        ];
        for (l, want) in cases {
            let errs = validate_labels(&map(l.clone()), "field");
            assert_eq!(errs.len(), 1, "{l}");
            assert!(errs[0].detail.contains(want), "{l}: {}", errs[0].detail);
            assert_eq!(errs[0].field, "field");
        }
        let errs = validate_labels(&map(json!({"a": 1})), "metadata.labels");
        assert_eq!(errs[0].kind, FieldErrorType::TypeInvalid);
        assert_eq!(errs[0].field, "metadata.labels[a]");
    }

    // TestValidateAnnotations.
    #[test]
    fn annotations() {
        let limit = TOTAL_ANNOTATION_SIZE_LIMIT_B;
        let good = [
            json!({"simple": "bar"}),
            json!({"1-num.2-num/3-num": "bar"}),
            json!({"UpperCase123": "bar"}),
            json!({"a": "b".repeat(limit - 1)}),
            json!({"a": "b".repeat(limit / 2 - 1), "c": "d".repeat(limit / 2 - 1)}),
        ];
        for a in good {
            assert!(validate_annotations(&map(a), "field").is_empty());
        }
        for (a, want) in [
            (json!({"nospecialchars^=@": "bar"}), "name part must consist of"),
            (json!({"cantendwithadash-": "bar"}), "name part must consist of"),
            (json!({"only/one/slash": "bar"}), "a qualified name must consist of"),
            (json!({"a".repeat(254): "bar"}), "must be no more than"),
        ] {
            let errs = validate_annotations(&map(a), "field");
            assert_eq!(errs.len(), 1);
            assert!(errs[0].detail.contains(want), "{}", errs[0].detail);
        }
        for a in [json!({"a": "b".repeat(limit)}), json!({"a": "b".repeat(limit / 2), "c": "d".repeat(limit / 2)})] {
            let errs = validate_annotations(&map(a), "metadata.annotations");
            assert_eq!(strs(&errs), ["metadata.annotations: Too long: may not be more than 262144 bytes"]);
        }
        // Keys are checked lowercased, but reported as given.
        let errs = validate_annotations(&map(json!({"Example.COM/X": "y", "Bad_/x": "y"})), "a");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].value, Some(json!("Bad_/x")));
    }

    // TestValidateObjectMetaOwnerReferences.
    #[test]
    fn owner_references() {
        let r = |kind: &str, uid: &str, controller: Option<bool>| {
            let mut v = json!({"apiVersion": "customresourceVersion", "kind": kind, "name": "name", "uid": uid});
            if let Some(c) = controller {
                v["controller"] = json!(c);
            }
            v
        };
        assert!(validate_owner_references(&[r("customresourceKind", "1", None)], "p").is_empty());
        let event = json!({"apiVersion": "v1", "kind": "Event", "name": "name", "uid": "1"});
        let errs = validate_owner_references(std::slice::from_ref(&event), "p");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].detail, "/v1, Kind=Event is disallowed from being an owner");
        let one = [r("k", "1", Some(false)), r("k", "2", Some(true)), r("k", "3", Some(false)), r("k", "4", None)];
        assert!(validate_owner_references(&one, "p").is_empty());
        let two = [r("K1", "1", Some(false)), r("K2", "2", Some(true)), r("K3", "3", Some(true)), r("K4", "4", None)];
        let errs = validate_owner_references(&two, "metadata.ownerReferences");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].detail,
            "Only one reference can have Controller set to true. Found \"true\" in references for K2/name and K3/name"
        );
        let errs = validate_owner_references(&[json!({"apiVersion": "a/b/c"})], "o");
        assert_eq!(
            strs(&errs),
            [
                "o.apiVersion: Invalid value: \"a/b/c\": version must not be empty",
                "o.kind: Invalid value: \"\": kind must not be empty",
                "o.name: Invalid value: \"\": name must not be empty",
                "o.uid: Invalid value: \"\": uid must not be empty",
            ]
        );
        assert!(
            validate_owner_references(
                &[json!({"apiVersion": "apps/v1", "kind": "Event", "name": "n", "uid": "u"})],
                "o"
            )
            .is_empty()
        );
    }

    #[test]
    fn finalizers() {
        assert!(validate_finalizers(&[json!("kubernetes"), json!("example.com/x")], "f").is_empty());
        let errs = validate_finalizers(&[json!("orphan"), json!("foregroundDeletion")], "metadata.finalizers");
        assert_eq!(
            strs(&errs),
            ["metadata.finalizers: Invalid value: [\"orphan\",\"foregroundDeletion\"]: finalizer orphan and \
             foregroundDeletion cannot be both set"]
        );
        let errs = validate_finalizers(&[json!("x/a"), json!("custom"), json!("-bad-")], "metadata.finalizers");
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].field, "metadata.finalizers");
        assert!(errs[0].detail.starts_with("name part must consist of"));
        assert_eq!(
            strs(&errs[1..]),
            [
                "metadata.finalizers[1]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it \
                 fully qualified",
                "metadata.finalizers[2]: Invalid value: \"-bad-\": name is neither a standard finalizer name nor is it \
                 fully qualified",
            ]
        );
    }

    #[test]
    fn managed_fields() {
        let ok = json!({"operation": "Apply", "fieldsType": "FieldsV1", "manager": "kubectl", "apiVersion": "v1"});
        assert!(validate_managed_fields(&[ok], "m").is_empty());
        let bad = [
            json!({"operation": "Update", "fieldsType": "RandomVersion"}),
            json!({"operation": "RandomOperation", "fieldsType": "FieldsV1"}),
            json!({"fieldsType": "FieldsV1"}),
            json!({"operation": "Update", "manager": "field\nmanager"}),
            json!({"operation": "Apply", "subresource": "TooLong".repeat(40)}),
        ];
        for b in bad {
            assert!(!validate_managed_fields(std::slice::from_ref(&b), "m").is_empty(), "{b}");
        }
        assert_eq!(
            strs(&validate_managed_fields(&[json!({"operation": "Update", "manager": "a\u{7}"})], "m")),
            ["m[0].manager: Invalid value: \"a\\u{7}\": invalid character U+0007 (at position 1)"]
        );
    }

    #[test]
    fn label_selectors() {
        assert!(validate_label_selector(&Value::Null, "s", false).is_empty());
        let ok = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "x", "operator": "DoesNotExist"},
        ]});
        assert!(validate_label_selector(&ok, "spec.selector", false).is_empty());
        let bad = json!({"matchLabels": {"-a": "b"}, "matchExpressions": [
            {"key": "k", "operator": "In"},
            {"key": "k", "operator": "Exists", "values": ["v"]},
            {"key": "k", "operator": "Gt", "values": ["1"]},
            {"key": "", "operator": "NotIn", "values": ["-bad"]},
        ]});
        let errs = validate_label_selector(&bad, "spec.selector", false);
        let got: Vec<(String, FieldErrorType)> = errs.iter().map(|e| (e.field.clone(), e.kind)).collect();
        let want = [
            ("spec.selector.matchLabels", FieldErrorType::Invalid),
            ("spec.selector.matchExpressions[0].values", FieldErrorType::Required),
            ("spec.selector.matchExpressions[1].values", FieldErrorType::Forbidden),
            ("spec.selector.matchExpressions[2].operator", FieldErrorType::Invalid),
            ("spec.selector.matchExpressions[3].key", FieldErrorType::Invalid),
            ("spec.selector.matchExpressions[3].key", FieldErrorType::Invalid),
            ("spec.selector.matchExpressions[3].values[0]", FieldErrorType::Invalid),
        ];
        assert_eq!(got, want.map(|(f, k)| (f.to_string(), k)));
        assert_eq!(
            errs[1].to_string(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert!(validate_label_selector(&bad, "s", true).len() == 6);
    }

    fn accept_test_only(s: &str, _: bool) -> Vec<String> {
        if s == "test" { Vec::new() } else { vec!["name-gen".to_string()] }
    }

    fn accept_all(_: &str, _: bool) -> Vec<String> {
        Vec::new()
    }

    // TestValidateObjectMetaCustomName / Namespaces / TrimsTrailingSlash / PreventConflictingFinalizers.
    #[test]
    fn object_meta() {
        let errs = validate_object_meta(&json!({"name": "test", "generateName": "foo"}), false, accept_test_only);
        assert_eq!(strs(&errs), ["metadata.generateName: Invalid value: \"foo\": name-gen"]);
        let errs = validate_object_meta(&json!({"name": "test", "namespace": "foo.bar"}), true, accept_all);
        assert_eq!(strs(&errs), ["metadata.namespace: Invalid value: \"foo.bar\": must not contain dots"]);
        let errs = validate_object_meta(&json!({"name": "test", "namespace": "A".repeat(64)}), true, accept_all);
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| e.kind == FieldErrorType::Invalid));
        let meta = json!({"name": "test", "generateName": "foo-"});
        assert!(validate_object_meta(&meta, false, name_is_dns_subdomain).is_empty());
        let meta = json!({"name": "test", "finalizers": ["orphan", "foregroundDeletion"]});
        let errs = validate_object_meta(&meta, false, name_is_dns_subdomain);
        assert!(errs[0].detail.contains("cannot be both set"));

        let errs = validate_object_meta(&json!({}), true, name_is_dns_subdomain);
        assert_eq!(
            strs(&errs),
            ["metadata.name: Required value: name or generateName is required", "metadata.namespace: Required value"]
        );
        assert_eq!(validate_object_meta(&Value::Null, false, name_is_dns_subdomain).len(), 1);
        let errs = validate_object_meta(&json!({"name": "x", "namespace": "ns"}), false, name_is_dns_subdomain);
        assert_eq!(strs(&errs), ["metadata.namespace: Forbidden: not allowed on this type"]);
        let errs = validate_object_meta(&json!({"name": "Bad_Name", "generation": -1}), false, name_is_dns1035_label);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[1].to_string(), "metadata.generation: Invalid value: -1: must be greater than or equal to 0");
        let errs = validate_object_meta(&json!({"name": 5}), false, name_is_dns_subdomain);
        assert_eq!(errs[0].kind, FieldErrorType::TypeInvalid);
        assert_eq!(errs[0].field, "metadata.name");

        // Upstream order: labels, annotations, ownerReferences, finalizers, managedFields, then the kube rule.
        let meta = json!({
            "name": "x",
            "labels": {"-": "v"},
            "annotations": {"-": "v"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "n"}],
            "finalizers": ["plain"],
            "managedFields": [{"operation": "Nope"}],
        });
        let fields: Vec<String> =
            validate_object_meta(&meta, false, name_is_dns_subdomain).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels",
                "metadata.annotations",
                "metadata.ownerReferences.uid",
                "metadata.managedFields[0].operation",
                "metadata.finalizers[0]"
            ]
        );
    }

    fn update(new: Value, old: Value) -> Vec<String> {
        strs(&validate_object_meta_update(&new, &old))
    }

    // TestValidateObjectMetaUpdateIgnoresCreationTimestamp.
    #[test]
    fn update_creation_timestamp_is_immutable() {
        let t10 = "1970-01-01T00:00:10Z";
        let base = json!({"name": "test", "resourceVersion": "1"});
        let with = |t: &str| json!({"name": "test", "resourceVersion": "1", "creationTimestamp": t});
        assert_eq!(
            update(base.clone(), with(t10)),
            ["metadata.creationTimestamp: Invalid value: \"0001-01-01 00:00:00 +0000 UTC\": field is immutable"]
        );
        assert_eq!(update(with(t10), base.clone()).len(), 1);
        assert_eq!(
            update(with(t10), with("1970-01-01T00:00:11Z")),
            ["metadata.creationTimestamp: Invalid value: \"1970-01-01 00:00:10 +0000 UTC\": field is immutable"]
        );
        assert!(update(with(t10), with("1970-01-01T00:00:10.000Z")).is_empty());
        assert!(update(with("0001-01-01T00:00:00Z"), base).is_empty());
    }

    // TestValidateFinalizersUpdate.
    #[test]
    fn update_finalizers_while_deleting() {
        let m = |deleting: bool, f: &[&str]| {
            let mut v = json!({"name": "test", "resourceVersion": "1", "finalizers": f});
            if deleting {
                v["deletionTimestamp"] = json!("0001-01-01T00:00:00Z");
            }
            v
        };
        let got = update(m(true, &["x/a", "y/b"]), m(true, &["x/a"]));
        assert_eq!(
            got,
            [
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new \
             finalizers []string{\"y/b\"}"
            ]
        );
        assert!(update(m(true, &["x/b"]), m(true, &["x/a"]))[0].contains("x/b"));
        assert!(update(m(true, &["x/a"]), m(true, &["x/a", "y/b"])).is_empty());
        assert!(update(m(false, &["x/a", "y/b"]), m(false, &["x/a"])).is_empty());
        assert_eq!(
            update(m(false, &["plain"]), m(false, &[])),
            ["metadata.finalizers[0]: Invalid value: \"plain\": name is neither a standard finalizer name nor is it \
             fully qualified"]
        );
    }

    // TestValidateObjectMetaUpdatePreventsDeletionFieldMutation / TestObjectMetaGenerationUpdate.
    #[test]
    fn update_deletion_fields_and_generation() {
        let (now, later) = ("1970-01-01T00:16:40Z", "1970-01-01T00:33:20Z");
        let m = |ts: Option<&str>, grace: Option<i64>| {
            let mut v = json!({"name": "test", "resourceVersion": "1"});
            if let Some(ts) = ts {
                v["deletionTimestamp"] = json!(ts);
            }
            if let Some(g) = grace {
                v["deletionGracePeriodSeconds"] = json!(g);
            }
            v
        };
        let cases: &[(Value, Value, &[&str])] = &[
            (m(None, None), m(None, None), &[]),
            (m(Some(now), Some(30)), m(Some(now), Some(30)), &[]),
            (
                m(None, None),
                m(Some(now), None),
                &["metadata.deletionTimestamp: Invalid value: \"1970-01-01 00:16:40 +0000 UTC\": field is immutable"],
            ),
            (
                m(Some(now), None),
                m(None, None),
                &["metadata.deletionTimestamp: Invalid value: \"null\": field is immutable"],
            ),
            (
                m(Some(now), None),
                m(Some(later), None),
                &["metadata.deletionTimestamp: Invalid value: \"1970-01-01 00:33:20 +0000 UTC\": field is immutable"],
            ),
            (
                m(None, None),
                m(None, Some(30)),
                &["metadata.deletionGracePeriodSeconds: Invalid value: 30: field is immutable"],
            ),
            (
                m(None, Some(30)),
                m(None, None),
                &["metadata.deletionGracePeriodSeconds: Invalid value: \"null\": field is immutable"],
            ),
            (
                m(None, Some(30)),
                m(None, Some(40)),
                &["metadata.deletionGracePeriodSeconds: Invalid value: 40: field is immutable"],
            ),
        ];
        for (old, new, want) in cases {
            assert_eq!(update(new.clone(), old.clone()), *want, "{old} -> {new}");
        }
        let g = |n: i64| json!({"name": "test", "resourceVersion": "1", "generation": n});
        assert_eq!(update(g(4), g(5)), ["metadata.generation: Invalid value: 4: must not be decremented"]);
        assert!(update(g(2), g(1)).is_empty());
        assert!(update(g(5), g(5)).is_empty());
    }

    #[test]
    fn update_identity_fields() {
        let old = json!({"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "1", "labels": {"ok": "v"}});
        let new = json!({"name": "b", "namespace": "ns2", "uid": "u2", "labels": {"bad": "-v"}});
        assert_eq!(
            update(new, old),
            [
                "metadata.resourceVersion: Invalid value: \"\": must be specified for an update",
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.namespace: Invalid value: \"ns2\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
                "metadata.labels: Invalid value: \"-v\": a valid label must be an empty string or consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
             'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ]
        );
        // generateName is not checked on update, as upstream.
        let old = json!({"name": "a", "generateName": "x-", "resourceVersion": "1"});
        assert!(update(json!({"name": "a", "generateName": "y-", "resourceVersion": "2"}), old).is_empty());
    }
}
