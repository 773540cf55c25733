//! The providers' records, as opaque bytes under keys the store builds from a [`Unit`]:
//! documents (`state`), progress (`cursors`), connections (`connections`). The store never
//! decodes them (`verify` asks the providers through a `RecordCheck`). Reads return owned
//! bytes.

use super::keys::Unit;
use super::{Store, StoreError};

impl Store {
    /// The record of document `document` of `unit`.
    pub fn get_state(&self, unit: Unit, document: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .state
            .get(unit.document_key(document))?
            .map(|v| v.to_vec()))
    }

    /// How many document records `unit` has.
    pub fn count_state(&self, unit: Unit) -> Result<usize, StoreError> {
        self.count_documents(&unit.document_prefix())
    }

    /// How many document records the store holds, of every account.
    pub fn count_all_state(&self) -> Result<usize, StoreError> {
        self.count_documents(b"")
    }

    fn count_documents(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.state.scan_prefix(prefix).keys() {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    /// The progress record of `unit`.
    pub fn get_cursor(&self, unit: Unit) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.cursors.get(unit.key())?.map(|v| v.to_vec()))
    }

    /// Writes the connection record of `unit` (provider-encoded bytes) and flushes it: a
    /// connection is durable before `connect` reports it.
    pub async fn put_connection(&self, unit: Unit<'_>, value: Vec<u8>) -> Result<(), StoreError> {
        self.connections.insert(unit.key(), value)?;
        self.flush().await
    }

    /// Every connection record of `account`: (unit id, bytes), ordered by unit id.
    pub fn connections(&self, account: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = Unit::account_prefix(account);
        let mut out = Vec::new();
        for kv in self.connections.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let member = std::str::from_utf8(&k[prefix.len()..])
                .map_err(|_| StoreError::Corrupt("a connection key".into()))?;
            out.push((member.to_string(), v.to_vec()));
        }
        Ok(out)
    }
}
