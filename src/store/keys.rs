//! Every key layout of the store, built here and nowhere else (ARCHITECTURE.md, "Store
//! layout"): a provider names *what* — a [`Unit`] and a document id — never the bytes.
//!
//! Schema 3 keeps everything a commit writes in ONE sled tree (`data`), told apart by a
//! one-byte prefix, so that a commit is one atomic `apply_batch` of one tree:
//! - `m` name -> meta (schema, next seq, identity, hash key, adopted tails);
//! - `n a` account -> its number; `n u` [varint account] unit -> its number (interned names);
//! - `c` [varint account][varint unit] -> the unit's progress record;
//! - `s` [varint account][bucket u32 BE] -> a document bucket (`bucket.rs`);
//! - `o` [first seq u64 BE] -> an outbox group (`group.rs`);
//! - `i` [2 bytes] -> an event-id bucket (`idset.rs`); `I` id text -> varint seq.
//!
//! Numbers are LEB128 varints: prefix-free (one account's prefix never starts another's) but
//! not order-preserving, so nothing relies on accounts sorting by number.

use super::codec::put_uvarint;
use super::StoreError;

/// One polled unit — a CamInvoice member, an OnlinePajak company (its NPWP) — of an account.
/// It names the unit's progress record, its documents and its connection record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unit<'a> {
    pub account: &'a str,
    pub id: &'a str,
}

impl<'a> Unit<'a> {
    pub fn new(account: &'a str, id: &'a str) -> Unit<'a> {
        Unit { account, id }
    }

    /// `account \0 unit`: the connection record (`connections` tree, text keys).
    pub(super) fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.account.len() + self.id.len() + 1);
        k.extend_from_slice(self.account.as_bytes());
        k.push(0);
        k.extend_from_slice(self.id.as_bytes());
        k
    }

    /// `account \0`: what every connection key of the account starts with.
    pub(super) fn account_prefix(account: &str) -> Vec<u8> {
        let mut k = account.as_bytes().to_vec();
        k.push(0);
        k
    }
}

/// The interned numbers of a unit: its account's and its own within the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct UnitNo {
    pub(super) account: u64,
    pub(super) unit: u64,
}

pub(super) const META: u8 = b'm';
pub(super) const NAMES: u8 = b'n';
pub(super) const CURSORS: u8 = b'c';
pub(super) const STATE: u8 = b's';
pub(super) const OUTBOX: u8 = b'o';
pub(super) const IDS: u8 = b'i';
pub(super) const TEXT_IDS: u8 = b'I';

/// `m` name.
pub(super) fn meta(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(META);
    k.extend_from_slice(name);
    k
}

/// `n a` account.
pub(super) fn account_name(account: &str) -> Vec<u8> {
    let mut k = vec![NAMES, b'a'];
    k.extend_from_slice(account.as_bytes());
    k
}

/// `n u` [varint account] unit.
pub(super) fn unit_name(account: u64, unit: &str) -> Vec<u8> {
    let mut k = vec![NAMES, b'u'];
    put_uvarint(&mut k, account);
    k.extend_from_slice(unit.as_bytes());
    k
}

/// `c` [varint account][varint unit].
pub(super) fn cursor(no: UnitNo) -> Vec<u8> {
    let mut k = vec![CURSORS];
    put_uvarint(&mut k, no.account);
    put_uvarint(&mut k, no.unit);
    k
}

/// `s` [varint account]: every bucket of the account.
pub(super) fn state_prefix(account: u64) -> Vec<u8> {
    let mut k = vec![STATE];
    put_uvarint(&mut k, account);
    k
}

/// `s` [varint account][bucket u32 BE].
pub(super) fn bucket(account: u64, bucket: u32) -> Vec<u8> {
    let mut k = state_prefix(account);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// `o` [seq u64 BE].
pub(super) fn outbox(seq: u64) -> [u8; 9] {
    let mut k = [OUTBOX; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The first seq of an outbox key.
pub(super) fn outbox_seq(k: &[u8]) -> Result<u64, StoreError> {
    match k {
        [OUTBOX, rest @ ..] => decode_seq(rest),
        _ => Err(StoreError::Corrupt("an outbox key".into())),
    }
}

/// `i` [head].
pub(super) fn id_bucket(head: [u8; super::idset::HEAD]) -> Vec<u8> {
    let mut k = vec![IDS];
    k.extend_from_slice(&head);
    k
}

/// `I` id.
pub(super) fn text_id(id: &str) -> Vec<u8> {
    let mut k = vec![TEXT_IDS];
    k.extend_from_slice(id.as_bytes());
    k
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
    fn unit_keys_and_prefixes_never_cover_another_account() {
        let u = Unit::new("acme", "KHUID1");
        assert_eq!(u.key(), b"acme\0KHUID1");
        assert!(u.key().starts_with(&Unit::account_prefix("acme")));
        assert!(!Unit::new("acme-2", "K")
            .key()
            .starts_with(&Unit::account_prefix("acme")));
        // LEB128 is prefix-free: one account's bucket prefix never starts another's key.
        for (a, b) in [(1, 128), (128, 1), (2, 256), (300, 44)] {
            assert!(!bucket(b, 5).starts_with(&state_prefix(a)), "{a} {b}");
        }
        assert!(
            bucket(1, 1) < bucket(1, 2),
            "an account's buckets are in order"
        );
        assert_eq!(bucket(1, 7).len(), 6);
        assert!(outbox(1) < outbox(256), "outbox keys sort by seq");
        assert_eq!(outbox_seq(&outbox(77)).unwrap(), 77);
    }

    #[test]
    fn sink_keys_round_trip() {
        let k = sink_key("hook", 7);
        assert_eq!(split_sink_key(&k).unwrap(), ("hook".to_string(), 7));
        assert!(split_sink_key(b"short").is_err());
    }
}
