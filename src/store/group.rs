//! Outbox groups (schema 3): consecutive events in one sled value, LZ4-compressed.
//!
//! sled rewrites a leaf page (16 entries) every 10 changes to it and logs every change whole,
//! so one entry per event cost some 750 bytes on disk per event beyond its envelope line, and
//! an entry (a resident page every ~10 events) per event kept in retention. A commit's events
//! are written instead as groups of up to [`MAX_EVENTS`] consecutive seqs, keyed by the first
//! seq; the envelope lines of a group share most of their bytes, and compressed together they
//! take about a quarter of their size (BENCHMARKS.md).
//!
//! Value: `[FORMAT][varint count][LZ4 block: u32 LE size, then the compressed body]`; the
//! body is, per event, `[varint length][subject][varint length][line]`, where the subject is
//! the per-document ordering key (`account \0 subject`) and the line the envelope as sinks
//! write it.

use super::codec::{put_bytes, Corrupt, Reader};

pub(super) const FORMAT: u8 = 1;
/// Events in one group at most.
pub(super) const MAX_EVENTS: usize = 64;
/// Uncompressed body bytes of one group at most (a group closes at the event that reaches
/// it): a leaf of 16 groups stays well under sled's 128 KiB blob threshold.
pub(super) const MAX_BODY: usize = 24 * 1024;
/// A group body larger than this is refused as corrupt instead of being allocated.
const BODY_LIMIT: usize = 64 << 20;

/// One event to write: its ordering key and its envelope line.
pub(super) struct Item<'a> {
    pub(super) subject: &'a [u8],
    pub(super) line: &'a [u8],
}

/// Splits `items` (consecutive seqs) into groups: the index of each group's first item.
pub(super) fn boundaries(items: &[Item]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, it) in items.iter().enumerate() {
        bytes += it.subject.len() + it.line.len() + 4;
        if i + 1 - start >= MAX_EVENTS || bytes >= MAX_BODY || i + 1 == items.len() {
            out.push(start..i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    out
}

/// The value of one group.
pub(super) fn encode(items: &[Item]) -> Vec<u8> {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.line.len() + 64).sum());
    for it in items {
        put_bytes(&mut body, it.subject);
        put_bytes(&mut body, it.line);
    }
    let mut out = vec![FORMAT];
    super::codec::put_uvarint(&mut out, items.len() as u64);
    out.extend_from_slice(&lz4_flex::block::compress_prepend_size(&body));
    out
}

/// A decoded group: its events' subjects and lines, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    body: Vec<u8>,
    spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Group {
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The subject and line of the `i`-th event.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        self.spans
            .get(i)
            .map(|(s, l)| (&self.body[s.clone()], &self.body[l.clone()]))
    }
}

/// The number of events of a group value, without decompressing it.
pub(super) fn count(v: &[u8]) -> Result<u64, Corrupt> {
    let mut r = match v.split_first() {
        Some((&FORMAT, rest)) => Reader(rest),
        _ => return Err(Corrupt),
    };
    r.uvarint().ok_or(Corrupt)
}

pub(super) fn decode(v: &[u8]) -> Result<Group, Corrupt> {
    let mut r = match v.split_first() {
        Some((&FORMAT, rest)) => Reader(rest),
        _ => return Err(Corrupt),
    };
    let n = usize::try_from(r.uvarint().ok_or(Corrupt)?).map_err(|_| Corrupt)?;
    let size = r.take(4).ok_or(Corrupt)?;
    let size = u32::from_le_bytes(size.try_into().expect("4 bytes")) as usize;
    if size > BODY_LIMIT || n > size {
        return Err(Corrupt);
    }
    let body = lz4_flex::block::decompress(r.0, size).map_err(|_| Corrupt)?;
    let mut spans = Vec::with_capacity(n);
    let mut b = Reader(&body);
    let at = |b: &Reader, base: &[u8]| base.len() - b.0.len();
    for _ in 0..n {
        let s = b.bytes().ok_or(Corrupt)?;
        let s_end = at(&b, &body);
        let l = b.bytes().ok_or(Corrupt)?;
        let l_end = at(&b, &body);
        spans.push((s_end - s.len()..s_end, l_end - l.len()..l_end));
    }
    if !b.is_empty() {
        return Err(Corrupt);
    }
    Ok(Group { body, spans })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_split_by_count_and_size_and_refuse_damage() {
        let lines: Vec<String> = (0..150).map(|i| format!("{{\"seq\":{i}}}")).collect();
        let items: Vec<Item> = lines
            .iter()
            .map(|l| Item {
                subject: b"acme\0KHUID1/d",
                line: l.as_bytes(),
            })
            .collect();
        let b = boundaries(&items);
        assert_eq!(b, vec![0..64, 64..128, 128..150]);
        let v = encode(&items[128..150]);
        assert_eq!(count(&v), Ok(22));
        let g = decode(&v).unwrap();
        assert_eq!(g.len(), 22);
        assert_eq!(
            g.get(0),
            Some((&b"acme\0KHUID1/d"[..], lines[128].as_bytes()))
        );
        assert_eq!(g.get(22), None);
        let big = "x".repeat(MAX_BODY / 3);
        let items: Vec<Item> = (0..7)
            .map(|_| Item {
                subject: b"",
                line: big.as_bytes(),
            })
            .collect();
        assert_eq!(boundaries(&items), vec![0..3, 3..6, 6..7]);
        for cut in 0..v.len() {
            assert!(decode(&v[..cut]).is_err(), "cut at {cut}");
        }
        let mut lie = v.clone();
        lie[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&lie),
            Err(Corrupt),
            "an absurd size is refused, not allocated"
        );
    }
}
