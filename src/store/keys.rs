//! Every key layout of the store, built here and nowhere else (ARCHITECTURE.md, "Store
//! layout"): a provider names *what* — a [`Unit`] and a document id — never the bytes.

use super::StoreError;

/// One polled unit — a CamInvoice member, an OnlinePajak company (its NPWP) — of an account.
/// It keys the unit's progress record (`cursors`) and connection record (`connections`):
/// `account \0 unit`; its documents (`state`) are `account \0 unit \0 document`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit<'a> {
    pub account: &'a str,
    pub id: &'a str,
}

impl<'a> Unit<'a> {
    pub fn new(account: &'a str, id: &'a str) -> Unit<'a> {
        Unit { account, id }
    }

    /// `account \0 unit`: the progress and connection records.
    pub(super) fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.account.len() + self.id.len() + 1);
        k.extend_from_slice(self.account.as_bytes());
        k.push(0);
        k.extend_from_slice(self.id.as_bytes());
        k
    }

    /// `account \0 unit \0`: what every document key of the unit starts with.
    pub(super) fn document_prefix(&self) -> Vec<u8> {
        let mut k = self.key();
        k.push(0);
        k
    }

    /// `account \0 unit \0 document`.
    pub(super) fn document_key(&self, document: &str) -> Vec<u8> {
        let mut k = self.document_prefix();
        k.extend_from_slice(document.as_bytes());
        k
    }

    /// `account \0`: what every connection key of the account starts with.
    pub(super) fn account_prefix(account: &str) -> Vec<u8> {
        let mut k = account.as_bytes().to_vec();
        k.push(0);
        k
    }
}

/// `sink \0 seq(u64 BE)`: a sink's per-event records sort by seq.
pub(super) fn sink_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(sink.len() + 9);
    k.extend_from_slice(sink.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn split_sink_key(k: &[u8]) -> Result<(String, u64), StoreError> {
    let bad = || StoreError::Corrupt("a sink record key".into());
    if k.len() < 9 || k[k.len() - 9] != 0 {
        return Err(bad());
    }
    let (name, seq) = k.split_at(k.len() - 9);
    Ok((
        String::from_utf8(name.to_vec()).map_err(|_| bad())?,
        decode_seq(&seq[1..])?,
    ))
}

pub(super) fn decode_seq(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("a sequence number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_keys_its_record_and_prefixes_its_documents() {
        let u = Unit::new("acme", "KHUID1");
        assert_eq!(u.key(), b"acme\0KHUID1");
        assert_eq!(u.document_key("d/1"), b"acme\0KHUID1\0d/1");
        assert!(u.document_key("x").starts_with(&u.document_prefix()));
        assert!(u.key().starts_with(&Unit::account_prefix("acme")));
        // One account's prefix never covers another account whose name extends it.
        assert!(!Unit::new("acme-2", "K")
            .key()
            .starts_with(&Unit::account_prefix("acme")));
    }

    #[test]
    fn sink_keys_round_trip() {
        let k = sink_key("hook", 7);
        assert_eq!(split_sink_key(&k).unwrap(), ("hook".to_string(), 7));
        assert!(split_sink_key(b"short").is_err());
    }
}
