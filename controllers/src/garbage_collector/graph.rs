//! The garbage collector's dependency graph (`garbagecollector/graph.go`) and how watch events
//! change it (`graph_builder.go`, `processGraphChanges`): nodes keyed by UID, owners as listed
//! in `ownerReferences`, dependents as the reverse edges, and "virtual" nodes for owners not yet
//! observed. Pure: processing a change returns what the collector must do next ([`Effects`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

/// The `foregroundDeletion` finalizer (`metav1.FinalizerDeleteDependents`).
pub const FOREGROUND: &str = "foregroundDeletion";
/// The `orphan` finalizer (`metav1.FinalizerOrphanDependents`).
pub const ORPHAN: &str = "orphan";

/// Coordinates of an object (`objectReference`: an owner reference plus a namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjectRef {
    /// The object an owner reference names, looked for in `namespace`.
    pub fn owner(r: &OwnerReference, namespace: &str) -> Self {
        Self {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: namespace.to_string(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }

    fn matches(&self, r: &OwnerReference) -> bool {
        self.uid == r.uid && self.name == r.name && self.kind == r.kind && self.api_version == r.api_version
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}/{}, namespace: {}, name: {}, uid: {}]",
            self.api_version, self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// What a watch showed of an object: the metadata the graph needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub identity: ObjectRef,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Observed {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// `deletionStartsWithFinalizer`: deleting with `f` now, and not before.
    fn starts_deleting_with(&self, old: Option<&Observed>, f: &str) -> bool {
        self.deleting && self.has_finalizer(f) && old.is_none_or(|o| !o.deleting || !o.has_finalizer(f))
    }
}

/// One event for the graph.
#[derive(Debug, Clone)]
pub struct Change {
    pub obj: Observed,
    /// The previous state, for updates.
    pub old: Option<Observed>,
    pub deleted: bool,
    /// A delete the collector made up after the API server said the object is gone.
    pub virtual_: bool,
}

/// A node of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    pub identity: ObjectRef,
    pub owners: Vec<OwnerReference>,
    pub dependents: BTreeSet<String>,
    pub being_deleted: bool,
    pub deleting_dependents: bool,
    /// Known only from a dependent's owner reference, not yet seen by a watch.
    pub virtual_: bool,
}

/// What the collector must do after a change.
#[derive(Debug, Default)]
pub struct Effects {
    pub attempt_to_delete: Vec<String>,
    /// Queued with back-off (a virtual node given another identity).
    pub attempt_to_delete_later: Vec<String>,
    pub attempt_to_orphan: Vec<String>,
    /// Dependents whose owner reference names an owner in another namespace (the Warning
    /// `OwnerRefInvalidNamespace`), with that reference.
    pub invalid_owner_refs: Vec<(ObjectRef, OwnerReference)>,
    /// Owners now known to be absent.
    pub absent: Vec<ObjectRef>,
    /// The namespace of an object whose deletion was observed.
    pub deleted_in: Option<String>,
}

/// The graph, written only by the graph builder.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

fn blocks(r: &OwnerReference) -> bool {
    r.block_owner_deletion == Some(true)
}

impl Graph {
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The dependents of `uid`, as they are now.
    pub fn dependents(&self, uid: &str) -> Vec<Node> {
        let Some(n) = self.nodes.get(uid) else { return Vec::new() };
        n.dependents.iter().filter_map(|d| self.nodes.get(d)).cloned().collect()
    }

    /// Dependents whose reference to `uid` has `blockOwnerDeletion: true` (`blockingDependents`).
    pub fn blocking_dependents(&self, uid: &str) -> Vec<Node> {
        self.dependents(uid).into_iter().filter(|d| d.owners.iter().any(|r| r.uid == uid && blocks(r))).collect()
    }

