//! The generic store pipeline every kind goes through (`genericregistry.Store` in
//! `apiserver/pkg/registry/generic/registry/store.go`): create, get, update, patch, delete,
//! in upstream's order, each write one storage transaction.

use super::managed_fields;
use super::meta::{self, meta_str};
use super::options::{DeleteOptions, PatchType, WriteOptions};
use super::{Registry, Resource, Subresource};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::patch;
use crate::storage::{Op, Precondition, StorageError};
use crate::validation;
use serde_json::{Value, json};

/// Attempts at a generated name before giving up (upstream retries `generateName` 8 times).
const GENERATE_NAME_TRIES: usize = 8;
/// Attempts of an unconditional update that keeps meeting concurrent writers.
const UPDATE_TRIES: usize = 16;

/// Maps a storage failure of one object to the API error upstream gives (`storeerr.Interpret*`).
pub(super) fn interpret(r: &Resource, name: &str, e: StorageError) -> ApiError {
    let gr = r.info().group_resource();
    match e {
        StorageError::AlreadyExists { .. } => ApiError::already_exists(gr, name),
        StorageError::NotFound { .. } => ApiError::not_found(gr, name),
        StorageError::Conflict { .. } => ApiError::stale(gr, name),
        StorageError::Compacted { .. } => ApiError::expired(e.to_string()),
        StorageError::Backend(msg) => ApiError::internal(msg),
    }
}

impl Registry {
    /// GET of one object.
    pub fn get(&self, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let key = r.key(ns, name);
        match self.store.get(&key).map_err(|e| interpret(r, name, e))? {
            Some(kv) => r.decode(&kv),
            None => Err(ApiError::not_found(r.info().group_resource(), name)),
        }
    }

    /// POST: create an object (`Store.Create`).
    pub async fn create(&self, r: &Resource, ns: Option<&str>, obj: Value, opts: &WriteOptions) -> ApiResult<Value> {
        self.create_tracked(r, ns, obj, opts, Some("")).await
    }

    /// Create, recording the write in managedFields as an update through subresource `track`
    /// (`None`: the caller did, as server-side apply does).
    async fn create_tracked(
        &self,
        r: &Resource,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        track: Option<&'static str>,
    ) -> ApiResult<Value> {
        check_type(r, &obj)?;
        set_namespace(r, &mut obj, ns)?;
        let generate = meta_str(&obj, "name").is_none().then(|| meta_str(&obj, "generateName").map(str::to_string));
        let generate = generate.flatten();
        let strategy = r.strategy();
        strategy.set_defaults(&mut obj);
        if let (Some(sub), Some(manager)) = (track, opts.field_manager.as_deref()) {
            managed_fields::track_update(&managed_fields::scope(r.info(), sub), None, &mut obj, manager);
        }
        meta::fill_create(&mut obj, strategy.tracks_generation());
        if let Some(prefix) = &generate {
            meta::meta_mut(&mut obj).insert("name".into(), meta::generate_name(prefix).into());
        }
        let txn = strategy.begin_create(&mut obj, opts.dry_run)?;
        strategy.prepare_for_create(&mut obj);
        self.validate_create(r, &obj)?;
        strategy.canonicalize(&mut obj);
        let ns = ns.filter(|_| r.info().namespaced());
        if let Some(ns) = ns {
            self.check_namespace_open(r, ns, meta::name(&obj))?;
        }
        if opts.dry_run {
            return Ok(obj);
        }
        for attempt in 0.. {
            let name = meta::name(&obj).to_string();
            let key = r.key(ns, &name);
            let op = Op::Put { key, value: r.encode(&obj)?, pre: Precondition::Absent };
            match self.store.commit(vec![op]).await {
                Ok(revision) => {
                    if let Some(txn) = txn {
                        txn.commit();
                    }
                    meta::set_resource_version(&mut obj, revision);
                    return Ok(obj);
                }
                Err(StorageError::AlreadyExists { .. }) if generate.is_some() && attempt + 1 < GENERATE_NAME_TRIES => {
                    let prefix = generate.as_deref().unwrap_or_default();
                    meta::meta_mut(&mut obj).insert("name".into(), meta::generate_name(prefix).into());
                }
                Err(e) => return Err(interpret(r, &name, e)),
            }
        }
        unreachable!("the loop returns")
    }

