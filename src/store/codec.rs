//! Byte encodings of the schema-3 layout, pure and self-contained: LEB128 varints, document
//! ids (16 bytes for a canonical UUID, text otherwise) and event ids (16 bytes for the
//! `evt_` + 32 hex digits pollhook makes, text otherwise). Everything read here comes from
//! disk, so nothing panics on bad bytes: a decoder returns `None`.

/// Appends `v` as an unsigned LEB128 varint (1 byte below 128, 10 bytes at most).
pub(super) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint: the value and the bytes it took. `None` when truncated
/// or longer than 10 bytes.
pub(super) fn get_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A reader over bytes from disk: every method returns `None` when the bytes run out.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn uvarint(&mut self) -> Option<u64> {
        let (v, n) = get_uvarint(self.0)?;
        self.0 = &self.0[n..];
        Some(v)
    }

    /// A varint length, then that many bytes.
    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        self.take(n)
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A stored value that does not parse (a bucket, an id bucket, an outbox group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Corrupt;

/// The items of a value made of a `format` byte and then items one after another, each read
/// by `one`; an `Err` (another format byte, or an item `one` cannot read) ends the iteration.
pub(super) fn items<'a, T: 'a>(
    value: &'a [u8],
    format: u8,
    mut one: impl FnMut(&mut Reader<'a>) -> Option<T> + 'a,
) -> impl Iterator<Item = Result<T, Corrupt>> + 'a {
    let mut rest = match value.split_first() {
        Some((&f, rest)) if f == format => Some(Reader(rest)),
        _ => None,
    };
    let mut failed = rest.is_none();
    std::iter::from_fn(move || {
        if std::mem::take(&mut failed) {
            rest = None;
            return Some(Err(Corrupt));
        }
        let r = rest.as_mut()?;
        if r.is_empty() {
            return None;
        }
        let item = one(r);
        if item.is_none() {
            rest = None;
        }
        Some(item.ok_or(Corrupt))
    })
}

/// Appends a varint length and the bytes.
pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Tag of an id stored as its 16 bytes (a canonical UUID document id; a pollhook event id).
const ID_BINARY: u8 = 1;
/// Tag of an id stored as text: varint length, then the bytes.
const ID_TEXT: u8 = 2;

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// 32 lowercase hex digits -> 16 bytes.
fn parse_hex16(h: &[u8]) -> Option<[u8; 16]> {
    if h.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (hex_digit(h[2 * i])? << 4) | hex_digit(h[2 * i + 1])?;
    }
    Some(out)
}

fn push_hex(s: &mut String, b: &[u8]) {
    for byte in b {
        s.push(char::from_digit((byte >> 4) as u32, 16).expect("a nibble"));
        s.push(char::from_digit((byte & 15) as u32, 16).expect("a nibble"));
    }
}

/// The 16 bytes of `id` when it is a UUID spelled exactly as [`format_uuid`] spells it
/// (lowercase, hyphenated 8-4-4-4-12): only then does it round-trip byte for byte. Anything
/// else (uppercase, braces, an invoice number) is stored as text.
pub(super) fn parse_uuid(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut hex = [0u8; 32];
    let mut n = 0;
    for (i, c) in b.iter().enumerate() {
        if !matches!(i, 8 | 13 | 18 | 23) {
            hex[n] = *c;
            n += 1;
        }
    }
    parse_hex16(&hex)
}

/// The canonical spelling of a UUID: 8-4-4-4-12 lowercase hex digits.
pub(super) fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, chunk) in [&u[0..4], &u[4..6], &u[6..8], &u[8..10], &u[10..16]]
        .iter()
        .enumerate()
    {
        if i > 0 {
            s.push('-');
        }
        push_hex(&mut s, chunk);
    }
    s
}

/// Appends the self-delimiting encoding of a document id: `[1][16 bytes]` for a canonical
/// UUID, `[2][varint length][bytes]` for anything else.
pub(super) fn put_doc_id(out: &mut Vec<u8>, id: &str) {
    match parse_uuid(id) {
        Some(u) => {
            out.push(ID_BINARY);
            out.extend_from_slice(&u);
        }
        None => {
            out.push(ID_TEXT);
            put_bytes(out, id.as_bytes());
        }
    }
}

