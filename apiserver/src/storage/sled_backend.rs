//! The sled backend: one tree of `key → revision ‖ value`, the current revision under a
//! reserved key in the same tree so a batch records both atomically.

use super::{Backend, Bytes, KeyValue, Revision, StorageError, StorageResult, decode_stored};
use std::path::Path;

/// Sorts before every object key (they start with `/`); scans skip it (an empty prefix meets it).
const REVISION_KEY: &[u8] = b"\0revision";

pub struct SledBackend {
    db: sled::Db,
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`. sled's own periodic flush is turned off:
    /// the store flushes before it acknowledges a write.
    pub fn open(dir: &Path) -> StorageResult<Self> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open().map_err(backend)?;
        Ok(Self { db })
    }
}

fn backend(e: sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Backend for SledBackend {
    fn get(&self, key: &str) -> StorageResult<Option<(Revision, Bytes)>> {
        self.db.get(key.as_bytes()).map_err(backend)?.map(|v| decode_stored(&v)).transpose()
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StorageResult<Vec<KeyValue>> {
        let iter = match start_after {
            Some(k) if k >= prefix => {
                let mut from = k.as_bytes().to_vec();
                from.push(0);
                self.db.range(from..)
            }
            _ => self.db.range(prefix.as_bytes()..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix.as_bytes()) || out.len() == limit {
                break;
            }
            if k == REVISION_KEY {
                continue; // only an empty (or `\0`) prefix reaches it
            }
            let key = String::from_utf8(k.to_vec()).map_err(|e| StorageError::Backend(e.to_string()))?;
            let (mod_revision, value) = decode_stored(&v)?;
            out.push(KeyValue { key, value, mod_revision });
        }
        Ok(out)
    }

    fn apply(&self, writes: &[(String, Option<Bytes>)], revision: Revision) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(key.as_bytes(), &v[..]),
                None => batch.remove(key.as_bytes()),
            }
        }
        batch.insert(REVISION_KEY, &revision.to_be_bytes()[..]);
        self.db.apply_batch(batch).map_err(backend)
    }

    fn revision(&self) -> StorageResult<Revision> {
        match self.db.get(REVISION_KEY).map_err(backend)? {
            None => Ok(0),
            Some(v) => {
                let bytes: [u8; 8] =
                    v.as_ref().try_into().map_err(|_| StorageError::Backend("corrupt revision record".into()))?;
                Ok(Revision::from_be_bytes(bytes))
            }
        }
    }

    fn flush(&self) -> StorageResult<()> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn is_durable(&self) -> bool {
        true
    }
}
