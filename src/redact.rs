//! Redaction: the one registry of every secret value this process holds, and the masking of
//! those values — raw, and in the encoded forms a server may echo back — out of any text that
//! pollhook logs, prints or stores.
//!
//! How it cannot be forgotten:
//! - every [`Secret`](crate::config::Secret) registers itself when it is created (configured
//!   secrets when resolved, tokens obtained at run time, the Basic credential, refresh tokens
//!   read from the store), so no call site has to remember to;
//! - text leaves the process through three doors, each of which masks here: the log writer
//!   ([`crate::logging`], text and JSON), [`Redacted`] strings (the error text that goes into
//!   the store, the cycle report, `status`), and the CLI's error printer.
//!
//! The registry holds a weak reference to each value: a secret stays masked exactly as long as
//! pollhook holds it, so access tokens replaced at every refresh do not pile up. Values shorter
//! than [`MIN_LEN`] characters are not masked (they would mangle every log line).

use base64::Engine as _;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

/// What a masked value is replaced with.
pub const MASK: &str = "<redacted>";
/// Shorter values are not masked: "abc" would blank out unrelated words everywhere.
pub const MIN_LEN: usize = 4;
/// Forms are indexed by their first bytes; every form is at least this long.
const KEY: usize = 4;

struct Entry {
    form: Box<[u8]>,
    owner: Weak<str>,
}

#[derive(Default)]
struct Registry {
    entries: Vec<Entry>,
    /// Entry indices by the first [`KEY`] bytes of their form, longest form first.
    by_key: HashMap<[u8; KEY], Vec<usize>>,
    /// A bit per first two bytes: most positions of a text are rejected without hashing.
    first_two: Vec<u64>,
    /// Live values at the last sweep of dead entries.
    live_at_sweep: usize,
}

static REGISTRY: RwLock<Option<Registry>> = RwLock::new(None);

/// Registers `value` (and its encoded forms) for masking while `value` is alive.
pub fn register(value: &Arc<str>) {
    if value.chars().count() < MIN_LEN {
        return;
    }
    let forms = forms(value);
    let mut guard = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let reg = guard.get_or_insert_with(Registry::default);
    if reg.entries.len() > 2 * reg.live_at_sweep + 64 {
        reg.entries.retain(|e| e.owner.strong_count() > 0);
        reg.live_at_sweep = reg.entries.len();
        reg.reindex();
    }
    // The same value held twice (two `Secret`s) gets an entry per holder: either keeps it
    // masked, and the sweep drops the entries whose holder is gone.
    for f in forms {
        reg.entries.push(Entry {
            form: f.into_bytes().into_boxed_slice(),
            owner: Arc::downgrade(value),
        });
        reg.index(reg.entries.len() - 1);
    }
}

impl Registry {
    fn index(&mut self, i: usize) {
        let form = &self.entries[i].form;
        let key: [u8; KEY] = form[..KEY].try_into().expect("forms are at least KEY long");
        if self.first_two.is_empty() {
            self.first_two = vec![0; 65536 / 64];
        }
        let bit = u16::from_be_bytes([key[0], key[1]]) as usize;
        self.first_two[bit / 64] |= 1 << (bit % 64);
        let list = self.by_key.entry(key).or_default();
        list.push(i);
        let entries = &self.entries;
        list.sort_by_key(|&j| std::cmp::Reverse(entries[j].form.len()));
    }

    fn reindex(&mut self) {
        self.by_key.clear();
        self.first_two.clear();
        for i in 0..self.entries.len() {
            self.index(i);
        }
    }

