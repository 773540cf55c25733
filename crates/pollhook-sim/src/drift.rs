//! Contract drift: answers that are well formed and complete but do not match the contract
//! pollhook was written against — a field renamed, values in another case or language, items
//! in another envelope. The real provider may differ from the documentation (CamInvoice) or from
//! this project's assumptions (OnlinePajak) in exactly these ways; `pollhook probe` must name
//! the field and the `[accounts.api]` line to try, and the daemon must say so once instead of
//! once per item.
//!
//! This module owns the [`Drift`] variants and how each rewrites an answer on its way out. Like
//! [`hostile`](super::hostile), it never touches the world or the journal: the webhooks the
//! provider would have sent are the same whatever the wire says.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::Simulator;

/// One way the wire drifts from the contract, switched with [`Simulator::set_drift`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Drift {
    /// The contract as documented (CamInvoice) and assumed (OnlinePajak).
    #[default]
    None,
    /// OnlinePajak invoices carry the approval status as `status` instead of `approvalStatus`
    /// (Bulk Fetch and Retrieve).
    OpStatusRenamed,
    /// OnlinePajak approval statuses in lower case: `approved`, `rejected`, `draft`,
    /// `approval_in_progress`.
    OpStatusLowerCase,
    /// OnlinePajak approval statuses in Indonesian: `DISETUJUI`, `DITOLAK`, `DRAF`, `DIPROSES`.
    OpStatusIndonesian,
    /// Bulk Fetch lists the invoices under `data.items` instead of `data.content`.
    OpContentRenamed,
    /// Retrieve wraps the invoice one level deeper: `{"success", "data": {"invoice": {...}}}`.
    OpRetrieveWrapped,
    /// CamInvoice poll items carry `updatedAt` instead of `updated_at`.
    CiUpdatedAtRenamed,
    /// CamInvoice statuses in lower case (`delivered`, `paid`), in details and list entries.
    CiStatusLowerCase,
    /// The CamInvoice poll answer in an undocumented envelope: `{"data": {"documents": [...]}}`.
    CiPollEnveloped,
}

impl Drift {
    /// Every variant but [`Drift::None`].
    pub const ALL: [Drift; 8] = [
        Drift::OpStatusRenamed,
        Drift::OpStatusLowerCase,
        Drift::OpStatusIndonesian,
        Drift::OpContentRenamed,
        Drift::OpRetrieveWrapped,
        Drift::CiUpdatedAtRenamed,
        Drift::CiStatusLowerCase,
        Drift::CiPollEnveloped,
    ];
}

impl Simulator {
    /// Switches the wire's drift from now on (the default: none).
    pub fn set_drift(&self, d: Drift) {
        self.with(|w| w.drift = d);
    }
}

/// Renames `from` to `to` in an object, keeping the key's position.
fn rename(v: Value, from: &str, to: &str) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| {
                    if k == from {
                        (to.to_string(), x)
                    } else {
                        (k, x)
                    }
                })
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

/// Rewrites the string value of `key` with `f`.
fn rewrite(mut v: Value, key: &str, f: impl Fn(&str) -> String) -> Value {
    if let Some(s) = v.get(key).and_then(Value::as_str).map(&f) {
        v[key] = Value::String(s);
    }
    v
}

fn indonesian(status: &str) -> String {
    match status {
        "APPROVED" => "DISETUJUI",
        "REJECTED" => "DITOLAK",
        "DRAFT" => "DRAF",
        "APPROVAL_IN_PROGRESS" => "DIPROSES",
        other => other,
    }
    .to_string()
}

/// One OnlinePajak INVOICE object, in Bulk Fetch and Retrieve alike.
pub(crate) fn op_invoice(d: Drift, v: Value) -> Value {
    match d {
        Drift::OpStatusRenamed => rename(v, "approvalStatus", "status"),
        Drift::OpStatusLowerCase => rewrite(v, "approvalStatus", str::to_lowercase),
        Drift::OpStatusIndonesian => rewrite(v, "approvalStatus", indonesian),
        _ => v,
    }
}

/// Bulk Fetch's `data`.
pub(crate) fn op_bulk(d: Drift, data: Value) -> Value {
    match d {
        Drift::OpContentRenamed => rename(data, "content", "items"),
        _ => data,
    }
}

/// Retrieve's `data` (the invoice).
pub(crate) fn op_retrieved(d: Drift, invoice: Value) -> Value {
    match d {
        Drift::OpRetrieveWrapped => json!({ "invoice": invoice }),
        _ => invoice,
    }
}

/// One CamInvoice poll item.
pub(crate) fn poll_item(d: Drift, item: Value) -> Value {
    match d {
        Drift::CiUpdatedAtRenamed => rename(item, "updated_at", "updatedAt"),
        _ => item,
    }
}

/// The CamInvoice poll answer, once shaped by its documented variant.
pub(crate) fn poll_body(d: Drift, body: Value) -> Value {
    match d {
        Drift::CiPollEnveloped => {
            let items = match body {
                Value::Object(mut o) => o.remove("documents").unwrap_or_default(),
                other => other,
            };
            json!({ "data": { "documents": items } })
        }
        _ => body,
    }
}

/// A CamInvoice document (Get Document Detail, a list entry).
pub(crate) fn document(d: Drift, doc: Value) -> Value {
    match d {
        Drift::CiStatusLowerCase => rewrite(doc, "status", str::to_lowercase),
        _ => doc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_rewrites_only_its_answer() {
        let inv = json!({"id": "a", "approvalStatus": "APPROVED", "updatedAt": "t"});
        let renamed = op_invoice(Drift::OpStatusRenamed, inv.clone());
        assert_eq!(
            renamed.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["id", "status", "updatedAt"],
            "the key keeps its place"
        );
        assert_eq!(
            op_invoice(Drift::OpStatusLowerCase, inv.clone())["approvalStatus"],
            "approved"
        );
        assert_eq!(
            op_invoice(Drift::OpStatusIndonesian, inv.clone())["approvalStatus"],
            "DISETUJUI"
        );
        assert_eq!(op_invoice(Drift::CiStatusLowerCase, inv.clone()), inv);
        assert_eq!(
            op_bulk(Drift::OpContentRenamed, json!({"content": [], "page": 1}))["items"],
            json!([])
        );
        assert_eq!(
            op_retrieved(Drift::OpRetrieveWrapped, inv.clone())["invoice"],
            inv
        );
        let body = json!([{"document_id": "d", "updated_at": "t"}]);
        assert_eq!(
            poll_body(Drift::CiPollEnveloped, body.clone())["data"]["documents"],
            body
        );
        assert_eq!(
            poll_body(Drift::CiPollEnveloped, json!({"documents": body.clone()}))["data"]
                ["documents"],
            body
        );
        assert_eq!(
            poll_item(Drift::CiUpdatedAtRenamed, body[0].clone())["updatedAt"],
            "t"
        );
        assert_eq!(
            document(Drift::CiStatusLowerCase, json!({"status": "PAID"}))["status"],
            "paid"
        );
        for d in Drift::ALL {
            assert_eq!(op_invoice(Drift::None, inv.clone()), inv, "{d:?}");
        }
    }
}
