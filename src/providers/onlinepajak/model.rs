//! OnlinePajak answers and invoices, read through the [`ApiMap`], and the compact record kept
//! per invoice.
//!
//! The envelope has four known forms: success `{"success": {code, message}, "data": ...}`,
//! one error `{"error": {code, message, errorId}}`, several `{"errors": [{code, message}]}`,
//! and the gateway's `{"message": "Unauthorized" | "Invalid signature"}`. Parsing never panics
//! and never builds a tree of the answer ([`wire::read`](crate::providers::wire::read)): only
//! the mapped invoice fields are kept; a shape that fits none of the forms is [`Malformed`],
//! with what was expected; an invoice that cannot be read is counted in [`Unusable`].

use super::api::ApiMap;
use crate::providers::contract::{Field, Presence};
pub use crate::providers::wire::Malformed;
use crate::providers::wire::{check_id, read, Node, Page, Shape};
use crate::time::Millis;

/// Invoices kept from one Bulk Fetch page at most (ten times the largest `page_size`).
pub const MAX_PAGE_ITEMS: usize = 10_000;

/// What an error envelope says, for messages.
pub fn error_text(body: &[u8]) -> String {
    let code_msg = Shape::record(["code", "message", "errorId"]);
    let shape = Shape::object([
        ("error", code_msg.clone()),
        ("errors", Shape::array(code_msg, 20)),
        ("message", Shape::scalar()),
    ]);
    let v = read(body, &shape).unwrap_or_default();
    let code_msg = |e: &Node| {
        let code = match e.field(0) {
            Node::Null => "null".to_string(),
            c => c.text_or_empty(),
        };
        let msg = e.field(1).as_str().unwrap_or("");
        let id = e
            .field(2)
            .as_str()
            .map(|i| format!(" (errorId {i})"))
            .unwrap_or_default();
        format!("{code} {msg}{id}").trim().to_string()
    };
    if !v.field(0).is_absent() {
        return code_msg(v.field(0));
    }
    if let Node::Array(errs) = v.field(1) {
        return errs
            .kept
            .iter()
            .map(|(_, e)| code_msg(e))
            .collect::<Vec<_>>()
            .join("; ");
    }
    match v.field(2).as_str() {
        Some(m) => m.to_string(),
        None => "(no error message)".to_string(),
    }
}

/// `data` of a success envelope read through `data`; an error envelope (with a success
/// status) or a missing `data` is [`Malformed`].
fn success_data(body: &[u8], data: Shape) -> Result<Node, Malformed> {
    let shape = Shape::object([
        ("data", data),
        ("error", Shape::default()),
        ("errors", Shape::default()),
    ]);
    let mut v = read(body, &shape)?.into_fields().unwrap_or_default();
    if v.len() < 3 {
        return Err(Malformed(
            "expected {\"success\": {...}, \"data\": ...}".into(),
        ));
    }
    if !v[1].is_absent() || !v[2].is_absent() {
        return Err(Malformed(format!(
            "an error envelope with a success status: {}",
            error_text(body)
        )));
    }
    match std::mem::take(&mut v[0]) {
        Node::Absent | Node::Null => Err(Malformed(
            "expected {\"success\": {...}, \"data\": ...}".into(),
        )),
        d => Ok(d),
    }
}

/// One page of Bulk Fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkPage {
    pub page: Page<Invoice>,
    pub total_pages: Option<u64>,
    /// How many of its invoices carried each mapped field where expected.
    pub presence: Presence,
}

/// Retrieve's invoice, and which mapped fields it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieved {
    pub invoice: Invoice,
    pub presence: Presence,
}

/// What the items of an answer carried of the mapped fields. A field that belongs only to
/// answered invoices (`approvedAt`, `djpResponseMessage`) or approved ones (`documentNumber`,
/// `pdfDownloadLink`) is expected only there.
fn presence<'a>(nodes: impl IntoIterator<Item = &'a Node>, map: &ApiMap) -> Presence {
    let fields: Vec<Field> = map.fields();
    let mut p = Presence::new("invoices", &fields);
    for node in nodes.into_iter().filter(|n| n.is_object()) {
        let outcome = node.field(STATUS).as_str().and_then(|s| map.outcome(s));
        for (i, f) in fields.iter().enumerate() {
            let expected = match i {
                APPROVED_AT | DJP_RESPONSE_MESSAGE => outcome.is_some(),
                DOCUMENT_NUMBER | PDF_DOWNLOAD_LINK => outcome == Some(true),
                _ => true,
            };
            p.note(i, node.field(i), expected, &f.class);
        }
    }
    p
}

// Positions in `ApiMap::fields` (and so in the invoice shape).
const DOCUMENT_NUMBER: usize = 1;
const STATUS: usize = 7;
const DJP_RESPONSE_MESSAGE: usize = 8;
const PDF_DOWNLOAD_LINK: usize = 9;
const APPROVED_AT: usize = 12;