    /// The length of the longest registered form that starts at `text[i..]`, if any.
    fn match_at(&self, text: &[u8], i: usize) -> Option<usize> {
        let bit = u16::from_be_bytes([text[i], text[i + 1]]) as usize;
        if self.first_two[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        let key: [u8; KEY] = text[i..i + KEY].try_into().ok()?;
        self.by_key.get(&key)?.iter().find_map(|&j| {
            let f = &self.entries[j].form;
            text[i..].starts_with(f).then_some(f.len())
        })
    }
}

/// The forms a server may echo a value in: raw, base64 (standard and URL-safe, with and
/// without padding), JSON-escaped (also with `\/`), percent-encoded; and for an `Authorization` value
/// (`Basic …`, `Bearer …`) the same forms of the credential alone.
fn forms(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |f: String| {
        if f.len() >= KEY && !out.contains(&f) {
            out.push(f);
        }
    };
    let mut values = vec![value];
    for scheme in ["Basic ", "Bearer "] {
        if let Some(cred) = value.strip_prefix(scheme) {
            values.push(cred);
        }
    }
    for v in values {
        add(v.to_string());
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            add(engine.encode(v));
        }
        let json = serde_json::to_string(v).expect("a string serializes");
        let json = json[1..json.len() - 1].to_string();
        add(json.replace('/', "\\/"));
        add(json);
        add(percent(v, false));
        add(percent(v, true));
    }
    out
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (`form`: spaces as `+`).
fn percent(v: &str, form: bool) -> String {
    let mut s = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                s.push(b as char)
            }
            b' ' if form => s.push('+'),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// `text` with every registered secret form replaced by [`MASK`].
pub fn text(text: &str) -> Cow<'_, str> {
    let guard = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let Some(reg) = guard.as_ref().filter(|r| !r.entries.is_empty()) else {
        return Cow::Borrowed(text);
    };
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i + KEY <= bytes.len() {
        match reg.match_at(bytes, i) {
            // A form is a whole UTF-8 string, so it starts and ends on char boundaries.
            Some(len) => {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str(MASK);
                i += len;
                copied = i;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// At most `max_chars` of `text`, masked first: clipping before masking would leave the head
/// of a secret that the cut made unrecognizable. Every quote of a provider's text that is
/// shortened goes through here.
pub fn clip(s: &str, max_chars: usize) -> String {
    let masked = text(s);
    let mut out: String = masked.chars().take(max_chars).collect();
    if out.len() < masked.len() {
        out.push('…');
    }
    out
}

/// How [`sample`] shows a value a provider sent (in `pollhook probe`'s report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// As it is (clipped): timestamps, numbers, enumerations — their form is the point.
    Full,
    /// Its first 8 characters: ids.
    Short,
    /// Its form only: letters become `x`/`X`, digits `9`, the rest stays — names, emails,
    /// messages, links, tax numbers (`99.999.999.9-999.999` tells the NPWP form apart).
    Form,
}

/// A provider value fit to print as an example: masked ([`text`]) first, then shown as `show`
/// says, at most 40 characters.
pub fn sample(value: &str, show: Show) -> String {
    const MAX: usize = 40;
    let masked = text(value);
    match show {
        Show::Full => clip(&masked, MAX),
        Show::Short => clip(&masked, 8),
        Show::Form => {
            let form: String = masked
                .chars()
                .map(|c| match c {
                    c if c.is_ascii_digit() => '9',
                    c if c.is_uppercase() => 'X',
                    c if c.is_alphabetic() => 'x',
                    c => c,
                })
                .collect();
            // The mask itself stays readable.
            clip(&form.replace("<xxxxxxxx>", MASK), MAX)
        }
    }
}

/// [`text`] for bytes (a log line); invalid UTF-8 is passed through lossily.
pub fn bytes(b: &[u8]) -> Cow<'_, [u8]> {
    match String::from_utf8_lossy(b) {
        Cow::Borrowed(s) => match text(s) {
            Cow::Borrowed(_) => Cow::Borrowed(b),
            Cow::Owned(o) => Cow::Owned(o.into_bytes()),
        },
        Cow::Owned(s) => Cow::Owned(text(&s).into_owned().into_bytes()),
    }
}

/// A string that has been through [`text`]: built from any string (masking it), and masked
/// again when read back from the store (a value stored before a secret was known, or by an
/// older version, is masked as soon as the secret is). Error text bound for the store, the
/// cycle report and `status` is of this type, so it cannot skip redaction.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Redacted {
    fn from(s: String) -> Redacted {
        match text(&s) {
            Cow::Borrowed(_) => Redacted(s),
            Cow::Owned(o) => Redacted(o),
        }
    }
}

impl From<&str> for Redacted {
    fn from(s: &str) -> Redacted {
        Redacted(text(s).into_owned())
    }
}

impl<'de> serde::Deserialize<'de> for Redacted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Redacted, D::Error> {
        String::deserialize(d).map(Redacted::from)
    }
}

