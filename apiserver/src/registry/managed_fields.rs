//! `metadata.managedFields`: who owns which fields (`k8s.io/apimachinery/pkg/util/managedfields`
//! and `structured-merge-diff/merge`). Updates (create, update, non-apply patch) give their
//! manager the fields they changed and take them from everyone else; server-side apply merges the
//! configuration (`patch::apply`), removes what the same manager applied before and no one owns
//! now, and refuses to change another manager's field unless forced. Only writes pay for this.

use crate::error::{ApiError, ApiResult, FieldError, FieldErrorType, Reason};
use crate::patch::apply::fieldpath::{PathDisplay, PathElement, Set};
use crate::patch::apply::{self, schema::Node};
use serde_json::{Map, Value, json};

/// The annotation client-side `kubectl apply` keeps its configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The manager whose applies keep that annotation current (`lastAppliedUpdater`).
const KUBECTL: &str = "kubectl";
/// Update managers kept before the oldest are merged (`DefaultMaxUpdateManagers`).
const MAX_UPDATE_MANAGERS: usize = 10;
/// Metadata fields no one owns (`stripMetaManager`).
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: &'static str,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: Set,
}

impl Entry {
    /// Whether this is the entry of that manager (`BuildManagerIdentifier`: appliers are one
    /// entry whatever the version; updaters one per version).
    fn is(&self, manager: &str, operation: &str, api_version: &str, subresource: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }

    /// How conflicts name this manager (`printManager`).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone().into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), self.subresource.clone().into());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let operation = match v.get("operation").and_then(Value::as_str) {
            Some("Apply") => "Apply",
            Some("Update") => "Update",
            other => return Err(format!("unknown operation {other:?}")),
        };
        let set = match v.get("fieldsV1") {
            None | Some(Value::Null) => Set::new(),
            Some(f) => Set::from_fields_v1(f)?,
        };
        Ok(Entry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set,
        })
    }
}

/// The entries of an object (`DecodeManagedFields`).
pub fn decode(obj: &Value) -> Result<Vec<Entry>, String> {
    let Some(list) = obj.get("metadata").and_then(|m| m.get("managedFields")) else { return Ok(Vec::new()) };
    let list = match list {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("managedFields is not a list".into()),
    };
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for v in list {
        let e = Entry::from_json(v)?;
        if out.iter().any(|o| o.is(&e.manager, e.operation, &e.api_version, &e.subresource)) {
            return Err(format!("duplicate manager {:?}", e.manager));
        }
        out.push(e);
    }
    Ok(out)
}

/// Writes the entries into the object, in upstream's order (operation, time, manager, version,
/// subresource); none at all removes the field.
pub fn encode(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (a.operation, a.time.as_deref().unwrap_or(""), &a.manager, &a.api_version, &a.subresource).cmp(&(
            b.operation,
            b.time.as_deref().unwrap_or(""),
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let m = super::meta::meta_mut(obj);
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(entries.iter().map(Entry::to_json).collect()));
    }
}

/// The manager of a request without `fieldManager`: the User-Agent up to its first `/`, printable
/// characters only, at most 128 bytes (`prefixFromUserAgent`).
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 128 {
            break;
        }
        out.push(c);
    }
    out
}

/// Where a write happens: the kind's structure, its version, the subresource written through.
pub struct Scope {
    pub root: &'static Node,
    pub api_version: String,
    pub kind: &'static str,
    /// `""` for the object itself, else `status`, `scale`, …
    pub subresource: &'static str,
    /// Whether the kind has a status subresource (then writes to the object own no status).
    pub has_status: bool,
}

