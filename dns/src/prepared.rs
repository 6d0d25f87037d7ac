//! The zone as it is served: the [`Zone`] behind one lock, with the positive answers of every
//! Service name encoded ahead of time (Knot's approach: a lookup is one hash probe and a copy).
//!
//! An update applies one object's change to the zone's indexes and re-encodes only the names of the
//! Services it touched ([`Zone::names_of`]), under the write lock, so readers see the zone before
//! or after an event, never between. A prepared answer is, by construction, `Zone::lookup`'s answer
//! encoded by hickory for the lower-case question; a name without one (negative answers, pods,
//! reverse names, ExternalNames, other names) takes the general path.

use crate::data::{ClusterData, Key, Touched};
use crate::zone::{self, Lookup, QType, Zone};
use hickory_proto::op::{HeaderCounts, MessageType, Metadata, OpCode, Query, emit_message_parts};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard};
use tokio::sync::watch;

/// The question types prepared for each name.
const TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::SRV];

/// One answer, encoded for a question of the same name in any case: the sections after the
/// question, whose compression pointers refer to the question at offset 12.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Wire length of the question (name, type, class) this was encoded after.
    pub question_len: usize,
    pub counts: HeaderCounts,
    /// Answer, authority and additional sections.
    pub body: Box<[u8]>,
}

/// Prepared answers by name, for A, AAAA and SRV.
#[derive(Debug, Default)]
pub struct Prepared {
    /// hickory compares and hashes names case-insensitively.
    answers: HashMap<Name, [Option<Encoded>; 3]>,
    /// The names each Service put in `answers`.
    names_of: HashMap<Key, Vec<Name>>,
    /// Questions looked up to prepare answers, ever (what an update cost).
    lookups: usize,
}

/// The answers held (not what they cost).
impl PartialEq for Prepared {
    fn eq(&self, other: &Self) -> bool {
        self.answers == other.answers && self.names_of == other.names_of
    }
}

impl Prepared {
    /// Every Service's names, from scratch.
    pub fn build(zone: &Zone) -> Self {
        let mut prepared = Prepared::default();
        for key in zone.data().services.keys() {
            prepared.refresh_key(zone, key);
        }
        prepared
    }

    /// The answer for `name` and `rtype`, if prepared.
    pub fn get(&self, name: &Name, rtype: RecordType) -> Option<&Encoded> {
        let slot = TYPES.iter().position(|t| *t == rtype)?;
        self.answers.get(name)?[slot].as_ref()
    }

    /// Questions looked up so far to prepare answers.
    pub fn lookups(&self) -> usize {
        self.lookups
    }

    /// Names with at least one prepared answer.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Re-encode what `touched` may have changed.
    pub fn refresh(&mut self, zone: &Zone, touched: &[Touched]) {
        for t in touched {
            match t {
                Touched::Service(key) => self.refresh_key(zone, key),
                Touched::Namespace(ns) => {
                    let keys: Vec<Key> = zone
                        .data()
                        .services
                        .range((ns.clone(), String::new())..)
                        .take_while(|(k, _)| &k.0 == ns)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in &keys {
                        self.refresh_key(zone, key);
                    }
                }
            }
        }
    }

    fn refresh_key(&mut self, zone: &Zone, key: &Key) {
        for name in self.names_of.remove(key).into_iter().flatten() {
            self.answers.remove(&name);
        }
        let mut names = Vec::new();
        for text in zone.names_of(key) {
            let Ok(name) = Name::from_ascii(&text) else { continue };
            self.lookups += TYPES.len();
            let slots = TYPES.map(|t| encode(zone, &text, &name, t));
            if slots.iter().any(Option::is_some) {
                self.answers.insert(name.clone(), slots);
                names.push(name);
            }
        }
        if !names.is_empty() {
            self.names_of.insert(key.clone(), names);
        }
    }
}

/// `zone.lookup(text, rtype)` encoded after a question for `name`, when it is a positive answer
/// that needs nothing from upstream.
fn encode(zone: &Zone, text: &str, name: &Name, rtype: RecordType) -> Option<Encoded> {
    let qtype = match rtype {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        _ => QType::Srv,
    };
    let Lookup::Answer(answer) = zone.lookup(text, qtype) else { return None };
    if answer.rcode != zone::Rcode::NoError || answer.answers.is_empty() || answer.chase.is_some() {
        return None;
    }
    let convert = |records: &[zone::Record]| records.iter().map(crate::server::record).collect::<Result<Vec<_>, _>>();
    let (answers, authorities, additionals) =
        (convert(&answer.answers).ok()?, convert(&answer.authority).ok()?, convert(&answer.additionals).ok()?);
    let query = Query::query(name.clone(), rtype);
    let mut metadata = Metadata::new(0, MessageType::Response, OpCode::Query);
    metadata.authoritative = true;
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    let header = emit_message_parts(
        &metadata,
        &mut std::iter::once(&query),
        &mut answers.iter(),
        &mut authorities.iter(),
        &mut additionals.iter(),
        None,
        None,
        &mut encoder,
    )
    .ok()?;
    let mut question = Vec::new();
    query.emit(&mut BinEncoder::new(&mut question)).ok()?;
    let body = bytes.get(12 + question.len()..)?.into();
    Some(Encoded { question_len: question.len(), counts: header.counts, body })
}

/// The zone and its prepared answers, as served.
#[derive(Debug)]
pub struct Served {
    pub zone: Zone,
    pub prepared: Prepared,
}

/// [`Served`] behind a lock, updated one event at a time.
pub struct LiveZone {
    served: RwLock<Served>,
    synced: watch::Sender<bool>,
}

impl LiveZone {
    pub fn new(zone: Zone) -> Self {
        let prepared = Prepared::build(&zone);
        let synced = watch::Sender::new(zone.synced());
        LiveZone { served: RwLock::new(Served { zone, prepared }), synced }
    }

    /// The zone now; hold the guard briefly (updates wait for it).
    pub fn read(&self) -> RwLockReadGuard<'_, Served> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply one change to the indexes and re-prepare what it touched, as one step for readers.
    /// `serial` is the SOA serial to publish.
    pub fn update(&self, serial: u32, change: impl FnOnce(&mut ClusterData) -> Vec<Touched>) {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        let Served { zone, prepared } = &mut *served;
        let touched = change(zone.data_mut());
        zone.touch(serial);
        prepared.refresh(zone, &touched);
    }

    /// Every reflector has listed: missing names are NXDOMAIN from now on (SERVFAIL before).
    pub fn set_synced(&self) {
        self.served.write().unwrap_or_else(|e| e.into_inner()).zone.set_synced(true);
        self.synced.send_replace(true);
    }

    /// Resolves once synced.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }
}

#[cfg(test)]
#[path = "prepared_tests.rs"]
mod tests;