impl std::ops::Deref for Redacted {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn samples_show_the_form_not_the_content() {
        assert_eq!(sample("a.b@c.id", Show::Form), "x.x@x.xx");
        assert_eq!(
            sample("12.312.312.0-001.123", Show::Form),
            "99.999.999.9-999.999"
        );
        assert_eq!(sample("PT Maju Jaya", Show::Form), "XX Xxxx Xxxx");
        assert_eq!(
            sample("490e6ab5-3aa2-4e76-9569-c84aecc56c73", Show::Short),
            "490e6ab5…"
        );
        assert_eq!(
            sample("2024-03-07T07:16:07.859Z", Show::Full),
            "2024-03-07T07:16:07.859Z"
        );
        let secret: Arc<str> = Arc::from("sample-secret-value-123");
        register(&secret);
        assert_eq!(
            sample("x sample-secret-value-123", Show::Form),
            "x <redacted>"
        );
        assert_eq!(sample("sample-secret-value-123", Show::Full), MASK);
        drop(secret);
        assert!(sample(&"y".repeat(100), Show::Full).chars().count() <= 41);
    }

    use super::*;

    fn held(v: &str) -> Arc<str> {
        let a: Arc<str> = Arc::from(v);
        register(&a);
        a
    }

    #[test]
    fn every_form_of_a_held_secret_is_masked() {
        let _rt = held("rt_9f8e7d6c5b4a/+=x");
        let b64 = base64::engine::general_purpose::STANDARD.encode("rt_9f8e7d6c5b4a/+=x");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("rt_9f8e7d6c5b4a/+=x");
        for (input, want) in [
            (
                "token rt_9f8e7d6c5b4a/+=x refused",
                "token <redacted> refused",
            ),
            (&format!("b64 {b64}") as &str, "b64 <redacted>"),
            (&format!("url {url}."), "url <redacted>."),
            (r#"{"t":"rt_9f8e7d6c5b4a\/+=x"}"#, r#"{"t":"<redacted>"}"#),
            ("q=rt_9f8e7d6c5b4a%2F%2B%3Dx&", "q=<redacted>&"),
            ("nothing here", "nothing here"),
        ] {
            assert_eq!(text(input), want, "{input}");
        }
    }

    #[test]
    fn an_authorization_value_masks_the_header_and_the_credential_alone() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("cid-1:s3cret-value")
        );
        let _b = held(&basic);
        let _s = held("s3cret-value");
        let cred = basic.strip_prefix("Basic ").unwrap();
        assert_eq!(
            text(&format!("got {basic} and {cred} for cid-1:s3cret-value")),
            "got <redacted> and <redacted> for cid-1:<redacted>"
        );
    }

    #[test]
    fn a_dropped_secret_is_forgotten_and_short_values_are_never_masked() {
        let gone = held("tok-dropped-soon-1234");
        drop(gone);
        for i in 0..200 {
            // Registrations sweep dead entries once they outnumber the live ones.
            let _ = held(&format!("filler-secret-{i:04}"));
        }
        assert_eq!(text("tok-dropped-soon-1234"), "tok-dropped-soon-1234");
        let _short = held("abc");
        assert_eq!(text("abc abc"), "abc abc");
    }

    #[test]
    fn clipping_masks_first_so_no_head_of_a_secret_survives() {
        let _s = held("eyJhbGciOiJIUzI1NiJ9.long-token-body-0123456789");
        let quoted = "you sent Bearer eyJhbGciOiJIUzI1NiJ9.long-token-body-0123456789 (bad)";
        assert_eq!(clip(quoted, 30), "you sent Bearer <redacted> (ba…");
        assert_eq!(clip("short", 30), "short");
    }

    #[test]
    fn multibyte_text_around_a_match_stays_intact() {
        let _s = held("ключ-секрет-42");
        assert_eq!(text("é ключ-секрет-42 ü — ok"), "é <redacted> ü — ok");
    }

    #[test]
    fn redacted_strings_mask_on_construction_and_on_read() {
        let _s = held("stored-before-known-77");
        let r = Redacted::from("error: stored-before-known-77".to_string());
        assert_eq!(r.as_str(), "error: <redacted>");
        let back: Redacted = serde_json::from_str(r#""again stored-before-known-77""#).unwrap();
        assert_eq!(&*back, "again <redacted>");
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            r#""again <redacted>""#
        );
    }
}
