//! `[accounts.api]` of an OnlinePajak account: the operator's overrides of the assumed API
//! names, as written — plain data. The assumptions themselves (the defaults) and the map the
//! client reads through are the provider's (`providers::onlinepajak::api::ApiMap`), which
//! applies these on top of its table. A key not listed here is a located config error.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Each field overrides the assumed entry of the same name; `None` keeps the assumption.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiOverrides {
    pub list_path: Option<String>,
    pub retrieve_path: Option<String>,
    pub page_param: Option<String>,
    pub size_param: Option<String>,
    pub updated_from_param: Option<String>,
    pub sort_param: Option<String>,
    pub sort_value: Option<String>,
    pub first_page: Option<u32>,
    pub content: Option<String>,
    pub total_pages: Option<String>,
    pub id: Option<String>,
    pub document_number: Option<String>,
    pub client_reference_id: Option<String>,
    pub commercial_invoice_number: Option<String>,
    pub tax_period: Option<String>,
    pub revision: Option<String>,
    pub document_type: Option<String>,
    pub approval_status: Option<String>,
    pub djp_response_message: Option<String>,
    pub pdf_download_link: Option<String>,
    pub created_by: Option<String>,
    pub npwp: Option<String>,
    pub approved_at: Option<String>,
    pub updated_at: Option<String>,
    pub approved_value: Option<String>,
    pub rejected_value: Option<String>,
    /// Replaces the whole `documentType` -> webhook `type` mapping.
    pub types: Option<BTreeMap<String, String>>,
}

impl ApiOverrides {
    /// Whether `[accounts.api]` overrides anything.
    pub fn is_empty(&self) -> bool {
        *self == ApiOverrides::default()
    }
}