/// The encoded document id alone (equal ids have equal encodings).
pub(super) fn doc_id_bytes(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    put_doc_id(&mut out, id);
    out
}

/// How many bytes the encoded document id at the start of `b` takes.
pub(super) fn doc_id_len(b: &[u8]) -> Option<usize> {
    match *b.first()? {
        ID_BINARY if b.len() >= 17 => Some(17),
        ID_TEXT => {
            let (n, used) = get_uvarint(&b[1..])?;
            let end = 1usize
                .checked_add(used)?
                .checked_add(usize::try_from(n).ok()?)?;
            (end <= b.len()).then_some(end)
        }
        _ => None,
    }
}

/// Decodes one encoded document id (nothing after it) back to its text.
pub(super) fn decode_doc_id(b: &[u8]) -> Option<String> {
    if doc_id_len(b)? != b.len() {
        return None;
    }
    match b[0] {
        ID_BINARY => Some(format_uuid(b[1..17].try_into().ok()?)),
        _ => {
            let (_, used) = get_uvarint(&b[1..])?;
            String::from_utf8(b[1 + used..].to_vec()).ok()
        }
    }
}

/// The 16 bytes of a pollhook event id (`evt_` + 32 lowercase hex digits); `None` for any
/// other id (kept as text).
pub(super) fn event_id_bytes(id: &str) -> Option<[u8; 16]> {
    parse_hex16(id.strip_prefix("evt_")?.as_bytes())
}

/// The text of a pollhook event id from its 16 bytes.
pub(super) fn format_event_id(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    s.push_str("evt_");
    push_hex(&mut s, b);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_truncation() {
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(get_uvarint(&b), Some((v, b.len())));
            assert_eq!(get_uvarint(&b[..b.len() - 1]), None, "{v} truncated");
        }
        assert_eq!(get_uvarint(&[0xff; 11]), None);
        let mut r = Reader(&[3, b'a', b'b']);
        assert_eq!(r.bytes(), None, "a length past the end");
    }

    #[test]
    fn uuids_take_16_bytes_only_when_they_round_trip() {
        let id = "490e6ab5-3aa2-4e76-9569-c84aecc56c73";
        let enc = doc_id_bytes(id);
        assert_eq!(enc.len(), 17);
        assert_eq!(decode_doc_id(&enc).as_deref(), Some(id));
        for text in [
            "490E6AB5-3AA2-4E76-9569-C84AECC56C73", // uppercase: would not round-trip
            "490e6ab53aa24e769569c84aecc56c73",
            "490e6ab5-3aa2-4e76-9569-c84aecc56c7g",
            "490e6ab5+3aa2-4e76-9569-c84aecc56c73",
            "INV/2019/I/0001-A",
            "",
            "ស្ថានភាព",
        ] {
            let enc = doc_id_bytes(text);
            assert_eq!(enc[0], ID_TEXT, "{text}");
            assert_eq!(decode_doc_id(&enc).as_deref(), Some(text));
            assert_eq!(doc_id_len(&enc), Some(enc.len()));
        }
        assert_eq!(doc_id_len(&[ID_TEXT, 5, b'a']), None, "truncated text");
        assert_eq!(doc_id_len(&[ID_BINARY, 1, 2]), None, "truncated uuid");
        assert_eq!(doc_id_len(&[9]), None, "unknown tag");
        assert_eq!(decode_doc_id(&[]), None);
    }

    #[test]
    fn pollhook_event_ids_are_16_bytes_and_others_are_not() {
        let id = crate::event::event_id(&["a"]);
        let b = event_id_bytes(&id).unwrap();
        assert_eq!(format_event_id(&b), id);
        assert_eq!(event_id_bytes("evt_XYZ"), None);
        assert_eq!(event_id_bytes(&id.to_uppercase()), None);
        assert_eq!(event_id_bytes(&id[4..]), None);
    }
}
