//! Document buckets: the records of many documents in one sled value (schema 3).
//!
//! sled 0.34 splits a leaf page at 16 entries whatever their size and keeps per-page state in
//! memory and on disk, so one entry per document made 1M documents ~90,000 pages: 34 MB
//! resident just to open the store (BENCHMARKS.md). A bucket holds every record of an account
//! whose document id hashes to it: [`BUCKETS`] buckets per account, ~15 records each at 1M
//! documents, 16 times fewer entries and pages.
//!
//! - Which bucket: SipHash-1-3 of the document id's text under the store's own random key
//!   (`meta` `hash_key`), modulo [`BUCKETS`]. Keyed, so a provider cannot pile ids into one
//!   bucket; by the document id alone, so both sides of a document inside one account (two
//!   members) share a bucket. The hash must never change under a stored bucket: a test pins
//!   a value.
//! - Value: [`FORMAT`], then records sorted by (unit number, encoded document id), each
//!   `[varint unit][document id (codec::put_doc_id)][varint length][record]`. The record is
//!   the provider's bytes, opaque to the store.
//!
//! [`find`] reads one record without allocating; [`merge`] is a commit's read-modify-write:
//! the stored bucket plus a chunk's updates for it -> the new bucket.

use super::codec::{doc_id_len, items, put_bytes, put_uvarint, Corrupt, Reader};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// Buckets per account (a power of two).
pub(super) const BUCKETS: u32 = 1 << 16;

/// First byte of every bucket value, so that a later format can be told apart.
pub(super) const FORMAT: u8 = 1;

/// Maps document ids to buckets with a store's hash key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hashing {
    key: (u64, u64),
}

impl Hashing {
    pub(super) fn new(key: [u8; 16]) -> Hashing {
        Hashing {
            key: (
                u64::from_le_bytes(key[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(key[8..].try_into().expect("8 bytes")),
            ),
        }
    }

    /// The bucket of a document id (its text, so that the choice does not depend on how the
    /// id is encoded).
    pub(super) fn bucket(&self, document_id: &str) -> u32 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(document_id.as_bytes());
        (h.finish() & u64::from(BUCKETS - 1)) as u32
    }
}

/// One record of a bucket, borrowed from the bucket's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub(super) unit: u64,
    /// The encoded document id (`codec::put_doc_id`).
    pub(super) doc: &'a [u8],
    pub(super) value: &'a [u8],
}

/// The records of a bucket value, in order; an `Err` ends the iteration.
pub(super) fn records(bucket: &[u8]) -> impl Iterator<Item = Result<Record<'_>, Corrupt>> {
    items(bucket, FORMAT, parse_one)
}

fn parse_one<'a>(r: &mut Reader<'a>) -> Option<Record<'a>> {
    let unit = r.uvarint()?;
    let d = doc_id_len(r.0)?;
    let doc = r.take(d)?;
    let value = r.bytes()?;
    Some(Record { unit, doc, value })
}

/// The record of (unit, encoded document id) in `bucket`, if present. No allocation.
pub(super) fn find<'a>(
    bucket: &'a [u8],
    unit: u64,
    doc: &[u8],
) -> Result<Option<&'a [u8]>, Corrupt> {
    for r in records(bucket) {
        let r = r?;
        match (r.unit, r.doc).cmp(&(unit, doc)) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(r.value)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// One change to a bucket: the record of a document of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Update {
    pub(super) unit: u64,
    /// The encoded document id.
    pub(super) doc: Vec<u8>,
    pub(super) value: Vec<u8>,
}

fn put_record(out: &mut Vec<u8>, unit: u64, doc: &[u8], value: &[u8]) {
    put_uvarint(out, unit);
    out.extend_from_slice(doc);
    put_bytes(out, value);
}