    fn validate_create(&self, r: &Resource, obj: &Value) -> ApiResult<()> {
        let strategy = r.strategy();
        let mut errs = strategy.validate(obj);
        errs.extend(validation::validate_object_meta(
            obj.get("metadata").unwrap_or(&Value::Null),
            r.info().namespaced(),
            strategy.name_rule(),
        ));
        invalid_if_any(r, obj, errs)
    }

    /// Refuses writes into a namespace that is missing or terminating (`NamespaceLifecycle`).
    fn check_namespace_open(&self, r: &Resource, ns: &str, name: &str) -> ApiResult<()> {
        let namespaces = self.namespaces()?;
        let namespace = self.get(namespaces, None, ns)?;
        if meta::is_deleting(&namespace) {
            let mut e = ApiError::forbidden(
                r.info().group_resource(),
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            );
            e.causes.push(FieldError {
                field: "metadata.namespace".into(),
                kind: crate::error::FieldErrorType::NamespaceTerminating,
                value: None,
                detail: format!("namespace {ns} is being terminated"),
            });
            return Err(e);
        }
        Ok(())
    }

    /// PUT: replace an object, or its status (`Store.Update`). Returns the object and whether it was created.
    pub async fn update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
        sub: Option<Subresource>,
    ) -> ApiResult<(Value, bool)> {
        check_type(r, &obj)?;
        set_namespace(r, &mut obj, ns)?;
        match meta_str(&obj, "name") {
            None => {
                meta::meta_mut(&mut obj).insert("name".into(), name.into());
            }
            Some(body) if body != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
        }
        let requested_rv = meta_str(&obj, "resourceVersion").map(meta::parse_resource_version).transpose()?;
        let create = r.strategy().allow_create_on_update();
        let track = Some(sub.map_or("", Subresource::name));
        self.update_with(r, ns, name, opts, sub, requested_rv, create, track, |_| Ok(obj.clone())).await
    }

    /// PATCH: apply a patch to the current object and update it (`patchResource`).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
        sub: Option<Subresource>,
    ) -> ApiResult<(Value, bool)> {
        if patch_type == PatchType::Apply {
            return self.apply(r, ns, name, body, opts, sub).await;
        }
        let patch = patch::Patch::parse(patch_type, body, r.info().kind)?;
        let track = Some(sub.map_or("", Subresource::name));
        self.update_with(r, ns, name, opts, sub, None, false, track, |current| {
            let mut patched = patch.apply(current)?;
            // A patch that names no resourceVersion applies to whatever is current.
            if meta_str(&patched, "resourceVersion").is_none()
                && let Some(rv) = meta_str(current, "resourceVersion")
            {
                meta::meta_mut(&mut patched).insert("resourceVersion".into(), rv.into());
            }
            Ok(patched)
        })
        .await
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply of the configuration in
    /// `body` by `opts.field_manager`, creating the object if it does not exist.
    async fn apply(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: &[u8],
        opts: &WriteOptions,
        sub: Option<Subresource>,
    ) -> ApiResult<(Value, bool)> {
        let mut config = patch::apply::parse_config(body)?;
        match meta_str(&config, "name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
            None => {
                meta::meta_mut(&mut config).insert("name".into(), name.into());
            }
        }
        let scope = managed_fields::scope(r.info(), sub.map_or("", Subresource::name));
        let manager = opts.field_manager.as_deref().unwrap_or_default();
        self.update_with(r, ns, name, opts, sub, None, sub.is_none(), None, |current| {
            let live = if current.is_null() { None } else { Some(current) };
            managed_fields::apply(&scope, live, &config, manager, opts.force)
        })
        .await
    }

    /// The read-modify-write loop of update and patch (`GuaranteedUpdate`): `change` turns the
    /// current object into the requested one; conflicts retry unless the client named a revision.
    /// `track` names the subresource to record the write as an update by `opts.field_manager`
    /// through in managedFields (`None`: `change` keeps them itself).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn update_with(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        sub: Option<Subresource>,
        requested_rv: Option<u64>,
        create_if_missing: bool,
        track: Option<&'static str>,
        change: impl Fn(&Value) -> ApiResult<Value>,
    ) -> ApiResult<(Value, bool)> {
        let info = r.info();
        let strategy = r.strategy();
        let key = r.key(ns, name);
        let ns = ns.filter(|_| info.namespaced());
        for _ in 0..UPDATE_TRIES {
            let Some(current) = self.store.get(&key).map_err(|e| interpret(r, name, e))? else {
                if create_if_missing && sub.is_none() {
                    let obj = change(&Value::Null)?;
                    return Ok((self.create_tracked(r, ns, obj, opts, track).await?, true));
                }
                return Err(ApiError::not_found(info.group_resource(), name));
            };
            let old = r.decode(&current)?;
            let mut new = change(&old)?;
            strategy.set_defaults(&mut new);
            check_type(r, &new)?;
            set_namespace(r, &mut new, ns)?;
            match (track, opts.field_manager.as_deref()) {
                (Some(sub), Some(manager)) => {
                    managed_fields::track_update(&managed_fields::scope(info, sub), Some(&old), &mut new, manager);
                }
                // An untracked write (from inside kplane) keeps the owners it did not mention.
                (Some(_), None) => managed_fields::keep_live(&old, &mut new),
                (None, _) => {}
            }
            let body_rv = match requested_rv {
                Some(rv) => Some(rv),
                None => meta_str(&new, "resourceVersion").map(meta::parse_resource_version).transpose()?,
            };
            match body_rv {
                Some(rv) if rv != current.mod_revision => return Err(ApiError::stale(info.group_resource(), name)),
                None if !strategy.allow_unconditional_update() => {
                    return Err(ApiError::invalid(
                        info.group,
                        info.kind,
                        name,
                        vec![FieldError::required("metadata.resourceVersion", "must be specified for an update")],
                    ));
                }
                // An unconditional update applies to the current object (`doUnconditionalUpdate`).
                None => {
                    meta::set_resource_version(&mut new, current.mod_revision);
                }
                _ => {}
            }
            let txn = match sub {
                Some(Subresource::Status) => {
                    new = with_status_of(&old, &new);
                    None
                }
                Some(Subresource::Scale) => return Err(ApiError::internal("scale is updated through its own path")),
                Some(Subresource::Log) => return Err(ApiError::internal("log is read-only")),
                // The binding's own change sets spec and status together, as `BindingREST` writes storage directly.
                Some(Subresource::Binding) => None,
                // Only `spec.finalizers` changes (`namespaceFinalizeStrategy.PrepareForUpdate`).
                Some(Subresource::Finalize) => {
                    new = with_finalizers_of(&old, &new);
                    None
                }
                None => {
                    let txn = strategy.begin_update(&mut new, &old, opts.dry_run)?;
                    strategy.prepare_for_update(&mut new, &old);
                    txn
                }
            };
            meta::keep_on_update(&mut new, &old, strategy.tracks_generation());
            let mut errs = validation::validate_object_meta_update(
                new.get("metadata").unwrap_or(&Value::Null),
                old.get("metadata").unwrap_or(&Value::Null),
            );
            match sub {
                Some(Subresource::Status) => errs.extend(strategy.validate_status_update(&new, &old)),
                _ => errs.extend(strategy.validate_update(&new, &old)),
            }
            invalid_if_any(r, &new, errs)?;
            strategy.canonicalize(&mut new);

            // A graceful deletion still running (a pod's grace period) is not completed by an update.
            let grace_left =
                meta::meta(&old).get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0;
            let finished = meta::is_deleting(&new)
                && !grace_left
                && meta::finalizers(&new).is_empty()
                && !strategy.pending_finalization(&new);
            let op = if finished {
                // The last finalizer is gone: the update completes the deletion (`ShouldDeleteDuringUpdate`).
                Op::Delete { key: key.clone(), pre: Precondition::ModRevision(current.mod_revision) }
            } else {
                let value = r.encode(&new)?;
                if value == current.value {
                    return Ok((old, false)); // nothing changed: no write, no new revision
                }
                Op::Put { key: key.clone(), value, pre: Precondition::ModRevision(current.mod_revision) }
            };
            if opts.dry_run {
                return Ok((new, false));
            }
            match self.store.commit(vec![op]).await {
                Ok(revision) => {
                    if let Some(txn) = txn {
                        txn.commit();
                    }
                    if finished {
                        strategy.after_delete(&new);
                    }
                    meta::set_resource_version(&mut new, revision);
                    return Ok((new, false));
                }
                // Another write came between the read and this one: start over from the new
                // object (`GuaranteedUpdate`). A patch is applied to it afresh; a client that
                // named a revision gets the Conflict from the check above.
                Err(StorageError::Conflict { .. } | StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(interpret(r, name, e)),
            }
        }
        Err(ApiError::conflict(info.group_resource(), name, "too many concurrent updates; please try again"))
    }

    /// DELETE of one object (`Store.Delete`): preconditions, graceful deletion, finalizers.
    pub async fn delete(&self, r: &Resource, ns: Option<&str>, name: &str, opts: &DeleteOptions) -> ApiResult<Value> {
        let info = r.info();
        let strategy = r.strategy();
        let key = r.key(ns, name);
        for _ in 0..UPDATE_TRIES {
            let Some(current) = self.store.get(&key).map_err(|e| interpret(r, name, e))? else {
                return Err(ApiError::not_found(info.group_resource(), name));
            };
            let mut obj = r.decode(&current)?;
            check_preconditions(r, name, &obj, opts)?;
            strategy.before_delete(name)?;
            let mut finalizers = meta::finalizers(&obj);
            if let Some(f) = propagation_finalizers(opts)
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
            let deleting = meta::is_deleting(&obj);
            let grace = if deleting {
                // Already deleting: only a shorter grace period changes anything (`rest.BeforeDelete`),
                // and 0 (a force delete) removes the object now unless finalizers hold it.
                match meta::meta(&obj).get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) {
                    0 => None,
                    current => match opts.grace_period_seconds {
                        Some(p) if p < current => Some(p),
                        _ => return Ok(obj), // graceful deletion already pending
                    },
                }
            } else {
                strategy.grace_period(&obj, opts.grace_period_seconds)
            }
            .filter(|g| *g > 0);
            let held = !finalizers.is_empty() || strategy.pending_finalization(&obj);
            if deleting && grace.is_none() && held && finalizers == meta::finalizers(&obj) {
                return Ok(obj); // already being deleted, waiting for finalizers
            }
            strategy.prepare_for_delete(&mut obj);
            let pending = !finalizers.is_empty() || grace.is_some() || strategy.pending_finalization(&obj);
            let op = if pending {
                let m = meta::meta_mut(&mut obj);
                if m.get("deletionTimestamp").is_none_or(Value::is_null) {
                    m.insert("deletionTimestamp".into(), meta::now().into());
                }
                m.insert("deletionGracePeriodSeconds".into(), grace.unwrap_or(0).into());
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                Op::Put {
                    key: key.clone(),
                    value: r.encode(&obj)?,
                    pre: Precondition::ModRevision(current.mod_revision),
                }
            } else {
                Op::Delete { key: key.clone(), pre: Precondition::ModRevision(current.mod_revision) }
            };
            if opts.dry_run {
                return Ok(obj);
            }
            match self.store.commit(vec![op]).await {
                Ok(revision) => {
                    if pending {
                        meta::set_resource_version(&mut obj, revision);
                    } else {
                        strategy.after_delete(&obj);
                        self.delete_companions(r, ns, name).await;
                    }
                    return Ok(obj);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(interpret(r, name, e)),
            }
        }
        Err(ApiError::conflict(info.group_resource(), name, "too many concurrent updates; please try again"))
    }
}

