//! The table's objects, wanted and installed: listeners add and remove objects (shared ones are
//! counted), and the difference becomes an nft transaction that touches only what changed, as
//! upstream's partial syncs. A full rebuild replaces the whole table in one transaction.

use super::render::{self, Body, Id, Object};
use crate::desired::SourceRange;
use std::collections::{BTreeSet, HashMap};

/// Objects wanted by listeners and objects in the kernel.
#[derive(Debug, Default)]
pub struct Model {
    /// Each wanted object with the number of listeners using it.
    wanted: HashMap<Id, (Body, usize)>,
    /// What the last successful transactions put in the kernel.
    installed: HashMap<Id, Body>,
    /// Objects whose wanted state changed since the last sync.
    touched: BTreeSet<Id>,
    /// Installed chains and sets no longer wanted: deleted after the elements that used them.
    stale: BTreeSet<Id>,
    /// Delete unused chains and sets in the same transaction as the elements that used them
    /// (kernel 6.2 and later); else in a second one ([`Model::cleanup`]).
    pub same_transaction: bool,
    /// The Service CIDRs, for the fixed part of the table ([`render::base`]).
    pub service_cidrs: Vec<SourceRange>,
}

/// A planned incremental transaction.
#[derive(Debug, Default)]
pub struct Plan {
    pub script: String,
    ids: Vec<Id>,
    /// Chains and sets the script deletes.
    deleted: Vec<Id>,
}

impl Model {
    pub fn add(&mut self, object: Object) {
        let entry = self.wanted.entry(object.id.clone()).or_insert((object.body, 0));
        entry.1 += 1;
        self.touched.insert(object.id);
    }

    pub fn remove(&mut self, id: &Id) {
        if let Some(entry) = self.wanted.get_mut(id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.wanted.remove(id);
            }
            self.touched.insert(id.clone());
        }
    }

    /// Objects wanted (tests).
    #[cfg(test)]
    pub fn wanted(&self) -> HashMap<Id, Body> {
        self.wanted.iter().map(|(id, (body, _))| (id.clone(), body.clone())).collect()
    }

    /// Objects in the kernel (tests).
    #[cfg(test)]
    pub fn installed(&self) -> &HashMap<Id, Body> {
        &self.installed
    }

    /// Element deletions and changes, then new sets, chains and elements in creation order.
    /// Chains and sets no longer used are left for [`Model::cleanup`].
    pub fn plan(&self) -> Plan {
        let mut deletes = String::new();
        let mut adds = String::new();
        for id in &self.touched {
            let want = self.wanted.get(id).map(|(b, _)| b);
            let have = self.installed.get(id);
            if want == have {
                continue;
            }
            if let (Id::Element { .. }, Some(_)) = (id, have) {
                render::delete(&mut deletes, id);
            }
            match (want, have) {
                (Some(body), None) => render::add(&mut adds, &Object { id: id.clone(), body: body.clone() }),
                (Some(body), Some(_)) if matches!(id, Id::Element { .. }) => {
                    render::add(&mut adds, &Object { id: id.clone(), body: body.clone() })
                }
                _ => {}
            }
        }
        deletes.push_str(&adds);
        let mut deleted = Vec::new();
        if self.same_transaction {
            let unused: BTreeSet<&Id> = self.touched.iter().chain(&self.stale).collect();
            for id in unused.into_iter().rev() {
                if !matches!(id, Id::Element { .. }) && !self.wanted.contains_key(id) && self.installed.contains_key(id)
                {
                    render::delete(&mut deletes, id);
                    deleted.push(id.clone());
                }
            }
        }
        Plan { script: deletes, ids: self.touched.iter().cloned().collect(), deleted }
    }

    /// Records that `plan` was applied.
    pub fn applied(&mut self, plan: Plan) {
        for id in plan.ids {
            self.touched.remove(&id);
            match (self.wanted.get(&id), matches!(id, Id::Element { .. })) {
                (Some((body, _)), _) => {
                    self.stale.remove(&id);
                    self.installed.insert(id, body.clone());
                }
                (None, true) => {
                    self.installed.remove(&id);
                }
                (None, false) => {
                    if self.installed.contains_key(&id) {
                        self.stale.insert(id);
                    }
                }
            }
        }
        for id in plan.deleted {
            self.stale.remove(&id);
            self.installed.remove(&id);
        }
    }

    /// Deletes stale chains and sets, users first. Its own transaction: kernels before 6.2 may
    /// still count a reference from an element deleted in the same one, and a stale chain that
    /// lingers until the next try harms nothing.
    pub fn cleanup(&self) -> Plan {
        let mut script = String::new();
        let mut ids = Vec::new();
        for id in self.stale.iter().rev() {
            if !self.wanted.contains_key(id) && self.installed.contains_key(id) {
                render::delete(&mut script, id);
                ids.push(id.clone());
            }
        }
        Plan { script, ids, deleted: Vec::new() }
    }

    /// Records that a [`Model::cleanup`] was applied.
    pub fn cleaned(&mut self, plan: Plan) {
        for id in plan.ids {
            self.stale.remove(&id);
            self.installed.remove(&id);
        }
    }

    /// The whole table from scratch: any previous one (and anything left in it) is replaced.
    pub fn full(&self) -> String {
        let mut script = render::remove_table();
        script.push_str(&render::base(&self.service_cidrs));
        let mut all: Vec<(&Id, &Body)> = self.wanted.iter().map(|(id, (body, _))| (id, body)).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        for (id, body) in all {
            render::add(&mut script, &Object { id: id.clone(), body: body.clone() });
        }
        script
    }

    /// Records that [`Model::full`] was applied.
    pub fn rebuilt(&mut self) {
        self.installed = self.wanted.iter().map(|(id, (body, _))| (id.clone(), body.clone())).collect();
        self.touched.clear();
        self.stale.clear();
    }
}