/// The read-modify-write of one bucket: `old` (the stored value, `None` if there is none) with
/// `updates` applied, the last update of a document winning. Sorts `updates` in place.
pub(super) fn merge(old: Option<&[u8]>, updates: &mut [Update]) -> Result<Vec<u8>, Corrupt> {
    // Stable sort, then keep the last of equal keys: a chunk may write a document twice.
    updates.sort_by(|a, b| (a.unit, &a.doc).cmp(&(b.unit, &b.doc)));
    let mut out = Vec::with_capacity(old.map_or(0, <[u8]>::len) + 32 * updates.len() + 1);
    out.push(FORMAT);
    let mut olds = old.map(records).into_iter().flatten().peekable();
    let mut i = 0;
    while i < updates.len() {
        let mut j = i;
        while j + 1 < updates.len()
            && (updates[j + 1].unit, &updates[j + 1].doc) == (updates[i].unit, &updates[i].doc)
        {
            j += 1;
        }
        let u = &updates[j];
        while let Some(r) = olds.peek() {
            let r = r.clone()?;
            match (r.unit, r.doc).cmp(&(u.unit, u.doc.as_slice())) {
                std::cmp::Ordering::Less => put_record(&mut out, r.unit, r.doc, r.value),
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => break,
            }
            olds.next();
        }
        put_record(&mut out, u.unit, &u.doc, &u.value);
        i = j + 1;
    }
    for r in olds {
        let r = r?;
        put_record(&mut out, r.unit, r.doc, r.value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::doc_id_bytes;

    fn up(unit: u64, doc: &str, value: &str) -> Update {
        Update {
            unit,
            doc: doc_id_bytes(doc),
            value: value.as_bytes().to_vec(),
        }
    }

    fn all(b: &[u8]) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
        records(b)
            .map(|r| {
                r.map(|r| (r.unit, r.doc.to_vec(), r.value.to_vec()))
                    .unwrap()
            })
            .collect()
    }

    const U1: &str = "490e6ab5-3aa2-4e76-9569-c84aecc56c73";
    const U2: &str = "00000000-3aa2-4e76-9569-c84aecc56c73";

    #[test]
    fn merge_inserts_replaces_and_keeps_order() {
        let b = merge(None, &mut [up(2, U1, "b"), up(1, "INV-1", "a")]).unwrap();
        assert_eq!(
            find(&b, 1, &doc_id_bytes("INV-1")).unwrap(),
            Some(&b"a"[..])
        );
        assert_eq!(find(&b, 2, &doc_id_bytes(U1)).unwrap(), Some(&b"b"[..]));
        assert_eq!(find(&b, 1, &doc_id_bytes(U1)).unwrap(), None, "other unit");
        let b2 = merge(
            Some(&b),
            &mut [up(2, U1, "first"), up(1, U2, "new"), up(2, U1, "B")],
        )
        .unwrap();
        let got = all(&b2);
        assert_eq!(got.len(), 3);
        let keys: Vec<_> = got.iter().map(|(m, d, _)| (*m, d.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "records stay sorted");
        assert_eq!(find(&b2, 2, &doc_id_bytes(U1)).unwrap(), Some(&b"B"[..]));
        assert_eq!(find(&b2, 1, &doc_id_bytes(U2)).unwrap(), Some(&b"new"[..]));
        assert_eq!(
            find(&b2, 1, &doc_id_bytes("INV-1")).unwrap(),
            Some(&b"a"[..])
        );
    }

    #[test]
    fn merge_matches_a_map_model() {
        let mut model = std::collections::BTreeMap::new();
        let mut bucket: Option<Vec<u8>> = None;
        let mut rng = fastrand::Rng::with_seed(42);
        for round in 0..300 {
            let mut ups = Vec::new();
            for _ in 0..(round % 7) {
                let unit = rng.u64(0..3);
                let doc = format!("d{}", rng.u32(0..12));
                ups.push(up(unit, &doc, &format!("v{round}")));
            }
            for u in &ups {
                model.insert((u.unit, u.doc.clone()), u.value.clone());
            }
            if !ups.is_empty() {
                bucket = Some(merge(bucket.as_deref(), &mut ups).unwrap());
            }
            let got: Vec<_> = bucket
                .as_deref()
                .map(all)
                .unwrap_or_default()
                .into_iter()
                .map(|(m, d, v)| ((m, d), v))
                .collect();
            let want: Vec<_> = model.clone().into_iter().collect();
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn corrupt_buckets_are_errors_not_panics() {
        let good = merge(None, &mut [up(1, U1, "abc")]).unwrap();
        for cut in 0..good.len() {
            let bad = &good[..cut];
            let r: Result<Vec<_>, _> = records(bad).collect();
            if cut > 1 {
                assert_eq!(r, Err(Corrupt), "cut at {cut}");
            }
            let _ = find(bad, 1, &doc_id_bytes(U1));
            let _ = merge(Some(bad), &mut [up(1, U2, "x")]);
        }
        assert_eq!(records(&[9, 1, 2]).collect::<Vec<_>>(), vec![Err(Corrupt)]);
        assert!(merge(Some(&[]), &mut [up(1, U2, "x")]).is_err());
    }

    #[test]
    fn hashing_is_stable_keyed_and_spreads() {
        let h = Hashing::new([1; 16]);
        assert_eq!(h.bucket(U1), h.bucket(U1));
        let other = Hashing::new([2; 16]);
        let differ = (0..100)
            .filter(|i| h.bucket(&format!("doc{i}")) != other.bucket(&format!("doc{i}")))
            .count();
        assert!(differ > 90, "the key changes the mapping ({differ}/100)");
        // 1M ids into 65,536 buckets: ~15 each, none far off (Poisson(15.3): max ~40).
        let mut counts = vec![0u32; BUCKETS as usize];
        for i in 0..1_000_000u64 {
            counts[h.bucket(&format!("{i:08x}-0000-4000-8000-{i:012x}")) as usize] += 1;
        }
        let max = *counts.iter().max().unwrap();
        let empty = counts.iter().filter(|c| **c == 0).count();
        assert!(max < 45 && empty < 10, "max {max}, empty {empty}");
        // Pinned: a dependency update that changed the hash fails here instead of misplacing
        // every stored document.
        assert_eq!(Hashing::new([0; 16]).bucket("a"), 6163);
    }
}