    /// Applies one change (`processGraphChanges`).
    pub fn process(&mut self, change: Change) -> Effects {
        let mut fx = Effects::default();
        let uid = change.obj.identity.uid.clone();
        if !change.virtual_ {
            self.observe(&mut fx, &change.obj.identity);
        }
        let found = self.nodes.contains_key(&uid);
        match (change.deleted, found) {
            (false, false) => {
                let obj = &change.obj;
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: obj.identity.clone(),
                        owners: obj.owners.clone(),
                        dependents: BTreeSet::new(),
                        being_deleted: obj.deleting,
                        deleting_dependents: obj.deleting && obj.has_finalizer(FOREGROUND),
                        virtual_: false,
                    },
                );
                self.add_dependent_to_owners(&mut fx, &uid, &obj.owners);
                self.process_transitions(&mut fx, change.old.as_ref(), obj, &uid);
            }
            (false, true) => {
                let obj = &change.obj;
                let old_owners = self.nodes.get(&uid).map(|n| n.owners.clone()).unwrap_or_default();
                let (added, removed, changed) = references_diffs(&old_owners, &obj.owners);
                if !added.is_empty() || !removed.is_empty() || !changed.is_empty() {
                    self.add_unblocked_owners(&mut fx, &removed, &changed);
                    if let Some(n) = self.nodes.get_mut(&uid) {
                        n.owners = obj.owners.clone();
                    }
                    self.add_dependent_to_owners(&mut fx, &uid, &added);
                    self.remove_dependent_from_owners(&uid, &removed);
                }
                if obj.deleting
                    && let Some(n) = self.nodes.get_mut(&uid)
                {
                    n.being_deleted = true;
                }
                self.process_transitions(&mut fx, change.old.as_ref(), obj, &uid);
            }
            (true, false) => {}
            (true, true) => self.process_delete(&mut fx, &change),
        }
        fx
    }

    /// A watch saw the object behind a virtual node: take its real coordinates, and recheck
    /// dependents that referred to it by other ones.
    fn observe(&mut self, fx: &mut Effects, observed: &ObjectRef) {
        let Some(n) = self.nodes.get(&observed.uid) else { return };
        if !n.virtual_ {
            return;
        }
        if &n.identity != observed {
            let deps = self.dependents(&observed.uid);
            let (_, suspicious) = partition_dependents(&deps, observed);
            for dep in suspicious {
                if !observed.namespace.is_empty() && dep.identity.namespace != observed.namespace {
                    self.report_invalid(fx, &dep.identity.uid, &observed.uid);
                }
                fx.attempt_to_delete.push(dep.identity.uid.clone());
            }
        }
        if let Some(n) = self.nodes.get_mut(&observed.uid) {
            n.identity = observed.clone();
            n.virtual_ = false;
        }
    }

    fn process_delete(&mut self, fx: &mut Effects, change: &Change) {
        let uid = &change.obj.identity.uid;
        let Some(existing) = self.nodes.get(uid).cloned() else { return };
        let deleted = &change.obj.identity;
        if change.virtual_ {
            let deps = self.dependents(uid);
            if existing.virtual_ {
                let (matching, nonmatching) = partition_dependents(&deps, deleted);
                if !nonmatching.is_empty() {
                    // Some dependents name this UID with other coordinates: keep the node.
                    if !matching.is_empty() {
                        fx.absent.push(deleted.clone());
                        fx.attempt_to_delete.extend(matching.iter().map(|d| d.identity.uid.clone()));
                    }
                    if &existing.identity == deleted
                        && let Some(next) = alternate_owner_identity(&nonmatching, deleted)
                    {
                        if let Some(n) = self.nodes.get_mut(uid) {
                            n.identity = next;
                        }
                        fx.attempt_to_delete_later.push(uid.clone());
                    }
                    return;
                }
            } else if &existing.identity != deleted {
                // An observed object is not removed by a virtual delete of other coordinates.
                let (matching, _) = partition_dependents(&deps, deleted);
                if !matching.is_empty() {
                    fx.absent.push(deleted.clone());
                    fx.attempt_to_delete.extend(matching.iter().map(|d| d.identity.uid.clone()));
                }
                return;
            }
        }
        self.nodes.remove(uid);
        self.remove_dependent_from_owners(uid, &existing.owners);
        if !existing.dependents.is_empty() {
            fx.absent.push(deleted.clone());
        }
        fx.attempt_to_delete.extend(existing.dependents.iter().cloned());
        for owner in &existing.owners {
            // An owner waiting in the foreground may be done now.
            if self.nodes.get(&owner.uid).is_some_and(|o| o.deleting_dependents) {
                fx.attempt_to_delete.push(owner.uid.clone());
            }
        }
        if !change.virtual_ && !deleted.namespace.is_empty() {
            fx.deleted_in = Some(deleted.namespace.clone());
        }
    }

    /// `addDependentToOwners`: links `uid` under each owner, creating virtual owners to verify.
    fn add_dependent_to_owners(&mut self, fx: &mut Effects, uid: &str, owners: &[OwnerReference]) {
        let Some(namespace) = self.nodes.get(uid).map(|n| n.identity.namespace.clone()) else { return };
        let mut suspicious = false;
        for owner in owners {
            match self.nodes.get_mut(&owner.uid) {
                None => {
                    let node = Node {
                        identity: ObjectRef::owner(owner, &namespace),
                        owners: Vec::new(),
                        dependents: BTreeSet::from([uid.to_string()]),
                        being_deleted: false,
                        deleting_dependents: false,
                        virtual_: true,
                    };
                    self.nodes.insert(owner.uid.clone(), node);
                    fx.attempt_to_delete.push(owner.uid.clone());
                }
                Some(on) => {
                    on.dependents.insert(uid.to_string());
                    if suspicious {
                        continue;
                    }
                    let owner_ns = on.identity.namespace.clone();
                    let observed = !on.virtual_;
                    if !owner_ns.is_empty() && owner_ns != namespace {
                        // A namespaced owner can only own objects of its own namespace.
                        if observed {
                            self.report_invalid(fx, uid, &owner.uid);
                        }
                        suspicious = true;
                    } else if !on.identity.matches(owner) || (owner_ns.is_empty() && owner_ns != namespace && !observed)
                    {
                        suspicious = true;
                    }
                }
            }
        }
        if suspicious {
            fx.attempt_to_delete.push(uid.to_string());
        }
    }

    fn remove_dependent_from_owners(&mut self, uid: &str, owners: &[OwnerReference]) {
        for owner in owners {
            if let Some(on) = self.nodes.get_mut(&owner.uid) {
                on.dependents.remove(uid);
            }
        }
    }

    /// `addUnblockedOwnersToDeleteQueue`: owners a dependent stopped blocking may finish.
    fn add_unblocked_owners(
        &self,
        fx: &mut Effects,
        removed: &[OwnerReference],
        changed: &[(OwnerReference, OwnerReference)],
    ) {
        let unblocked = removed
            .iter()
            .filter(|r| blocks(r))
            .chain(changed.iter().filter(|(o, n)| blocks(o) && !blocks(n)).map(|(_, n)| n));
        for r in unblocked {
            if self.nodes.contains_key(&r.uid) {
                fx.attempt_to_delete.push(r.uid.clone());
            }
        }
    }

    /// `processTransitions`: an owner starts orphaning or deleting its dependents.
    fn process_transitions(&mut self, fx: &mut Effects, old: Option<&Observed>, new: &Observed, uid: &str) {
        if new.starts_deleting_with(old, ORPHAN) {
            fx.attempt_to_orphan.push(uid.to_string());
            return;
        }
        if new.starts_deleting_with(old, FOREGROUND)
            && let Some(n) = self.nodes.get_mut(uid)
        {
            n.deleting_dependents = true;
            fx.attempt_to_delete.extend(n.dependents.iter().cloned());
            fx.attempt_to_delete.push(uid.to_string());
        }
    }

    /// `reportInvalidNamespaceOwnerRef`.
    fn report_invalid(&self, fx: &mut Effects, dependent: &str, owner_uid: &str) {
        let Some(d) = self.nodes.get(dependent) else { return };
        if let Some(r) = d.owners.iter().find(|r| r.uid == owner_uid) {
            fx.invalid_owner_refs.push((d.identity.clone(), r.clone()));
        }
    }
}

