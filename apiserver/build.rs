//! Build script: writes `$OUT_DIR/protobuf_schema.rs`, the schema table `src/http/protobuf` decodes Kubernetes
//! protobuf bodies with, derived from two crates.io packages (their sources as cargo downloaded them):
//!
//! * `k8s-pb` (a build-dependency, never linked): prost structs whose `#[prost(..)]` attributes give each field's
//!   tag, wire type and cardinality, the field's Rust type gives the message type, and the module path gives the
//!   package (`api/apps/v1` -> `api.apps.v1`). Its `impl crate::Resource` blocks give API groups.
//! * `k8s-openapi` (a normal dependency): each struct's `Deserialize` impl maps JSON names to Rust fields
//!   (`"clusterIP" => Field::Key_cluster_ip`), its header names the upstream type, its field types say which fields
//!   are required (not `Option`), and its `impl crate::Resource` blocks give API groups too.
//!
//! Fields are joined by a normalized name (lowercase, only letters and digits: prost's `external_i_ps` and
//! k8s-openapi's `external_ips` both become `externalips`). A message field with no JSON counterpart whose own JSON
//! fields all appear in the parent is an embedded Go struct (`Volume.volumeSource`) and is marked inline. A message
//! k8s-openapi lacks takes the struct of the same name in another version of its group (`apps/v1beta2`); failing
//! that (protobuf-only types), a field takes the JSON name its normalized name most often has in k8s-openapi if that
//! only capitalizes more than prost's name in lowerCamelCase (`volumeID`), else the latter. The generated file ends
//! with the fields named that way.
//!
//! Both crates are found with `cargo metadata --offline` (or in `Cargo.lock` and cargo's registry). The script reruns when it changes or when either crate is
//! rebuilt (k8s-pb is a build-dependency; k8s-openapi's `links` metadata is read from `DEP_K8S_OPENAPI_*`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = run() {
        eprintln!("error: kplane-apiserver build script: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let started = std::time::Instant::now();
    let (pb_src, openapi_src) = locate_sources()?;
    let located = started.elapsed();
    let pb = parse_k8s_pb(&pb_src)?;
    let mut openapi = OpenApi::default();
    for dir in openapi_version_dirs(&openapi_src)? {
        openapi.parse_dir(&dir, &dir)?;
    }
    let parsed = started.elapsed();
    let out = render(&pb, &openapi)?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let path = out_dir.join("protobuf_schema.rs");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(out.as_str()) {
        std::fs::write(&path, out).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if std::env::var_os("KPLANE_BUILD_TIMING").is_some() {
        println!(
            "cargo:warning=protobuf schema: locating crates {located:?}, parsing {:?}, total {:?}",
            parsed - located,
            started.elapsed()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Locating the crates

const CRATES: [&str; 2] = ["k8s-pb", "k8s-openapi"];

/// `src/` of the `k8s-pb` and `k8s-openapi` packages this crate is built with, from `cargo metadata --offline`, or
/// from `Cargo.lock` and cargo's registry sources when that fails: metadata needs every package of the workspace
/// downloaded, a build only its own (another member may have just added a dependency).
fn locate_sources() -> Result<(PathBuf, PathBuf), String> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let [pb, openapi] = from_metadata(&manifest_dir).or_else(|metadata| {
        from_lockfile(&manifest_dir).map_err(|lock| {
            format!("cannot find the sources of k8s-pb and k8s-openapi (try `cargo fetch`)\n  {metadata}\n  {lock}")
        })
    })?;
    Ok((pb, openapi))
}

fn src_dir(name: &str, manifest: &Path) -> Result<PathBuf, String> {
    let src = manifest.parent().unwrap_or(Path::new("")).join("src");
    if !src.is_dir() {
        return Err(format!("{name}: source directory {} not found", src.display()));
    }
    Ok(src)
}

fn from_metadata(manifest_dir: &Path) -> Result<[PathBuf; 2], String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(manifest_dir)
        .output()
        .map_err(|e| format!("cannot run `{cargo} metadata`: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata --offline: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages = meta["packages"].as_array().ok_or("cargo metadata: no packages")?;
    let own_manifest = manifest_dir.join("Cargo.toml");
    let own_id = packages
        .iter()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(own_manifest.as_path()))
        .and_then(|p| p["id"].as_str())
        .ok_or("cargo metadata does not list kplane-apiserver")?;
    let nodes = meta["resolve"]["nodes"].as_array().ok_or("cargo metadata: no resolve graph")?;
    let deps: BTreeSet<&str> = nodes
        .iter()
        .find(|n| n["id"].as_str() == Some(own_id))
        .and_then(|n| n["deps"].as_array())
        .ok_or("cargo metadata: kplane-apiserver is not in the resolve graph")?
        .iter()
        .filter_map(|d| d["pkg"].as_str())
        .collect();
    let src_of = |name: &str| -> Result<PathBuf, String> {
        let package = packages
            .iter()
            .find(|p| p["name"].as_str() == Some(name) && p["id"].as_str().is_some_and(|id| deps.contains(id)))
            .ok_or_else(|| format!("{name} is not a dependency of kplane-apiserver (see apiserver/Cargo.toml)"))?;
        let manifest = package["manifest_path"].as_str().ok_or_else(|| format!("{name}: no manifest_path"))?;
        src_dir(name, Path::new(manifest))
    };
    Ok([src_of(CRATES[0])?, src_of(CRATES[1])?])
}

/// The versions `Cargo.lock` gives kplane-apiserver's dependencies, found in `$CARGO_HOME/registry/src/*/`.
fn from_lockfile(manifest_dir: &Path) -> Result<[PathBuf; 2], String> {
    let lock_path =
        manifest_dir.ancestors().map(|d| d.join("Cargo.lock")).find(|p| p.is_file()).ok_or("no Cargo.lock")?;
    let lock = std::fs::read_to_string(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // `[[package]]` blocks as (name, version, dependencies)
    let blocks: Vec<(&str, &str, Vec<&str>)> = lock
        .split("[[package]]")
        .map(|block| {
            let value = |key: &str| {
                block.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(" = \"")?.strip_suffix('"')).unwrap_or("")
            };
            let deps = block.split_once("dependencies = [").map_or("", |(_, d)| d.split(']').next().unwrap_or(""));
            let deps = deps.split(',').map(|d| d.trim().trim_matches('"')).filter(|d| !d.is_empty()).collect();
            (value("name"), value("version"), deps)
        })
        .collect();
    let own = blocks.iter().find(|b| b.0 == "kplane-apiserver").ok_or("Cargo.lock has no kplane-apiserver")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let registry = cargo_home.join("registry").join("src");
    let src_of = |name: &str| -> Result<PathBuf, String> {
        // "name" when the lock has one version of it, else "name version"
        let dep = own
            .2
            .iter()
            .find(|d| d.split(' ').next() == Some(name))
            .ok_or_else(|| format!("Cargo.lock: {name} is not a dependency of kplane-apiserver"))?;
        let version = match dep.split(' ').nth(1) {
            Some(v) => v,
            None => blocks.iter().find(|b| b.0 == name).map(|b| b.1).unwrap_or_default(),
        };
        let mut found: Vec<PathBuf> = std::fs::read_dir(&registry)
            .map_err(|e| format!("{}: {e}", registry.display()))?
            .filter_map(|index| Some(index.ok()?.path().join(format!("{name}-{version}")).join("Cargo.toml")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        let manifest =
            found.first().ok_or_else(|| format!("{name}-{version} not found under {}", registry.display()))?;
        src_dir(name, manifest)
    };
    Ok([src_of(CRATES[0])?, src_of(CRATES[1])?])
}

/// k8s-openapi's version directories to read: the enabled one (its `links` metadata `version` is `0x0001_MM00`),
/// then the newest, for types and fields the enabled version lacks (k8s-pb may follow a newer Kubernetes).
fn openapi_version_dirs(src: &Path) -> Result<Vec<PathBuf>, String> {
    let enabled = std::env::vars()
        .find(|(k, _)| k.starts_with("DEP_K8S_OPENAPI") && k.ends_with("_VERSION"))
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .map(|v| (v >> 8) & 0xff)
        .ok_or("DEP_K8S_OPENAPI_*_VERSION not set: k8s-openapi must be a direct dependency with a v1_* feature")?;
    let newest = std::fs::read_dir(src)
        .map_err(|e| format!("{}: {e}", src.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("v1_")?.parse::<u32>().ok())
        .max()
        .unwrap_or(enabled);
    let mut dirs = vec![src.join(format!("v1_{enabled}"))];
    if !dirs[0].is_dir() {
        return Err(format!("k8s-openapi source has no v1_{enabled} directory under {}", src.display()));
    }
    if newest > enabled {
        dirs.push(src.join(format!("v1_{newest}")));
    }
    Ok(dirs)
}

/// Source files under `dir`, sorted (for a deterministic table).
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `api/core/v1/mod.rs` under `root` -> `api.core.v1` (the directory of the file).
fn module_of(root: &Path, file: &Path) -> String {
    let dir = file.parent().unwrap_or(root).strip_prefix(root).unwrap_or(Path::new(""));
    dir.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join(".")
}

/// The join key: lowercase letters and digits only.
fn norm(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Value of `const NAME: &'static str = "value";`.
fn const_str<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix("const ")?.strip_prefix(name)?.strip_prefix(": &'static str = \"")?;
    rest.strip_suffix("\";")
}

// ---------------------------------------------------------------------------------------------------------------
// k8s-pb

#[derive(Debug, Clone, PartialEq)]
enum PbType {
    Scalar(&'static str),
    /// Full name of the message type (`api.core.v1.Container`).
    Message(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PbLabel {
    Optional,
    Repeated,
    Map,
}

#[derive(Debug)]
struct PbField {
    rust: String,
    tag: u32,
    ty: PbType,
    label: PbLabel,
}

#[derive(Debug, Default)]
struct Pb {
    /// Full name (`api.core.v1.Service`) -> fields.
    messages: BTreeMap<String, Vec<PbField>>,
    /// Module of a group's versions (`api.apps`) -> API group (`apps`), from `impl crate::Resource`.
    groups: BTreeMap<String, String>,
}

const SCALARS: &[&str] = &["bool", "int32", "int64", "double", "string", "bytes"];

fn parse_k8s_pb(src: &Path) -> Result<Pb, String> {
    let mut pb = Pb::default();
    for file in rust_files(src)? {
        if file.file_name().is_some_and(|n| n != "mod.rs") {
            continue;
        }
        let module = module_of(src, &file);
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        parse_pb_module(&mut pb, &module, &text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if pb.messages.len() < 500 {
        return Err(format!(
            "only {} messages found in {}: unexpected k8s-pb layout",
            pb.messages.len(),
            src.display()
        ));
    }
    Ok(pb)
}

fn parse_pb_module(pb: &mut Pb, module: &str, text: &str) -> Result<(), String> {
    let mut current: Option<(String, Vec<PbField>)> = None;
    let mut attr: Option<String> = None;
    let mut decl = String::new();
    let mut in_resource = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("pub struct ").and_then(|l| l.strip_suffix(" {}")) {
            pb.messages.insert(format!("{module}.{name}"), Vec::new());
        } else if let Some(name) = line.strip_prefix("pub struct ").and_then(|l| l.strip_suffix(" {")) {
            current = Some((format!("{module}.{name}"), Vec::new()));
        } else if line == "}" {
            if let Some((name, fields)) = current.take() {
                pb.messages.insert(name, fields);
            }
            in_resource = false;
        } else if line.starts_with("impl crate::Resource for ") {
            in_resource = true;
        } else if in_resource {
            if let Some(group) = const_str(line, "GROUP") {
                let versions = module.rsplit_once('.').map_or(module, |(m, _)| m);
                pb.groups.insert(versions.to_string(), group.to_string());
            }
        } else if let Some((_, fields)) = current.as_mut() {
            let trimmed = line.trim();
            if let Some(a) = trimmed.strip_prefix("#[prost(").and_then(|a| a.strip_suffix(")]")) {
                attr = Some(a.to_string());
                decl.clear();
            } else if trimmed.starts_with("#[prost") {
                return Err(format!("unsupported attribute {trimmed}"));
            } else if attr.is_some() && !trimmed.starts_with("//") && !trimmed.starts_with("#[") {
                decl.push_str(trimmed);
                let depth = decl.matches('<').count() as isize - decl.matches('>').count() as isize;
                if decl.ends_with(',') && depth == 0 {
                    let a = attr.take().unwrap_or_default();
                    fields.push(pb_field(module, &a, &decl).map_err(|e| format!("field `{decl}`: {e}"))?);
                }
            }
        }
    }
    Ok(())
}

/// One field from its `#[prost(..)]` attribute and its declaration `pub name: Type,`.
fn pb_field(module: &str, attr: &str, decl: &str) -> Result<PbField, String> {
    let (rust, ty) =
        decl.strip_prefix("pub ").and_then(|d| d.split_once(':')).ok_or("not a `pub name: Type` declaration")?;
    let mut parts = split_attr(attr).into_iter();
    let kind = parts.next().unwrap_or_default();
    let mut label = PbLabel::Optional;
    let mut tag = None;
    for part in parts {
        match part.as_str() {
            "optional" | "boxed" => {}
            "repeated" => label = PbLabel::Repeated,
            p if p.starts_with("packed = ") => {}
            p => match p.strip_prefix("tag = \"").and_then(|t| t.strip_suffix('"')) {
                Some(t) => tag = Some(t.parse::<u32>().map_err(|e| e.to_string())?),
                None => return Err(format!("unsupported prost option `{p}`")),
            },
        }
    }
    let tag = tag.ok_or("no tag")?;
    let value_kind = if let Some(map) = kind.strip_prefix("btree_map = \"").or_else(|| kind.strip_prefix("map = \"")) {
        label = PbLabel::Map;
        match map.trim_end_matches('"').split_once(", ") {
            Some(("string", value)) => value.to_string(),
            _ => return Err(format!("unsupported map `{kind}`")),
        }
    } else {
        kind.split(" = ").next().unwrap_or_default().to_string()
    };
    let ty = match value_kind.as_str() {
        "message" => PbType::Message(resolve_type(module, ty)?),
        s => PbType::Scalar(SCALARS.iter().find(|k| **k == s).ok_or_else(|| format!("unsupported type `{s}`"))?),
    };
    Ok(PbField { rust: rust.trim_start_matches("r#").to_string(), tag, ty, label })
}

/// Splits `message, optional, tag = "1"` at top-level commas (not inside quotes).
fn split_attr(attr: &str) -> Vec<String> {
    let (mut parts, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in attr.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        parts.push(cur.trim().to_string());
    }
    parts
}

/// Full message name of a field's Rust type: the last path that is not a std/prost wrapper, resolved against the
/// module (`super::super::core::v1::Container` in `api.apps.v1` -> `api.core.v1.Container`).
fn resolve_type(module: &str, ty: &str) -> Result<String, String> {
    const WRAPPERS: &[&str] = &[
        "::core::option::Option",
        "::prost::alloc::vec::Vec",
        "::prost::alloc::boxed::Box",
        "::prost::alloc::collections::BTreeMap",
        "::prost::alloc::string::String",
        "::std::collections::HashMap",
    ];
    let path = ty
        .split(['<', '>', ','])
        .map(str::trim)
        .rfind(|p| !p.is_empty() && !WRAPPERS.contains(p))
        .ok_or_else(|| format!("no message type in `{ty}`"))?;
    let mut segments: Vec<&str> = module.split('.').collect();
    let mut rest = path.split("::").peekable();
    if rest.peek() == Some(&"crate") {
        segments.clear();
        rest.next();
    }
    for seg in rest {
        match seg {
            "super" => {
                segments.pop().ok_or_else(|| format!("`{path}` leaves the crate"))?;
            }
            s => segments.push(s),
        }
    }
    Ok(segments.join("."))
}

// ---------------------------------------------------------------------------------------------------------------
// k8s-openapi

#[derive(Debug, Clone)]
struct OaField {
    rust: String,
    json: String,
    required: bool,
}

#[derive(Debug, Default)]
struct OaStruct {
    /// Upstream type name (`AWSElasticBlockStoreVolumeSource`).
    name: String,
    fields: Vec<OaField>,
}

#[derive(Debug, Default)]
struct OpenApi {
    /// (module, normalized type name) -> struct; the first version directory parsed wins, later ones add fields.
    structs: HashMap<(String, String), OaStruct>,
    groups: BTreeMap<String, String>,
}

impl OpenApi {
    fn parse_dir(&mut self, root: &Path, dir: &Path) -> Result<(), String> {
        for file in rust_files(dir)? {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let module = module_of(root, &file);
            let Some(def) = text.lines().next().and_then(|l| l.strip_prefix("// Generated from definition ")) else {
                continue;
            };
            let name = def.rsplit('.').next().unwrap_or(def).to_string();
            let parsed = parse_oa_struct(&text, &name);
            let entry = self
                .structs
                .entry((module.clone(), norm(&name)))
                .or_insert_with(|| OaStruct { name, ..Default::default() });
            for f in parsed {
                if !entry.fields.iter().any(|e| e.rust == f.rust) {
                    entry.fields.push(f);
                }
            }
            let group =
                text.find("const GROUP: ").and_then(|i| text[i..].lines().next()).and_then(|l| const_str(l, "GROUP"));
            if let Some(group) = group {
                let versions = module.rsplit_once('.').map_or(module.as_str(), |(m, _)| m);
                self.groups.entry(versions.to_string()).or_insert_with(|| group.to_string());
            }
        }
        Ok(())
    }
}

/// JSON fields of `pub struct {name} { .. }`: Rust field types from the struct, JSON names from the `Deserialize`
/// impl's `"jsonName" => Field::Key_rust_name` arms (found with `str::find`: this must be fast in a debug build).
fn parse_oa_struct(text: &str, name: &str) -> Vec<OaField> {
    let header = format!("\npub struct {name} {{\n");
    let Some(start) = text.find(&header).map(|i| i + header.len()) else { return Vec::new() };
    let body = &text[start..start + text[start..].find("\n}\n").unwrap_or(0)];
    let mut required: HashMap<&str, bool> = HashMap::new();
    for line in body.lines() {
        if let Some((rust, ty)) = line.strip_prefix("    pub ").and_then(|l| l.split_once(": ")) {
            required.insert(rust, !ty.starts_with("Option<"));
        }
    }
    let Some(arms) = text.find("fn visit_str").map(|i| &text[i..]) else { return Vec::new() };
    let arms = &arms[..arms.find("_ => Field::Other").unwrap_or(0)];
    let mut fields = Vec::new();
    for line in arms.lines() {
        let Some((json, key)) = line.trim().strip_prefix('"').and_then(|l| l.split_once("\" => Field::Key_")) else {
            continue;
        };
        let rust = key.trim_end_matches(',');
        if let Some(req) = required.get(rust) {
            fields.push(OaField { rust: rust.to_string(), json: json.to_string(), required: *req });
        }
    }
    fields
}

// ---------------------------------------------------------------------------------------------------------------
// The table

/// Modules of API groups that neither crate names in an `impl Resource` (no served resources of their own), and
/// `meta.k8s.io`, whose types k8s-openapi files under the core group (`Status` is served as `v1`).
const EXTRA_GROUPS: &[(&str, &str)] = &[
    ("api.admission", "admission.k8s.io"),
    ("api.apidiscovery", "apidiscovery.k8s.io"),
    ("api.extensions", "extensions"),
    ("api.imagepolicy", "imagepolicy.k8s.io"),
    ("apimachinery.pkg.apis.meta", "meta.k8s.io"),
    ("metrics.pkg.apis.metrics", "metrics.k8s.io"),
    ("metrics.pkg.apis.custom_metrics", "custom.metrics.k8s.io"),
    ("metrics.pkg.apis.external_metrics", "external.metrics.k8s.io"),
];

/// Messages whose JSON form is not their protobuf structure, by module (`*` = any) and name, with the fields the
/// decoder reads (checked here so a k8s-pb change fails the build, not a request).
const SPECIALS: &[(&str, &str, &str, &[&str])] = &[
    ("apimachinery.pkg.apis.meta.v1", "Time", "Time", &["seconds", "nanos"]),
    ("apimachinery.pkg.apis.meta.v1", "MicroTime", "MicroTime", &["seconds", "nanos"]),
    ("apimachinery.pkg.apis.meta.v1", "Duration", "Duration", &["duration"]),
    ("apimachinery.pkg.apis.meta.v1", "FieldsV1", "RawJson", &["raw"]),
    ("apimachinery.pkg.apis.meta.v1", "Verbs", "Items", &["items"]),
    ("apimachinery.pkg.util.intstr", "IntOrString", "IntOrString", &["type", "intVal", "strVal"]),
    ("apimachinery.pkg.api.resource", "Quantity", "Quantity", &["string"]),
    ("apimachinery.pkg.api.resource", "QuantityValue", "Quantity", &["string"]),
    ("apimachinery.pkg.runtime", "RawExtension", "RawJson", &["raw"]),
    ("*", "ExtraValue", "Items", &["items"]),
    ("*", "Json", "RawJson", &["raw"]),
    ("*", "JsonSchemaPropsOrArray", "SchemaOrArray", &["schema", "jsonSchemas"]),
    ("*", "JsonSchemaPropsOrBool", "SchemaOrBool", &["allows", "schema"]),
    ("*", "JsonSchemaPropsOrStringArray", "SchemaOrStringArray", &["schema", "property"]),
];

/// prost's snake_case name in lowerCamelCase (`external_i_ps` -> `externalIPs`), for fields k8s-openapi lacks.
fn camel(rust: &str) -> String {
    let mut out = String::new();
    for (i, part) in rust.split('_').enumerate() {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(if i == 0 { first } else { first.to_ascii_uppercase() });
            out.extend(chars);
        }
    }
    out
}

/// `v1`, `v2beta1`, `v1alpha3`: the last module segment of a group-version.
fn is_version(s: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let Some(rest) = s.strip_prefix('v') else { return false };
    let (major, qualifier) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()));
    digits(major)
        && (qualifier.is_empty()
            || qualifier.strip_prefix("alpha").or_else(|| qualifier.strip_prefix("beta")).is_some_and(digits))
}

/// The k8s-openapi field a prost field is, by normalized Rust or JSON name.
fn oa_field<'a>(s: &'a OaStruct, rust: &str) -> Option<&'a OaField> {
    let n = norm(rust);
    s.fields.iter().find(|o| norm(&o.rust) == n).or_else(|| s.fields.iter().find(|o| norm(&o.json) == n))
}

/// Where each message's JSON names come from: its own k8s-openapi struct or, for a Go struct embedded in another
/// (OpenAPI has no definition for `VolumeSource`), the struct it is inlined into; and the inlined fields
/// (message, field): optional message fields with no JSON name whose type's fields all have one in the parent.
fn json_sources<'a>(pb: &'a Pb, oa: &'a OpenApi) -> (HashMap<&'a str, &'a OaStruct>, BTreeSet<(&'a str, u32)>) {
    let mut sources: HashMap<&str, &OaStruct> = HashMap::new();
    let mut by_group: BTreeMap<(&str, &str, &str), &OaStruct> = BTreeMap::new();
    for ((module, name), s) in &oa.structs {
        if let Some((group, version)) = module.rsplit_once('.').filter(|(_, v)| is_version(v)) {
            by_group.insert((group, name, version), s);
        }
    }
    for full in pb.messages.keys() {
        let (module, name) = full.rsplit_once('.').unwrap_or(("", full));
        let own = oa.structs.get(&(module.to_string(), norm(name)));
        // a version k8s-openapi no longer has (`apps/v1beta2`): the same type in another version of the group
        let sibling = || {
            let (group, _) = module.rsplit_once('.')?;
            let n = norm(name);
            by_group
                .range((group, n.as_str(), "")..)
                .next()
                .filter(|((g, m, _), _)| *g == group && *m == n)
                .map(|(_, s)| *s)
        };
        if let Some(s) = own.or_else(sibling) {
            sources.insert(full, s);
        }
    }
    let mut inline = BTreeSet::new();
    // three rounds: an embedded struct may itself embed one
    for _ in 0..3 {
        for (full, fields) in &pb.messages {
            let Some(&parent) = sources.get(full.as_str()) else { continue };
            for f in fields {
                let PbType::Message(target) = &f.ty else { continue };
                let Some(inner) = pb.messages.get(target) else { continue };
                if f.label != PbLabel::Optional || oa_field(parent, &f.rust).is_some() || inner.is_empty() {
                    continue;
                }
                if fits(pb, parent, inner, 3) {
                    inline.insert((full.as_str(), f.tag));
                    sources.entry(target.as_str()).or_insert(parent);
                }
            }
        }
    }
    (sources, inline)
}

/// Whether every field of a message has a JSON name in `parent`, directly or through an embedded struct.
fn fits(pb: &Pb, parent: &OaStruct, fields: &[PbField], depth: usize) -> bool {
    depth > 0
        && fields.iter().all(|f| {
            oa_field(parent, &f.rust).is_some()
                || match &f.ty {
                    PbType::Message(t) => pb.messages.get(t).is_some_and(|i| fits(pb, parent, i, depth - 1)),
                    PbType::Scalar(_) => false,
                }
        })
}

fn render(pb: &Pb, oa: &OpenApi) -> Result<String, String> {
    let index: HashMap<&str, usize> = pb.messages.keys().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let (sources, inline) = json_sources(pb, oa);
    let mut out =
        String::from("// @generated by apiserver/build.rs from the k8s-pb and k8s-openapi crates. Do not edit.\n");
    out.push_str("pub(super) static MESSAGES: &[Message] = &[\n");
    let (mut unmatched, mut camel_cased) = (Vec::new(), Vec::new());
    // fields: with no JSON name in their type's struct, of which with none in any struct either
    let mut stats = [pb.messages.values().map(Vec::len).sum::<usize>(), 0, 0];
    // the most common JSON name of each normalized field name, for types k8s-openapi does not have at all
    let mut counts: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    for s in oa.structs.values() {
        for f in &s.fields {
            *counts.entry(norm(&f.rust)).or_default().entry(f.json.as_str()).or_default() += 1;
        }
    }
    let global: HashMap<String, &str> = counts
        .into_iter()
        .filter_map(|(n, c)| Some((n, *c.iter().max_by_key(|(json, count)| (**count, std::cmp::Reverse(**json)))?.0)))
        .collect();
    let mut specials_seen = BTreeSet::new();
    for (full, fields) in &pb.messages {
        let (module, name) = full.rsplit_once('.').unwrap_or(("", full));
        let special = SPECIALS.iter().find(|(m, n, _, _)| (*m == module || *m == "*") && *n == name);
        let source = sources.get(full.as_str()).copied();
        let mut rows = Vec::new();
        for f in fields {
            let is_inline = inline.contains(&(full.as_str(), f.tag));
            let (json, required) = match (special, source.and_then(|s| oa_field(s, &f.rust))) {
                (Some((_, _, _, names)), _) => {
                    let n = norm(&f.rust);
                    (names.iter().find(|w| norm(w) == n).map_or_else(|| camel(&f.rust), |w| w.to_string()), false)
                }
                (None, Some(o)) => (o.json.clone(), o.required),
                (None, None) if is_inline => (camel(&f.rust), false),
                (None, None) => {
                    stats[1] += 1;
                    if source.is_some() {
                        unmatched.push(format!("{full}.{}", f.rust));
                    }
                    // the common JSON name, if it only capitalizes more (`volumeID` for prost's `volume_id`)
                    let camel_name = camel(&f.rust);
                    let caps = |s: &str| s.chars().filter(char::is_ascii_uppercase).count();
                    let known = global
                        .get(&norm(&f.rust))
                        .filter(|j| j.eq_ignore_ascii_case(&camel_name) && caps(j) >= caps(&camel_name));
                    match known {
                        Some(json) => (json.to_string(), false),
                        None => {
                            stats[2] += 1;
                            camel_cased.push(format!("{full}.{}", f.rust));
                            (camel_name, false)
                        }
                    }
                }
            };
            let ty = |ty: &PbType| match ty {
                PbType::Scalar(s) => Ok(scalar_const(s).to_string()),
                PbType::Message(m) => {
                    let i = index.get(m.as_str()).ok_or_else(|| format!("{full}: unknown message type {m}"))?;
                    Ok::<_, String>(format!("M({i})"))
                }
            };
            let (ty, label) = match f.label {
                PbLabel::Optional => (ty(&f.ty)?, "O".to_string()),
                PbLabel::Repeated => (ty(&f.ty)?, "R".to_string()),
                PbLabel::Map => ("S".to_string(), format!("Label::Map({})", ty(&f.ty)?)),
            };
            let flags = u8::from(required) | u8::from(is_inline) << 1;
            rows.push((f.tag, format!("f({}, {json:?}, {ty}, {label}, {flags})", f.tag)));
        }
        if let Some((_, _, variant, needed)) = special {
            for want in *needed {
                if !fields.iter().any(|f| norm(&f.rust) == norm(want)) {
                    return Err(format!("k8s-pb message {full} has no field {want}: unexpected k8s-pb version"));
                }
            }
            specials_seen.insert(*variant);
        }
        rows.sort_by_key(|(tag, _)| *tag);
        if rows.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(format!("{full}: duplicate field tag"));
        }
        let display = oa_name(oa, full).unwrap_or(name);
        let variant = special.map_or("None", |s| s.2);
        let _ = writeln!(out, "    Message {{ name: {display:?}, special: Special::{variant}, fields: &[");
        for (_, row) in rows {
            let _ = writeln!(out, "        {row},");
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n");
    if specials_seen.len() != 10 {
        return Err(format!("k8s-pb lacks special messages (found {specials_seen:?}): unexpected k8s-pb version"));
    }

    // (apiVersion, kind) -> message: every message of a group-version module.
    let groups: BTreeMap<&str, &str> = (oa.groups.iter().map(|(m, g)| (m.as_str(), g.as_str())))
        .chain(pb.groups.iter().map(|(m, g)| (m.as_str(), g.as_str())))
        .chain(EXTRA_GROUPS.iter().copied())
        .collect();
    let mut kinds = BTreeMap::new();
    for (i, full) in pb.messages.keys().enumerate() {
        let (module, name) = full.rsplit_once('.').unwrap_or(("", full));
        let Some((versions, version)) = module.rsplit_once('.') else { continue };
        let Some(group) = groups.get(versions).filter(|_| is_version(version)) else { continue };
        let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        let kind = oa_name(oa, full).unwrap_or(name);
        if kinds.insert((api_version.clone(), kind), i).is_some() {
            return Err(format!("duplicate kind {api_version} {kind}"));
        }
    }
    out.push_str("\n/// `(apiVersion, kind, message)`, sorted.\npub(super) static KINDS: &[(&str, &str, u16)] = &[\n");
    for ((api_version, kind), i) in &kinds {
        let _ = writeln!(out, "    ({api_version:?}, {kind:?}, {i}),");
    }
    out.push_str("];\n");
    let unknown = index.get("apimachinery.pkg.runtime.Unknown").ok_or("k8s-pb has no runtime.Unknown")?;
    let _ = writeln!(
        out,
        "\n/// `runtime.Unknown`, the envelope of every body.\npub(super) const UNKNOWN: u16 = {unknown};"
    );
    let _ = writeln!(
        out,
        "\n// {} fields; {} with no JSON name in their type's k8s-openapi struct (protobuf-only or unserved types), of \
         which {} have no JSON name in any struct and get prost's name in lowerCamelCase:",
        stats[0], stats[1], stats[2]
    );
    for name in &camel_cased {
        let _ = writeln!(out, "//   {name}");
    }
    let _ = writeln!(out, "// Fields of types k8s-openapi has (or another version of), with no JSON name there:");
    for name in &unmatched {
        let _ = writeln!(out, "//   {name}");
    }
    if pb.messages.len() > usize::from(u16::MAX) {
        return Err("too many messages for u16 indices".into());
    }
    Ok(out)
}

/// Upstream name of a message (`AWSElasticBlockStoreVolumeSource` for k8s-pb's `AwsElasticBlockStoreVolumeSource`).
fn oa_name<'a>(oa: &'a OpenApi, full: &str) -> Option<&'a str> {
    let (module, name) = full.rsplit_once('.')?;
    oa.structs.get(&(module.to_string(), norm(name))).map(|s| s.name.as_str())
}

/// The short names `schema.rs` gives the scalar types in the table.
fn scalar_const(s: &str) -> &'static str {
    match s {
        "bool" => "B",
        "int32" => "I32",
        "int64" => "I64",
        "double" => "D",
        "string" => "S",
        _ => "BY",
    }
}
