//! The in-memory backend (`--ephemeral`, tests): an ordered map, nothing on disk.

use super::{Backend, Bytes, KeyValue, Revision, StorageResult, decode_stored};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

#[derive(Default)]
pub struct MemoryBackend {
    inner: RwLock<(BTreeMap<String, Bytes>, Revision)>,
}

impl Backend for MemoryBackend {
    fn get(&self, key: &str) -> StorageResult<Option<(Revision, Bytes)>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.0.get(key).map(|v| decode_stored(v)).transpose()
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StorageResult<Vec<KeyValue>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let lower = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        inner
            .0
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| {
                let (mod_revision, value) = decode_stored(v)?;
                Ok(KeyValue { key: k.clone(), value, mod_revision })
            })
            .collect()
    }

    fn apply(&self, writes: &[(String, Option<Bytes>)], revision: Revision) -> StorageResult<()> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (key, value) in writes {
            match value {
                Some(v) => inner.0.insert(key.clone(), v.clone()),
                None => inner.0.remove(key),
            };
        }
        inner.1 = revision;
        Ok(())
    }

    fn revision(&self) -> StorageResult<Revision> {
        Ok(self.inner.read().unwrap_or_else(|e| e.into_inner()).1)
    }

    fn flush(&self) -> StorageResult<()> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }
}
