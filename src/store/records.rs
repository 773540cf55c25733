//! The providers' records, as opaque bytes the store finds from a [`Unit`]: documents (in
//! buckets), progress (`c` keys), connections (`connections` tree). The store never decodes
//! them (`verify` asks the providers through a `RecordCheck`). Reads return owned bytes.

use super::bucket;
use super::codec::doc_id_bytes;
use super::keys::{self, Unit};
use super::{Store, StoreError};
use std::collections::HashMap;

impl Store {
    /// The record of document `document` of `unit`.
    pub fn get_state(&self, unit: Unit, document: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(no) = self.unit_no(unit) else {
            return Ok(None);
        };
        let key = keys::bucket(no.account, self.hashing.bucket(document));
        let Some(b) = self.data.get(&key)? else {
            return Ok(None);
        };
        bucket::find(&b, no.unit, &doc_id_bytes(document))
            .map(|v| v.map(<[u8]>::to_vec))
            .map_err(|_| StoreError::Corrupt(format!("document bucket {key:?}")))
    }

    /// How many document records each unit of `account` has (one pass over the account's
    /// buckets: call it once, not per unit).
    pub fn count_states(&self, account: &str) -> Result<HashMap<String, usize>, StoreError> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = HashMap::new();
        let Some(a) = names.account(account) else {
            return Ok(out);
        };
        let mut by_no: HashMap<u64, usize> = HashMap::new();
        for kv in self.data.scan_prefix(keys::state_prefix(a)) {
            let (k, v) = kv?;
            for r in bucket::records(&v) {
                let r = r.map_err(|_| StoreError::Corrupt(format!("document bucket {k:?}")))?;
                *by_no.entry(r.unit).or_default() += 1;
            }
        }
        for (unit, n) in by_no {
            let name = names
                .unit_name(keys::UnitNo { account: a, unit })
                .ok_or_else(|| StoreError::Corrupt(format!("unit number {unit} of {account}")))?;
            out.insert(name.to_string(), n);
        }
        Ok(out)
    }

    /// How many document records `unit` has (a pass over its account's buckets).
    pub fn count_state(&self, unit: Unit) -> Result<usize, StoreError> {
        Ok(self
            .count_states(unit.account)?
            .get(unit.id)
            .copied()
            .unwrap_or(0))
    }

    /// How many document records the store holds, of every account.
    pub fn count_all_state(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.data.scan_prefix([keys::STATE]) {
            let (k, v) = kv?;
            for r in bucket::records(&v) {
                r.map_err(|_| StoreError::Corrupt(format!("document bucket {k:?}")))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The progress record of `unit`.
    pub fn get_cursor(&self, unit: Unit) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(no) = self.unit_no(unit) else {
            return Ok(None);
        };
        Ok(self.data.get(keys::cursor(no))?.map(|v| v.to_vec()))
    }

    pub(super) fn unit_no(&self, unit: Unit) -> Option<keys::UnitNo> {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .unit(unit)
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