pub fn page(body: &[u8], map: &ApiMap) -> Result<BulkPage, Malformed> {
    let data = Shape::object([
        (
            map.content.as_str(),
            Shape::array(invoice_shape(map), MAX_PAGE_ITEMS),
        ),
        (map.total_pages.as_str(), Shape::scalar()),
    ]);
    let mut data = success_data(body, data)?.into_fields().unwrap_or_default();
    let total_pages = data.get(1).and_then(Node::count);
    let Some(items) = data
        .get_mut(0)
        .map(std::mem::take)
        .and_then(Node::into_items)
    else {
        return Err(Malformed(format!(
            "expected data.{} to be an array of invoices",
            map.content
        )));
    };
    let presence = presence(items.kept.iter().map(|(_, n)| n), map);
    Ok(BulkPage {
        page: items.page("invoice", "an invoice", |n| Invoice::from_node(n, map))?,
        total_pages,
        presence,
    })
}

/// Retrieve's answer: the envelope's `data` is the invoice.
pub fn retrieved(body: &[u8], map: &ApiMap) -> Result<Retrieved, Malformed> {
    let node = success_data(body, invoice_shape(map))?;
    Ok(Retrieved {
        presence: presence([&node], map),
        invoice: Invoice::from_node(&node, map)?,
    })
}

/// An invoice as the diff and the payload need it. Text fields absent or null read as "".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: String,
    pub document_number: String,
    pub client_reference_id: String,
    pub commercial_invoice_number: String,
    pub tax_period: String,
    pub revision: i64,
    pub document_type: String,
    /// `None` when the field is absent: then Retrieve the invoice.
    pub approval_status: Option<String>,
    pub djp_response_message: String,
    pub pdf_download_link: String,
    pub created_by: String,
    pub npwp: String,
    /// As the API wrote it: it becomes the webhook's `event_date` verbatim.
    pub approved_at: Option<String>,
    pub updated_at: Option<Millis>,
}

/// The mapped invoice fields, in the order [`Invoice::from_node`] reads them
/// ([`ApiMap::fields`]).
fn invoice_shape(map: &ApiMap) -> Shape {
    Shape::record(map.fields().into_iter().map(|f| f.name))
}

impl Invoice {
    /// A bare INVOICE object (outside any envelope).
    pub fn parse(body: &[u8], map: &ApiMap) -> Result<Invoice, Malformed> {
        Invoice::from_node(&read(body, &invoice_shape(map))?, map)
    }

    fn from_node(v: &Node, map: &ApiMap) -> Result<Invoice, Malformed> {
        if !v.is_object() {
            return Err(Malformed("expected an invoice object".into()));
        }
        let id = v.field(0).text_or_empty();
        if id.is_empty() {
            return Err(Malformed(format!("an invoice without `{}`", map.id)));
        }
        check_id(&id).map_err(Malformed)?;
        let revision = match v.field(5) {
            Node::Absent | Node::Null => 0,
            Node::Number(n) => n.as_i64().unwrap_or(0),
            Node::Str(s) => s.trim().parse().map_err(|_| {
                Malformed(format!(
                    "invoice {id}: `{}` is not a number: {s:?}",
                    map.revision
                ))
            })?,
            other => {
                return Err(Malformed(format!(
                    "invoice {id}: `{}` is not a number: {}",
                    map.revision,
                    other.kind()
                )))
            }
        };
        let approved_at = match v.field(12) {
            Node::Str(s) if !s.is_empty() => Some(s.clone()),
            Node::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Ok(Invoice {
            document_number: v.field(1).text_or_empty(),
            client_reference_id: v.field(2).text_or_empty(),
            commercial_invoice_number: v.field(3).text_or_empty(),
            tax_period: v.field(4).text_or_empty(),
            revision,
            document_type: v.field(6).text_or_empty(),
            approval_status: Some(v.field(7).text_or_empty()).filter(|s| !s.is_empty()),
            djp_response_message: v.field(8).text_or_empty(),
            pdf_download_link: v.field(9).text_or_empty(),
            created_by: v.field(10).text_or_empty(),
            npwp: v.field(11).text_or_empty(),
            approved_at,
            updated_at: v.field(13).timestamp(),
            id,
        })
    }

    /// Whether a Bulk Fetch item can be diffed as it is (no Retrieve needed).
    pub fn is_complete(&self) -> bool {
        self.approval_status.is_some() && self.updated_at.is_some()
    }

    /// What it lacks for the diff: (no approval status, no `updatedAt`).
    pub fn gap(&self) -> (bool, bool) {
        (self.approval_status.is_none(), self.updated_at.is_none())
    }
}

/// What pollhook keeps per invoice: the version that decides whether an approval is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceState {
    pub status: String,
    pub revision: i64,
    pub document_type: String,
    pub updated_at: Millis,
}

