//! Event-id buckets (schema 3): the `ids` index — event id -> seq, kept forever so that an id
//! enters the outbox once — in at most 65,536 sled entries whatever the number of events.
//!
//! One entry per event made the index sled's page problem again (every event ever emitted: a
//! page per ~10 events, resident page state growing for the life of the store). A pollhook
//! event id is 16 random bytes (SHA-256): its first two bytes choose the bucket, and the value
//! holds the rest of every id of the bucket with its seq, sorted:
//! `[FORMAT] ([14 bytes][varint seq])*`. Ids that are not pollhook's own spelling (imported by
//! a restore from a foreign line) are kept whole, one entry each, under their own prefix.

use super::codec::{items, put_uvarint, Corrupt};

pub(super) const FORMAT: u8 = 1;

/// Bytes of an id that choose its bucket; the rest is stored in the bucket.
pub(super) const HEAD: usize = 2;
/// The stored rest of an id.
pub(super) type Rest = [u8; 16 - HEAD];

/// Splits a 16-byte id into its bucket and its stored rest.
pub(super) fn split(id: &[u8; 16]) -> ([u8; HEAD], Rest) {
    (
        id[..HEAD].try_into().expect("HEAD bytes"),
        id[HEAD..].try_into().expect("the rest"),
    )
}

/// The (rest, seq) entries of a bucket, in order; an `Err` ends the iteration.
pub(super) fn entries(bucket: &[u8]) -> impl Iterator<Item = Result<(Rest, u64), Corrupt>> + '_ {
    items(bucket, FORMAT, |r| {
        let id: Rest = r.take(16 - HEAD)?.try_into().ok()?;
        Some((id, r.uvarint()?))
    })
}

/// The seq of `rest` in `bucket`.
pub(super) fn find(bucket: &[u8], rest: &Rest) -> Result<Option<u64>, Corrupt> {
    for e in entries(bucket) {
        let (id, seq) = e?;
        match id.cmp(rest) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(seq)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// `old` with `new` entries added (an id already there keeps its seq). Sorts `new`.
pub(super) fn merge(old: Option<&[u8]>, new: &mut [(Rest, u64)]) -> Result<Vec<u8>, Corrupt> {
    new.sort_by_key(|a| a.0);
    let mut out = Vec::with_capacity(old.map_or(1, <[u8]>::len) + new.len() * 18);
    out.push(FORMAT);
    let put = |out: &mut Vec<u8>, id: &Rest, seq: u64| {
        out.extend_from_slice(id);
        put_uvarint(out, seq);
    };
    let mut olds = old.map(entries).into_iter().flatten().peekable();
    let mut last: Option<Rest> = None;
    for (id, seq) in new.iter() {
        while let Some(o) = olds.peek() {
            let (oid, oseq) = o.clone()?;
            if oid > *id {
                break;
            }
            put(&mut out, &oid, oseq);
            last = Some(oid);
            olds.next();
        }
        if last.as_ref() != Some(id) {
            put(&mut out, id, *seq);
            last = Some(*id);
        }
    }
    for o in olds {
        let (oid, oseq) = o?;
        put(&mut out, &oid, oseq);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(n: u8) -> Rest {
        [n; 16 - HEAD]
    }

    #[test]
    fn merge_keeps_order_and_first_seqs_and_find_finds() {
        let b = merge(None, &mut [(rest(5), 50), (rest(1), 10)]).unwrap();
        let b = merge(Some(&b), &mut [(rest(3), 30), (rest(5), 99), (rest(9), 90)]).unwrap();
        let all: Vec<_> = entries(&b).map(Result::unwrap).collect();
        assert_eq!(
            all,
            vec![(rest(1), 10), (rest(3), 30), (rest(5), 50), (rest(9), 90)]
        );
        assert_eq!(
            find(&b, &rest(5)).unwrap(),
            Some(50),
            "a known id keeps its seq"
        );
        assert_eq!(find(&b, &rest(4)).unwrap(), None);
        assert_eq!(find(&b, &rest(200)).unwrap(), None);
        for cut in 1..b.len() {
            let _ = find(&b[..cut], &rest(9));
            let _ = merge(Some(&b[..cut]), &mut [(rest(2), 1)]);
        }
        assert!(entries(&b[..b.len() - 3]).any(|e| e.is_err()), "truncated");
        assert_eq!(entries(&[7]).collect::<Vec<_>>(), vec![Err(Corrupt)]);
    }
}
