//! The ONE place that names OnlinePajak's assumed API: paths, query parameters, envelope and
//! invoice field names, status values, and the document-type names of the webhook.
//!
//! OnlinePajak publishes only part of its API (see shared/providers/onlinepajak.md): the Bulk
//! Fetch and Retrieve shapes below are this project's working contract. Every entry can be
//! overridden from the config (`[accounts.api]`, read as plain [`ApiOverrides`]), so a run
//! against the real sandbox can correct a path or a field name without touching the client or
//! the diff. The defaults ARE the assumptions; `Default` is the table, and
//! [`ApiMap::with_overrides`] lays the config's overrides over it.

use crate::config::ApiOverrides;
use crate::providers::contract::{Class, Field, Need};
use std::collections::BTreeMap;

/// Paths, parameters and field names of the OnlinePajak invoice API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiMap {
    /// Bulk Fetch of sale invoices, relative to `base_url`.
    pub list_path: String,
    /// Retrieve one sale invoice; `{id}` is replaced by the invoice id.
    pub retrieve_path: String,
    pub page_param: String,
    pub size_param: String,
    pub updated_from_param: String,
    pub sort_param: String,
    /// Sent as the sort parameter: oldest change first.
    pub sort_value: String,
    /// The number of the first page (1-based, as assumed).
    pub first_page: u32,
    /// Under the envelope's `data`: the array of invoices.
    pub content: String,
    pub total_pages: String,
    // Invoice fields.
    pub id: String,
    pub document_number: String,
    pub client_reference_id: String,
    pub commercial_invoice_number: String,
    pub tax_period: String,
    pub revision: String,
    pub document_type: String,
    pub approval_status: String,
    pub djp_response_message: String,
    pub pdf_download_link: String,
    pub created_by: String,
    pub npwp: String,
    pub approved_at: String,
    pub updated_at: String,
    /// `approvalStatus` values that complete an approval.
    pub approved_value: String,
    pub rejected_value: String,
    /// `documentType` -> the webhook's `type`; other values pass through as given.
    pub types: BTreeMap<String, String>,
}