impl InvoiceState {
    /// `[updated_at i64 BE][revision i64 BE][type len u8][type][status]`.
    pub fn encode(&self) -> Vec<u8> {
        let t = self.document_type.as_bytes();
        let t = &t[..t.len().min(255)];
        let mut out = Vec::with_capacity(17 + t.len() + self.status.len());
        out.extend_from_slice(&self.updated_at.to_be_bytes());
        out.extend_from_slice(&self.revision.to_be_bytes());
        out.push(t.len() as u8);
        out.extend_from_slice(t);
        out.extend_from_slice(self.status.as_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Option<InvoiceState> {
        let updated_at = i64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
        let revision = i64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        let tl = *b.get(16)? as usize;
        let document_type = String::from_utf8(b.get(17..17 + tl)?.to_vec()).ok()?;
        let status = String::from_utf8(b.get(17 + tl..)?.to_vec()).ok()?;
        Some(InvoiceState {
            status,
            revision,
            document_type,
            updated_at,
        })
    }
}

/// What pollhook keeps per invoice: its last version, and — when even Retrieve could not
/// complete it — that this version was unreadable under this map, so that it costs no further
/// Retrieve until it changes or `[accounts.api]` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceRecord {
    pub state: Option<InvoiceState>,
    pub unreadable: Option<Unreadable>,
}

/// A version of an invoice Retrieve could not complete (no approval status or `updatedAt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable {
    /// [`ApiMap::fingerprint`] of the map it was read with.
    pub map: [u8; 8],
    /// Its `updatedAt` as Bulk Fetch listed it.
    pub version: Millis,
}

impl Unreadable {
    /// Whether it stands for this listing, read with this map.
    pub fn covers(&self, map: [u8; 8], listed: Option<Millis>) -> bool {
        self.map == map && Some(self.version) == listed
    }
}

/// The tag of a record carrying [`Unreadable`]. A plain [`InvoiceState`] starts with its
/// `updated_at` (i64 BE): these bytes would be a date some 1.5 million years BC.
const UNREADABLE_TAG: [u8; 3] = [0xFF, b'I', 1];

impl InvoiceRecord {
    /// A plain [`InvoiceState`] (the layout of every record before), or
    /// `[tag 3][map 8][version i64 BE][InvoiceState, if any]`.
    pub fn encode(&self) -> Vec<u8> {
        let state = self.state.as_ref().map(InvoiceState::encode);
        match self.unreadable {
            None => state.unwrap_or_default(),
            Some(u) => {
                let mut out = UNREADABLE_TAG.to_vec();
                out.extend_from_slice(&u.map);
                out.extend_from_slice(&u.version.to_be_bytes());
                out.extend(state.unwrap_or_default());
                out
            }
        }
    }