/// `referencesDiffs`: owner references added, removed and changed (by UID).
fn references_diffs(
    old: &[OwnerReference],
    new: &[OwnerReference],
) -> (Vec<OwnerReference>, Vec<OwnerReference>, Vec<(OwnerReference, OwnerReference)>) {
    let old_by_uid: HashMap<&str, &OwnerReference> = old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let mut seen = HashSet::new();
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for r in new {
        match old_by_uid.get(r.uid.as_str()) {
            Some(o) => {
                seen.insert(r.uid.as_str());
                if *o != r {
                    changed.push(((*o).clone(), r.clone()));
                }
            }
            None => added.push(r.clone()),
        }
    }
    let removed = old.iter().filter(|r| !seen.contains(r.uid.as_str())).cloned().collect();
    (added, removed, changed)
}

/// `partitionDependents`: dependents whose reference to `owner.uid` matches its coordinates, and
/// those with a reference that does not (a dependent can be in both).
fn partition_dependents(deps: &[Node], owner: &ObjectRef) -> (Vec<Node>, Vec<Node>) {
    let (mut matching, mut nonmatching) = (Vec::new(), Vec::new());
    for dep in deps {
        let (mut hit, mut miss) = (false, false);
        if !owner.namespace.is_empty() && owner.namespace != dep.identity.namespace {
            miss = true;
        } else {
            for r in dep.owners.iter().filter(|r| r.uid == owner.uid) {
                if owner.matches(r) {
                    hit = true;
                } else {
                    miss = true;
                }
            }
        }
        if hit {
            matching.push(dep.clone());
        }
        if miss {
            nonmatching.push(dep.clone());
        }
    }
    (matching, nonmatching)
}

/// `referenceLessThan`: kind, apiVersion, namespace, name, uid.
fn reference_less(a: &ObjectRef, b: &ObjectRef) -> bool {
    (&a.kind, &a.api_version, &a.namespace, &a.name, &a.uid) < (&b.kind, &b.api_version, &b.namespace, &b.name, &b.uid)
}