impl Default for ApiMap {
    fn default() -> Self {
        let s = |v: &str| v.to_string();
        ApiMap {
            list_path: s("/invoices/sale"),
            retrieve_path: s("/invoices/sale/{id}"),
            page_param: s("page"),
            size_param: s("size"),
            updated_from_param: s("updatedFrom"),
            sort_param: s("sort"),
            sort_value: s("updatedAt,asc"),
            first_page: 1,
            content: s("content"),
            total_pages: s("totalPages"),
            id: s("id"),
            document_number: s("documentNumber"),
            client_reference_id: s("clientReferenceId"),
            commercial_invoice_number: s("commercialInvoiceNumber"),
            tax_period: s("taxPeriod"),
            revision: s("revision"),
            document_type: s("documentType"),
            approval_status: s("approvalStatus"),
            djp_response_message: s("djpResponseMessage"),
            pdf_download_link: s("pdfDownloadLink"),
            created_by: s("createdBy"),
            npwp: s("npwp"),
            approved_at: s("approvedAt"),
            updated_at: s("updatedAt"),
            approved_value: s("APPROVED"),
            rejected_value: s("REJECTED"),
            types: [("1", "normal"), ("5", "replacement"), ("4", "cancellation")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl ApiMap {
    /// The assumed table with the config's overrides applied: each override replaces the
    /// entry it names (a `types` table replaces the whole mapping).
    pub fn with_overrides(o: &ApiOverrides) -> ApiMap {
        // Destructured whole: an override added to the config without being applied here
        // does not compile.
        let ApiOverrides {
            list_path,
            retrieve_path,
            page_param,
            size_param,
            updated_from_param,
            sort_param,
            sort_value,
            first_page,
            content,
            total_pages,
            id,
            document_number,
            client_reference_id,
            commercial_invoice_number,
            tax_period,
            revision,
            document_type,
            approval_status,
            djp_response_message,
            pdf_download_link,
            created_by,
            npwp,
            approved_at,
            updated_at,
            approved_value,
            rejected_value,
            types,
        } = o.clone();
        let d = ApiMap::default();
        ApiMap {
            list_path: list_path.unwrap_or(d.list_path),
            retrieve_path: retrieve_path.unwrap_or(d.retrieve_path),
            page_param: page_param.unwrap_or(d.page_param),
            size_param: size_param.unwrap_or(d.size_param),
            updated_from_param: updated_from_param.unwrap_or(d.updated_from_param),
            sort_param: sort_param.unwrap_or(d.sort_param),
            sort_value: sort_value.unwrap_or(d.sort_value),
            first_page: first_page.unwrap_or(d.first_page),
            content: content.unwrap_or(d.content),
            total_pages: total_pages.unwrap_or(d.total_pages),
            id: id.unwrap_or(d.id),
            document_number: document_number.unwrap_or(d.document_number),
            client_reference_id: client_reference_id.unwrap_or(d.client_reference_id),
            commercial_invoice_number: commercial_invoice_number
                .unwrap_or(d.commercial_invoice_number),
            tax_period: tax_period.unwrap_or(d.tax_period),
            revision: revision.unwrap_or(d.revision),
            document_type: document_type.unwrap_or(d.document_type),
            approval_status: approval_status.unwrap_or(d.approval_status),
            djp_response_message: djp_response_message.unwrap_or(d.djp_response_message),
            pdf_download_link: pdf_download_link.unwrap_or(d.pdf_download_link),
            created_by: created_by.unwrap_or(d.created_by),
            npwp: npwp.unwrap_or(d.npwp),
            approved_at: approved_at.unwrap_or(d.approved_at),
            updated_at: updated_at.unwrap_or(d.updated_at),
            approved_value: approved_value.unwrap_or(d.approved_value),
            rejected_value: rejected_value.unwrap_or(d.rejected_value),
            types: types.unwrap_or(d.types),
        }
    }

    /// The invoice fields read through this map, in the order the parser keeps them
    /// (`model::invoice_shape`), each with its `[accounts.api]` key and the values it knows.
    pub fn fields(&self) -> Vec<Field> {
        use Class::{Id, Number, Text, Timestamp};
        use Need::{Required, Useful};
        let statuses = [
            "DRAFT",
            "APPROVAL_IN_PROGRESS",
            &self.approved_value,
            &self.rejected_value,
        ];
        let mut types: Vec<String> = self.types.keys().cloned().collect();
        if !types.iter().any(|t| t == "2") {
            // A credit note: passed through as "2" (documented).
            types.push("2".into());
        }
        let choice = |known: Vec<String>| Class::Choice {
            known,
            fold_case: false,
        };
        let f =
            |name: &str, key, class, need, role| Field::new(name, class, need, role).setting(key);
        vec![
            f(
                &self.id,
                "id",
                Id,
                Required,
                "the invoice's id: the webhook's reference_number",
            ),
            f(
                &self.document_number,
                "document_number",
                Text,
                Useful,
                "event_data.document_number (approved invoices)",
            ),
            f(
                &self.client_reference_id,
                "client_reference_id",
                Id,
                Useful,
                "event_data.client_reference_id",
            ),
            f(
                &self.commercial_invoice_number,
                "commercial_invoice_number",
                Text,
                Useful,
                "event_data.commercial_invoice_number",
            ),
            f(
                &self.tax_period,
                "tax_period",
                Text,
                Useful,
                "event_data.tax_period",
            ),
            f(
                &self.revision,
                "revision",
                Number,
                Useful,
                "the revision: a replacement approved again is a new event",
            ),
            f(
                &self.document_type,
                "document_type",
                choice(types),
                Useful,
                "event_data.type (through api.types)",
            ),
            f(
                &self.approval_status,
                "approval_status",
                choice(statuses.map(String::from).to_vec()),
                Required,
                "decides the event, with approved_value and rejected_value",
            ),
            f(
                &self.djp_response_message,
                "djp_response_message",
                Text,
                Useful,
                "event_data.djp_response_message (answered invoices)",
            ),
            f(
                &self.pdf_download_link,
                "pdf_download_link",
                Text,
                Useful,
                "event_data.pdf_download_link (approved invoices)",
            ),
            f(
                &self.created_by,
                "created_by",
                Text,
                Useful,
                "the payload's user_email",
            ),
            f(
                &self.npwp,
                "npwp",
                Text,
                Useful,
                "the payload's npwp (else the configured one)",
            ),
            f(
                &self.approved_at,
                "approved_at",
                Timestamp,
                Useful,
                "the payload's event_date (else when pollhook saw it)",
            ),
            f(
                &self.updated_at,
                "updated_at",
                Timestamp,
                Required,
                "the invoice's version, and the walk's keyset",
            ),
        ]
    }

    /// Identifies the names this map reads (any override changes it): an invoice remembered as
    /// unreadable under one map is read again under another.
    pub fn fingerprint(&self) -> [u8; 8] {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(format!("{self:?}").as_bytes());
        d[..8].try_into().expect("8 bytes")
    }

    /// The webhook's `type` for a `documentType`.
    pub fn type_name<'a>(&'a self, document_type: &'a str) -> &'a str {
        self.types
            .get(document_type)
            .map(String::as_str)
            .unwrap_or(document_type)
    }

    /// Whether `status` completes an approval, and how: `Some(true)` approved, `Some(false)`
    /// rejected, `None` not (yet) answered by DJP.
    pub fn outcome(&self, status: &str) -> Option<bool> {
        if status == self.approved_value {
            Some(true)
        } else if status == self.rejected_value {
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let o: ApiOverrides = toml::from_str("list_path = \"/sales\"\napproval_status = \"status\"\n[types]\n\"2\" = \"credit_note\"\n").unwrap();
        let m = ApiMap::with_overrides(&o);
        assert_eq!(m.list_path, "/sales");
        assert_eq!(m.approval_status, "status");
        assert_eq!(m.updated_at, "updatedAt");
        assert_eq!(m.type_name("2"), "credit_note");
        assert_eq!(
            m.type_name("1"),
            "1",
            "a types table replaces the whole mapping"
        );
        assert!(toml::from_str::<ApiOverrides>("list_pth = \"/x\"").is_err());
        assert_eq!(
            ApiMap::with_overrides(&ApiOverrides::default()),
            ApiMap::default()
        );
    }

    #[test]
    fn the_assumed_contract() {
        let m = ApiMap::default();
        assert_eq!(m.type_name("1"), "normal");
        assert_eq!(m.type_name("5"), "replacement");
        assert_eq!(m.type_name("4"), "cancellation");
        assert_eq!(m.type_name("2"), "2");
        assert_eq!(m.outcome("APPROVED"), Some(true));
        assert_eq!(m.outcome("REJECTED"), Some(false));
        assert_eq!(m.outcome("APPROVAL_IN_PROGRESS"), None);
    }
}