impl Registry {
    /// Deletes the same-named objects that go with a deleted one ([`super::Strategy::deletes_with`]).
    async fn delete_companions(&self, r: &Resource, ns: Option<&str>, name: &str) {
        for (group, plural) in r.strategy().deletes_with() {
            let Some(companion) =
                self.resources.iter().find(|c| c.info().group == *group && c.info().plural == *plural)
            else {
                continue;
            };
            let companion = companion.clone();
            // Boxed: delete is recursive through here.
            let result = Box::pin(self.delete(&companion, ns, name, &DeleteOptions::default())).await;
            if let Err(e) = result
                && e.code != 404
            {
                tracing::warn!(error = %e, "deleting {plural} {name} with its owner");
            }
        }
    }
}

/// The object's `apiVersion`/`kind`, when given, must be the ones the path serves.
fn check_type(r: &Resource, obj: &Value) -> ApiResult<()> {
    let info = r.info();
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!("the body of the request is not a {} object", info.kind)));
    }
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty())
        && v != info.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && k != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            info.kind
        )));
    }
    Ok(())
}

/// `EnsureObjectNamespaceMatchesRequestNamespace`, then stamps `apiVersion`/`kind`.
fn set_namespace(r: &Resource, obj: &mut Value, ns: Option<&str>) -> ApiResult<()> {
    let info = r.info();
    if let Value::Object(o) = obj {
        o.insert("apiVersion".into(), info.api_version().into());
        o.insert("kind".into(), info.kind.into());
    }
    let body_ns = meta_str(obj, "namespace").map(str::to_string);
    let m = meta::meta_mut(obj);
    match (info.namespaced(), ns, body_ns) {
        (false, _, _) => {
            m.remove("namespace");
        }
        (true, Some(path), None) => {
            m.insert("namespace".into(), path.into());
        }
        (true, Some(path), Some(body)) if path != body => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (true, None, _) => return Err(ApiError::bad_request("a namespace must be specified")),
        _ => {}
    }
    Ok(())
}