impl Scope {
    /// The part of `set` a write here can own: not the stripped metadata, and not what the
    /// strategy resets (`status` through the object; anything but status and metadata through
    /// `/status`).
    fn filter(&self, set: &Set) -> Set {
        let mut out = set.clone();
        out.member = false;
        out.children.retain(|pe, _| {
            let PathElement::Field(f) = pe else { return false };
            match f.as_str() {
                "apiVersion" | "kind" => false,
                "metadata" => true,
                "status" => self.subresource == "status" || !self.has_status,
                _ => self.subresource != "status",
            }
        });
        if let Some(meta) = out.children.get_mut(&PathElement::Field("metadata".into())) {
            meta.member = false;
            meta.children.retain(|pe, _| !matches!(pe, PathElement::Field(f) if STRIPPED_META.contains(&f.as_str())));
        }
        out.children.retain(|_, c| !c.is_empty());
        out
    }

    fn compare(&self, old: &Value, new: &Value) -> apply::Comparison {
        let c = apply::compare(old, new, self.root);
        apply::Comparison {
            added: self.filter(&c.added),
            modified: self.filter(&c.modified),
            removed: self.filter(&c.removed),
        }
    }
}

/// The scope of writes to a kind through `subresource` (`""` for the object itself).
pub fn scope(info: &super::ResourceInfo, subresource: &'static str) -> Scope {
    Scope {
        root: apply::schema::of_kind(info.kind),
        api_version: info.api_version(),
        kind: info.kind,
        subresource,
        has_status: info.subresources.contains(&super::Subresource::Status),
    }
}

/// An untracked write that sends no managedFields keeps the live ones.
pub fn keep_live(old: &Value, new: &mut Value) {
    let has = new.get("metadata").and_then(|m| m.get("managedFields")).is_some_and(|f| !f.is_null());
    if let (false, Some(live)) = (has, old.get("metadata").and_then(|m| m.get("managedFields"))) {
        super::meta::meta_mut(new).insert("managedFields".into(), live.clone());
    }
}

/// What an object being created is compared with: its metadata, spec and status, empty (upstream
/// compares with the kind's zero value, whose struct fields are empty maps; its maps are nil).
fn skeleton(obj: &Value) -> Value {
    let mut m = Map::new();
    if let Value::Object(o) = obj {
        for (k, v) in o {
            if v.is_object() && matches!(k.as_str(), "metadata" | "spec" | "status") {
                m.insert(k.clone(), json!({}));
            }
        }
    }
    Value::Object(m)
}

/// Records an update by `manager` from `old` (`None`: a create) to `new`, in `new`'s
/// managedFields (`FieldManager.UpdateNoErrors`). A client that sends managedFields of its own
/// on the object replaces them; one that sends none keeps the live ones.
pub fn track_update(scope: &Scope, old: Option<&Value>, new: &mut Value, manager: &str) {
    let from_new = if scope.subresource.is_empty() { decode(new).ok().filter(|e| !e.is_empty()) } else { None };
    let mut entries = match from_new {
        Some(e) => e,
        None => old.map(decode).and_then(Result::ok).unwrap_or_default(),
    };
    let base;
    let old = match old {
        Some(o) => o,
        None => {
            base = skeleton(new);
            &base
        }
    };
    let cmp = scope.compare(old, new);
    let changed = cmp.changed();
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    if !changed.is_empty() {
        let now = super::meta::now();
        match entries.iter_mut().find(|e| e.is(manager, "Update", &scope.api_version, scope.subresource)) {
            Some(e) => {
                e.set.union_in(&changed);
                e.time = Some(now);
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update",
                api_version: scope.api_version.clone(),
                time: Some(now),
                subresource: scope.subresource.to_string(),
                set: changed,
            }),
        }
    }
    entries.retain(|e| !e.set.is_empty());
    cap_update_managers(&mut entries, &scope.api_version);
    encode(new, entries);
}

