//! OnlinePajak answers and invoices, read through the [`ApiMap`], and the compact record kept
//! per invoice.
//!
//! The envelope has four known forms: success `{"success": {code, message}, "data": ...}`,
//! one error `{"error": {code, message, errorId}}`, several `{"errors": [{code, message}]}`,
//! and the gateway's `{"message": "Unauthorized" | "Invalid signature"}`. Parsing never panics;
//! a shape that fits none of them is [`Malformed`], with what was expected.

use super::api::ApiMap;
use crate::providers::wire::{json, timestamp, Malformed};
use crate::time::Millis;
use serde_json::Value;

/// What an error envelope says, for messages.
pub fn error_text(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code_msg = |e: &Value| {
        let code = e
            .get("code")
            .map(|c| c.to_string().trim_matches('"').to_string())
            .unwrap_or_default();
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
        let id = e
            .get("errorId")
            .and_then(Value::as_str)
            .map(|i| format!(" (errorId {i})"))
            .unwrap_or_default();
        format!("{code} {msg}{id}").trim().to_string()
    };
    if let Some(e) = v.get("error") {
        return code_msg(e);
    }
    if let Some(Value::Array(errs)) = v.get("errors") {
        return errs.iter().map(code_msg).collect::<Vec<_>>().join("; ");
    }
    match v.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => "(no error message)".to_string(),
    }
}

/// The `data` of a success envelope.
pub fn success_data(body: &[u8]) -> Result<Value, Malformed> {
    let mut v = json(body)?;
    if v.get("error").is_some() || v.get("errors").is_some() {
        return Err(Malformed(format!(
            "an error envelope with a success status: {}",
            error_text(body)
        )));
    }
    match v.get_mut("data").map(Value::take) {
        Some(d) if !d.is_null() => Ok(d),
        _ => Err(Malformed(
            "expected {\"success\": {...}, \"data\": ...}".into(),
        )),
    }
}

/// One page of Bulk Fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    pub total_pages: Option<u64>,
}

pub fn page(body: &[u8], map: &ApiMap) -> Result<Page, Malformed> {
    let data = success_data(body)?;
    let items = match data.get(&map.content) {
        Some(Value::Array(a)) => a.clone(),
        _ => {
            return Err(Malformed(format!(
                "expected data.{} to be an array of invoices",
                map.content
            )))
        }
    };
    let total_pages = data.get(&map.total_pages).and_then(|t| match t {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Ok(Page { items, total_pages })
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

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

impl Invoice {
    pub fn from_value(v: &Value, map: &ApiMap) -> Result<Invoice, Malformed> {
        if !v.is_object() {
            return Err(Malformed("expected an invoice object".into()));
        }
        let id = text(v, &map.id);
        if id.is_empty() {
            return Err(Malformed(format!("an invoice without `{}`", map.id)));
        }
        let revision = match v.get(&map.revision) {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| {
                Malformed(format!(
                    "invoice {id}: `{}` is not a number: {s:?}",
                    map.revision
                ))
            })?,
            Some(other) => {
                return Err(Malformed(format!(
                    "invoice {id}: `{}` is not a number: {other}",
                    map.revision
                )))
            }
        };
        let approved_at = match v.get(&map.approved_at) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Ok(Invoice {
            document_number: text(v, &map.document_number),
            client_reference_id: text(v, &map.client_reference_id),
            commercial_invoice_number: text(v, &map.commercial_invoice_number),
            tax_period: text(v, &map.tax_period),
            revision,
            document_type: text(v, &map.document_type),
            approval_status: Some(text(v, &map.approval_status)).filter(|s| !s.is_empty()),
            djp_response_message: text(v, &map.djp_response_message),
            pdf_download_link: text(v, &map.pdf_download_link),
            created_by: text(v, &map.created_by),
            npwp: text(v, &map.npwp),
            approved_at,
            updated_at: v.get(&map.updated_at).and_then(timestamp),
            id,
        })
    }

    /// Whether a Bulk Fetch item can be diffed as it is (no Retrieve needed).
    pub fn is_complete(&self) -> bool {
        self.approval_status.is_some() && self.updated_at.is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((p.items.len(), p.total_pages), (1, Some(3)));
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
        assert!(success_data(br#"{"error":{"code":"90","message":"x"}}"#)
            .unwrap_err()
            .0
            .contains("error envelope"));
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
        let v: Value = serde_json::from_str(INVOICE).unwrap();
        let inv = Invoice::from_value(&v, &ApiMap::default()).unwrap();
        assert_eq!(inv.approval_status.as_deref(), Some("APPROVED"));
        assert_eq!(inv.approved_at.as_deref(), Some("2019-08-28T11:55:37.151Z"));
        assert!(inv.is_complete());
        let renamed = ApiMap {
            approval_status: "status".into(),
            ..ApiMap::default()
        };
        let inv = Invoice::from_value(&v, &renamed).unwrap();
        assert_eq!(
            inv.approval_status, None,
            "renamed field absent: Retrieve needed"
        );
        assert!(!inv.is_complete());
        let bad: Value = serde_json::from_str(r#"{"id":"x","revision":"two"}"#).unwrap();
        assert!(Invoice::from_value(&bad, &ApiMap::default()).is_err());
        let s: Value =
            serde_json::from_str(r#"{"id":"x","revision":"2","documentType":5}"#).unwrap();
        let inv = Invoice::from_value(&s, &ApiMap::default()).unwrap();
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