/// `getAlternateOwnerIdentity`: another identity dependents give the absent UID, the first after
/// `absent` in [`reference_less`] order, else the first.
fn alternate_owner_identity(deps: &[Node], absent: &ObjectRef) -> Option<ObjectRef> {
    let cluster_scoped = absent.namespace.is_empty();
    let mut seen: HashSet<ObjectRef> = HashSet::from([absent.clone()]);
    let (mut first, mut first_following): (Option<ObjectRef>, Option<ObjectRef>) = (None, None);
    for dep in deps {
        for r in dep.owners.iter().filter(|r| r.uid == absent.uid) {
            if absent.matches(r) && (cluster_scoped || absent.namespace == dep.identity.namespace) {
                continue;
            }
            let mut candidate = ObjectRef::owner(r, &dep.identity.namespace);
            if cluster_scoped && candidate.api_version == absent.api_version && candidate.kind == absent.kind {
                candidate.namespace.clear();
            }
            if !seen.insert(candidate.clone()) {
                continue;
            }
            if first.as_ref().is_none_or(|f| reference_less(&candidate, f)) {
                first = Some(candidate.clone());
            }
            if reference_less(absent, &candidate)
                && first_following.as_ref().is_none_or(|f| reference_less(&candidate, f))
            {
                first_following = Some(candidate);
            }
        }
    }
    first_following.or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oref(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn obj(ns: &str, name: &str, uid: &str, owners: Vec<OwnerReference>) -> Observed {
        Observed {
            identity: ObjectRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: ns.into(),
                name: name.into(),
                uid: uid.into(),
            },
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn upsert(o: Observed) -> Change {
        Change { obj: o, old: None, deleted: false, virtual_: false }
    }

    #[test]
    fn a_dependent_before_its_owner_makes_a_virtual_owner_to_verify() {
        let mut g = Graph::default();
        let fx = g.process(upsert(obj("a", "dep", "d", vec![oref("ConfigMap", "own", "o", false)])));
        assert_eq!(fx.attempt_to_delete, vec!["o".to_string()]);
        assert!(g.node("o").is_some_and(|n| n.virtual_ && n.dependents.contains("d")));
        let fx = g.process(upsert(obj("a", "own", "o", vec![])));
        assert!(fx.attempt_to_delete.is_empty());
        assert!(g.node("o").is_some_and(|n| !n.virtual_));
    }

    #[test]
    fn an_owner_in_another_namespace_is_reported_and_rechecked() {
        let mut g = Graph::default();
        g.process(upsert(obj("a", "own", "o", vec![])));
        let fx = g.process(upsert(obj("b", "dep", "d", vec![oref("ConfigMap", "own", "o", false)])));
        assert_eq!(fx.invalid_owner_refs.len(), 1);
        assert_eq!(fx.invalid_owner_refs[0].0.name, "dep");
        assert_eq!(fx.attempt_to_delete, vec!["d".to_string()]);
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents_and_waiting_owners() {
        let mut g = Graph::default();
        g.process(upsert(obj("a", "own", "o", vec![])));
        g.process(upsert(obj("a", "dep", "d", vec![oref("ConfigMap", "own", "o", true)])));
        let mut deleting = obj("a", "own", "o", vec![]);
        deleting.deleting = true;
        deleting.finalizers = vec![FOREGROUND.into()];
        let fx = g.process(upsert(deleting));
        assert_eq!(fx.attempt_to_delete, vec!["d".to_string(), "o".to_string()]);
        assert_eq!(g.blocking_dependents("o").len(), 1);
        let fx = g.process(Change { deleted: true, ..upsert(obj("a", "dep", "d", vec![])) });
        assert_eq!(fx.attempt_to_delete, vec!["o".to_string()]);
        assert_eq!(fx.deleted_in.as_deref(), Some("a"));
        assert!(g.blocking_dependents("o").is_empty());
    }

    #[test]
    fn orphaning_starts_once() {
        let mut g = Graph::default();
        let mut o = obj("a", "own", "o", vec![]);
        o.deleting = true;
        o.finalizers = vec![ORPHAN.into()];
        let fx = g.process(upsert(o.clone()));
        assert_eq!(fx.attempt_to_orphan, vec!["o".to_string()]);
        let fx = g.process(Change { old: Some(o.clone()), ..upsert(o) });
        assert!(fx.attempt_to_orphan.is_empty());
    }

    #[test]
    fn reference_diffs_by_uid() {
        let (a, r, c) = references_diffs(
            &[oref("K", "x", "1", true), oref("K", "y", "2", false)],
            &[oref("K", "x", "1", false), oref("K", "z", "3", false)],
        );
        assert_eq!((a.len(), r.len(), c.len()), (1, 1, 1));
        assert_eq!(r[0].uid, "2");
        assert_eq!(c[0].0.uid, "1");
    }
}