    pub fn decode(b: &[u8]) -> Option<InvoiceRecord> {
        match b.strip_prefix(&UNREADABLE_TAG) {
            Some(rest) if rest.len() >= 16 => {
                let unreadable = Unreadable {
                    map: rest[..8].try_into().ok()?,
                    version: i64::from_be_bytes(rest[8..16].try_into().ok()?),
                };
                let state = match &rest[16..] {
                    [] => None,
                    s => Some(InvoiceState::decode(s)?),
                };
                Some(InvoiceRecord {
                    state,
                    unreadable: Some(unreadable),
                })
            }
            _ => Some(InvoiceRecord {
                state: Some(InvoiceState::decode(b)?),
                unreadable: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_records_round_trip_and_read_the_old_layout() {
        let s = InvoiceState {
            status: "APPROVED".into(),
            revision: 1,
            document_type: "1".into(),
            updated_at: 1_700_000_000_123,
        };
        let u = Unreadable {
            map: [7; 8],
            version: 1_700_000_000_999,
        };
        for r in [
            InvoiceRecord {
                state: Some(s.clone()),
                unreadable: None,
            },
            InvoiceRecord {
                state: None,
                unreadable: Some(u),
            },
            InvoiceRecord {
                state: Some(s.clone()),
                unreadable: Some(u),
            },
        ] {
            assert_eq!(InvoiceRecord::decode(&r.encode()), Some(r));
        }
        assert_eq!(
            InvoiceRecord::decode(&s.encode()).unwrap().state,
            Some(s),
            "a record written before is a plain state"
        );
        assert!(u.covers([7; 8], Some(1_700_000_000_999)));
        assert!(!u.covers([8; 8], Some(1_700_000_000_999)), "another map");
        assert!(
            !u.covers([7; 8], Some(1_700_000_001_000)),
            "another version"
        );
        assert!(!u.covers([7; 8], None));
        assert_eq!(InvoiceRecord::decode(b"\xFFI\x01short"), None);
    }

    const INVOICE: &str = r#"{"id":"490e6ab5-3aa2-4e76-9569-c84aecc56c73","documentNumber":"001-19.00000005",
        "clientReferenceId":"FC8C2DA9A924EB81DBC695E8A587F","commercialInvoiceNumber":"INV/2019/I/0001-A",
        "taxPeriod":"2019/01","revision":0,"documentType":"1","approvalStatus":"APPROVED",
        "djpResponseMessage":"Approved Successfully","pdfDownloadLink":"","createdBy":"a@b.id",
        "npwp":"12.312.312.0-001.123","approvedAt":"2019-08-28T11:55:37.151Z","updatedAt":"2019-08-28T11:55:37.151Z","extra":1}"#;

    #[test]
    fn every_envelope_form_is_understood() {
        let ok = format!(
            r#"{{"success":{{"code":"00","message":"ok"}},"data":{{"content":[{INVOICE}],"page":1,"size":100,"totalPages":3,"totalElements":250}}}}"#
        );
        let p = page(ok.as_bytes(), &ApiMap::default()).unwrap();
        assert_eq!((p.page.items.len(), p.total_pages), (1, Some(3)));
        let odd =
            format!(r#"{{"success":{{}},"data":{{"content":[{INVOICE},0,{{"id":""}},[[[]]]]}}}}"#);
        let p = page(odd.as_bytes(), &ApiMap::default()).unwrap();
        assert_eq!(
            (p.page.items.len(), p.page.unusable.count, p.page.listed),
            (1, 3, 4)
        );
        let one = format!(r#"{{"success":{{}},"data":{INVOICE}}}"#);
        let r = retrieved(one.as_bytes(), &ApiMap::default()).unwrap();
        assert_eq!(r.invoice.revision, 0);
        assert!(!r.presence.drifted());
        assert!(retrieved(br#"{"success":{},"data":null}"#, &ApiMap::default()).is_err());
        assert_eq!(
            error_text(br#"{"error":{"code":"10","message":"Invoice not found","errorId":"e1"}}"#),
            "10 Invoice not found (errorId e1)"
        );
        assert_eq!(
            error_text(br#"{"errors":[{"code":"11","message":"a"},{"code":"11","message":"b"}]}"#),
            "11 a; 11 b"
        );
        assert_eq!(
            error_text(br#"{"message":"Invalid signature"}"#),
            "Invalid signature"
        );
        assert!(retrieved(
            br#"{"error":{"code":"90","message":"x"}}"#,
            &ApiMap::default()
        )
        .unwrap_err()
        .0
        .contains("an error envelope with a success status: 90 x"));
        assert!(
            page(br#"{"success":{},"data":{"items":[]}}"#, &ApiMap::default())
                .unwrap_err()
                .0
                .contains("data.content")
        );
        assert!(page(b"<html>502</html>", &ApiMap::default())
            .unwrap_err()
            .0
            .contains("HTML"));
    }

    #[test]
    fn an_invoice_reads_through_the_map() {
        let v = INVOICE.as_bytes();
        let inv = Invoice::parse(v, &ApiMap::default()).unwrap();
        assert_eq!(inv.approval_status.as_deref(), Some("APPROVED"));
        assert_eq!(inv.approved_at.as_deref(), Some("2019-08-28T11:55:37.151Z"));
        assert!(inv.is_complete());
        let renamed = ApiMap {
            approval_status: "status".into(),
            ..ApiMap::default()
        };
        let inv = Invoice::parse(v, &renamed).unwrap();
        assert_eq!(
            inv.approval_status, None,
            "renamed field absent: Retrieve needed"
        );
        assert!(!inv.is_complete());
        let bad = br#"{"id":"x","revision":"two"}"#;
        assert!(Invoice::parse(bad, &ApiMap::default()).is_err());
        assert!(Invoice::parse(br#"{"id":"x","revision":[1]}"#, &ApiMap::default()).is_err());
        let s = br#"{"id":"x","revision":"2","documentType":5}"#;
        let inv = Invoice::parse(s, &ApiMap::default()).unwrap();
        assert_eq!(
            (inv.revision, inv.document_type.as_str(), inv.npwp.as_str()),
            (2, "5", "")
        );
    }

    #[test]
    fn invoice_state_round_trips() {
        let s = InvoiceState {
            status: "APPROVAL_IN_PROGRESS".into(),
            revision: 3,
            document_type: "5".into(),
            updated_at: 1_700_000_000_123,
        };
        assert_eq!(InvoiceState::decode(&s.encode()), Some(s));
        assert_eq!(InvoiceState::decode(b"short"), None);
    }
}
