//! The ONE place that names OnlinePajak's assumed API: paths, query parameters, envelope and
//! invoice field names, status values, and the document-type names of the webhook.
//!
//! OnlinePajak publishes only part of its API (see shared/providers/onlinepajak.md): the Bulk
//! Fetch and Retrieve shapes below are this project's working contract. Every entry can be
//! overridden from the config (`[accounts.api]`), so a run against the real sandbox can correct
//! a path or a field name without touching the client or the diff. The defaults ARE the
//! assumptions; `Default` is the table.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Paths, parameters and field names of the OnlinePajak invoice API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
        let m: ApiMap = toml::from_str("list_path = \"/sales\"\napproval_status = \"status\"\n[types]\n\"2\" = \"credit_note\"\n").unwrap();
        assert_eq!(m.list_path, "/sales");
        assert_eq!(m.approval_status, "status");
        assert_eq!(m.updated_at, "updatedAt");
        assert_eq!(m.type_name("2"), "credit_note");
        assert_eq!(
            m.type_name("1"),
            "1",
            "a types table replaces the whole mapping"
        );
        assert!(toml::from_str::<ApiMap>("list_pth = \"/x\"").is_err());
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