/// Keeps at most [`MAX_UPDATE_MANAGERS`] update entries, merging the oldest into
/// `ancient-changes` (`capManagersManager`).
fn cap_update_managers(entries: &mut Vec<Entry>, api_version: &str) {
    const ANCIENT: &str = "ancient-changes";
    while entries.iter().filter(|e| e.operation == "Update").count() > MAX_UPDATE_MANAGERS {
        let oldest = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.operation == "Update" && e.manager != ANCIENT)
            .min_by(|(_, a), (_, b)| a.time.cmp(&b.time))
            .map(|(i, _)| i);
        let Some(i) = oldest else { break };
        let gone = entries.remove(i);
        match entries.iter_mut().find(|e| e.manager == ANCIENT && e.operation == "Update") {
            Some(a) => a.set.union_in(&gone.set),
            None => entries.push(Entry {
                manager: ANCIENT.into(),
                operation: "Update",
                api_version: api_version.to_string(),
                time: gone.time,
                subresource: String::new(),
                set: gone.set,
            }),
        }
    }
}

/// A server-side apply by `manager` of `config` onto `live` (`None`: the object does not exist
/// yet), returning the new object with its managedFields (`FieldManager.Apply`).
pub fn apply(scope: &Scope, live: Option<&Value>, config: &Value, manager: &str, force: bool) -> ApiResult<Value> {
    check_config(scope, config)?;
    let live = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = decode(&live).map_err(|e| ApiError::internal(format!("failed to decode managed fields: {e}")))?;
    if entries.is_empty() && live.as_object().is_some_and(|o| !o.is_empty()) {
        // An object no one tracked yet: what it holds belongs to `before-first-apply`.
        let changed = scope.compare(&skeleton(&live), &live).changed();
        if !changed.is_empty() {
            entries.push(Entry {
                manager: "before-first-apply".into(),
                operation: "Update",
                api_version: scope.api_version.clone(),
                time: Some(super::meta::now()),
                subresource: String::new(),
                set: changed,
            });
        }
    }
    let mut merged = apply::merge(&live, config, scope.root)?;
    let applied = scope.filter(&apply::field_set(config, scope.root)?);
    let mine = match entries.iter().position(|e| e.is(manager, "Apply", "", scope.subresource)) {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: "Apply",
                api_version: scope.api_version.clone(),
                time: None,
                subresource: scope.subresource.to_string(),
                set: Set::new(),
            });
            entries.len() - 1
        }
    };
    let last = std::mem::replace(&mut entries[mine].set, applied.clone());
    entries[mine].api_version = scope.api_version.clone();
    prune(scope, &mut merged, &entries, &last);

    let cmp = scope.compare(&live, &merged);
    let changed = cmp.changed();
    let mut conflicts: Vec<(usize, Set)> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != mine)
        .map(|(i, e)| (i, e.set.intersection(&changed)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        // kubectl taking over from client-side apply may change what its annotation says it applied.
        let allowed = if manager == KUBECTL { allowed_by_last_applied(scope, &live) } else { None };
        if let Some(allowed) = &allowed {
            for (_, s) in &mut conflicts {
                *s = s.difference(allowed);
            }
        }
        let remaining: Vec<(usize, Set)> = conflicts.iter().filter(|(_, s)| !s.is_empty()).cloned().collect();
        if !remaining.is_empty() {
            return Err(conflict_error(&entries, &remaining));
        }
        // Only allowed conflicts: the apply goes through as if forced, on the full sets.
        conflicts = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != mine)
            .map(|(i, e)| (i, e.set.intersection(&changed)))
            .collect();
    }
    for (i, s) in &conflicts {
        entries[*i].set = entries[*i].set.difference(s);
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if i != mine {
            e.set = e.set.difference(&cmp.removed);
        }
    }
    if !cmp.is_same() || last != applied || entries[mine].time.is_none() {
        entries[mine].time = Some(super::meta::now());
    }
    if manager == KUBECTL && last_applied(&live).is_some() {
        set_last_applied(&mut merged, config);
    }
    encode(&mut merged, entries);
    Ok(merged)
}