fn invalid_if_any(r: &Resource, obj: &Value, errs: Vec<FieldError>) -> ApiResult<()> {
    if errs.is_empty() {
        return Ok(());
    }
    let info = r.info();
    Err(ApiError::invalid(info.group, info.kind, meta::name(obj), errs))
}

/// A write through `/status`: the new status and metadata, everything else (the spec) as it
/// was, as upstream's status strategies keep `Spec` from the old object.
fn with_status_of(old: &Value, new: &Value) -> Value {
    let mut out = new.clone();
    if let (Value::Object(o), Value::Object(old)) = (&mut out, old) {
        o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        for (k, v) in old {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// A write through `/finalize`: the new `spec.finalizers` and metadata; the rest of the spec and
/// the status as they were.
fn with_finalizers_of(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    if let Value::Object(o) = &mut out {
        o.insert("metadata".into(), new.get("metadata").cloned().unwrap_or(Value::Null));
        let finalizers = new.get("spec").and_then(|s| s.get("finalizers")).cloned();
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if let Value::Object(spec) = spec {
            match finalizers {
                Some(f) if !f.is_null() => spec.insert("finalizers".into(), f),
                _ => spec.remove("finalizers"),
            };
        }
    }
    out
}

fn check_preconditions(r: &Resource, name: &str, obj: &Value, opts: &DeleteOptions) -> ApiResult<()> {
    let Some(p) = &opts.preconditions else { return Ok(()) };
    let gr = r.info().group_resource();
    if let Some(uid) = p.uid.as_deref() {
        let actual = meta_str(obj, "uid").unwrap_or("");
        if uid != actual {
            return Err(ApiError::conflict(
                gr,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = p.resource_version.as_deref() {
        let actual = meta_str(obj, "resourceVersion").unwrap_or("");
        if rv != actual {
            return Err(ApiError::conflict(
                gr,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// The garbage-collector finalizers a delete asks for (`shouldOrphanDependents`, `shouldDeleteDependents`).
fn propagation_finalizers(opts: &DeleteOptions) -> Option<&'static str> {
    match (opts.propagation_policy.as_deref(), opts.orphan_dependents) {
        (Some("Orphan"), _) | (None, Some(true)) => Some("orphan"),
        (Some("Foreground"), _) => Some("foregroundDeletion"),
        _ => None,
    }
}