/// Removes from `merged` what the applier applied last time (`last`), omits now, and no manager
/// owns (`Updater.prune`). The object's identity (`apiVersion`, `kind`, `metadata`) always stays.
fn prune(scope: &Scope, merged: &mut Value, entries: &[Entry], last: &Set) {
    if last.is_empty() {
        return;
    }
    let mut owned = Set::new();
    for e in entries {
        owned.union_in(&e.set);
    }
    let mut gone = last.with_fields_as_members().difference(&owned.with_fields_as_members());
    for top in ["apiVersion", "kind", "metadata"] {
        if let Some(n) = gone.children.get_mut(&PathElement::Field(top.into())) {
            n.member = false;
        }
    }
    if !gone.is_empty() {
        apply::remove_items(merged, &gone, scope.root);
    }
}

/// The configuration must be of the kind and version the path serves, and name no managedFields.
fn check_config(scope: &Scope, config: &Value) -> ApiResult<()> {
    let api_version = config.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != scope.api_version || kind != scope.kind {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        return Err(ApiError::bad_request(format!("invalid object type: {group}/{version}, Kind={kind}")));
    }
    if config.get("metadata").and_then(|m| m.get("managedFields")).is_some_and(|f| !f.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

fn last_applied(obj: &Value) -> Option<&str> {
    obj.get("metadata")?.get("annotations")?.get(LAST_APPLIED)?.as_str().filter(|s| !s.is_empty())
}

/// The fields client-side apply last applied that still hold the value it applied: kubectl may
/// take them over (`lastAppliedManager`).
fn allowed_by_last_applied(scope: &Scope, live: &Value) -> Option<Set> {
    let last: Value = serde_json::from_str(last_applied(live)?).ok()?;
    let fields = scope.filter(&apply::field_set(&last, scope.root).ok()?);
    let cmp = scope.compare(&last, live);
    Some(fields.difference(&cmp.modified).difference(&cmp.removed))
}

/// kubectl's apply also rewrites the client-side annotation, when there is one, to the
/// configuration it applied (`lastAppliedUpdater`): sorted JSON and a newline, as Go encodes it.
fn set_last_applied(obj: &mut Value, config: &Value) {
    let mut config = config.clone();
    if let Some(Value::Object(a)) = config.get_mut("metadata").and_then(|m| m.get_mut("annotations")) {
        a.remove(LAST_APPLIED);
    }
    let text = format!("{}\n", crate::patch::apply::fieldpath::canonical(&config));
    let m = super::meta::meta_mut(obj);
    let annotations = m.entry("annotations").or_insert_with(|| json!({}));
    if let Value::Object(a) = annotations {
        a.insert(LAST_APPLIED.into(), text.into());
    }
}

/// The 409 of an apply that would change other managers' fields (`NewConflictError`).
fn conflict_error(entries: &[Entry], conflicts: &[(usize, Set)]) -> ApiError {
    let mut causes = Vec::new();
    let mut lines = Vec::new();
    let mut order: Vec<&(usize, Set)> = conflicts.iter().collect();
    order.sort_by(|a, b| entries[a.0].describe().cmp(&entries[b.0].describe()));
    for (i, set) in order {
        let who = entries[*i].describe();
        lines.push(format!("conflicts with {who}:"));
        for p in set.paths() {
            let path = PathDisplay(&p).to_string();
            lines.push(format!("- {path}"));
            causes.push(FieldError {
                field: path,
                kind: FieldErrorType::FieldManagerConflict,
                value: None,
                detail: format!("conflict with {who}"),
            });
        }
    }
    let message = if causes.len() == 1 {
        format!("Apply failed with 1 conflict: {}: {}", causes[0].detail, causes[0].field)
    } else {
        format!("Apply failed with {} conflicts: {}", causes.len(), lines.join("\n"))
    };
    let mut e = ApiError::bad_request(message);
    e.reason = Reason::Conflict;
    e.code = 409;
    e.causes = causes;
    e
}

#[cfg(test)]
mod tests;
