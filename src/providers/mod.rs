//! Providers: one module per e-invoicing API, behind one trait.
//!
//! A provider owns everything specific to its API — auth, fetching what changed, the pure diff
//! that turns observations into webhook events, and the byte layout of its records — and
//! commits through [`Store::commit`]. The engine only schedules cycles and reports them.
//! Adding a provider = a new module here, an arm in [`build`] and in [`record_check`], its
//! keys (with their allow-list) in `config`, and its [`Provider::probe`]. A provider's module
//! uses only what is shared here and in [`wire`], [`census`], [`contract`] and [`probe`], never
//! another provider's (`tests/layers.rs`).

pub mod caminvoice;
pub mod census;
pub mod contract;
pub mod onlinepajak;
pub mod probe;
pub mod wire;

use crate::config::{Account, ProviderSettings, ResolveError, Start};
use crate::metrics::AccountMetrics;
use crate::redact::Redacted;
use crate::shard::Shard;
use crate::shutdown::Stop;
use crate::store::{Store, StoreError};
use crate::time::Millis;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one cycle may use.
#[derive(Clone)]
pub struct CycleContext {
    pub store: Arc<Store>,
    /// Also walk the full document list (resync_schedule, or a first cycle).
    pub resync: bool,
    pub start: Start,
    /// Shared request counter for this cycle.
    pub requests: Arc<RequestCount>,
    /// Which members this daemon polls; a provider skips the others ([`Shard::owns`]).
    pub shard: Shard,
}

pub use crate::http::RequestCount;

/// The result of one cycle of one account. A cycle never returns early on one member's error:
/// it reports it and goes on with the others.
#[derive(Debug, Default, Clone)]
pub struct CycleReport {
    /// Members (or companies) this cycle tried to poll (revoked ones are skipped).
    pub units: usize,
    /// Documents the poll showed changed: each needed one detail call.
    pub changed: u64,
    /// Documents a list walk (resync) showed changed.
    pub resynced: u64,
    /// The fewest requests the work of this cycle could have cost (auth and resync walks
    /// aside): CamInvoice one poll per member plus one detail per changed document;
    /// OnlinePajak one Bulk Fetch page per page of changed invoices, plus needed Retrieves.
    pub floor: u64,
    /// The requests this cycle actually sent of the kinds the floor counts.
    pub core_requests: u64,
    /// Events committed to the outbox.
    pub events: u64,
    /// Events dropped because their id was already in the outbox.
    pub duplicates: u64,
    /// One entry per unit that failed, saying what to do (redacted: it is logged and printed).
    pub failures: Vec<UnitFailure>,
    /// Requests sent, by endpoint.
    pub requests: BTreeMap<&'static str, u64>,
}

impl CycleReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One unit's failure in a cycle (or the account's, when no unit is at fault): the unit, the
/// kind of failure, and the line for the operator. Displays as `unit: text`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{text}", unit.as_deref().map(|u| format!("{u}: ")).unwrap_or_default())]
pub struct UnitFailure {
    /// `member KHUID…`, `npwp …`; `None` for the account as a whole.
    pub unit: Option<String>,
    pub kind: FailureKind,
    /// What happened and what to do, masked.
    pub text: Redacted,
}

impl UnitFailure {
    pub fn new(unit: Option<String>, kind: FailureKind, text: impl Into<Redacted>) -> UnitFailure {
        UnitFailure {
            unit,
            kind,
            text: text.into(),
        }
    }
}

/// What kind of failure stopped a unit's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider: a request that failed for good, an unusable answer, a refused
    /// credential. Nothing is lost: the next cycle tries again from the cursor.
    Provider,
    /// The state store: a record unreadable, a commit failed (a full disk).
    Store,
    /// The daemon's shutdown cut the work short (nothing more was sent): not a fault.
    Interrupted,
    /// A bug in pollhook.
    Bug,
}

/// What `status` shows for one member/company.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UnitStatus {
    pub unit: String,
    pub state: String,
    /// RFC 3339 in JSON (`GET /status`), as the CLI prints it.
    #[serde(default, with = "crate::time::rfc3339")]
    pub last_success: Option<Millis>,
    #[serde(default, with = "crate::time::rfc3339")]
    pub cursor: Option<Millis>,
    pub documents: usize,
    pub last_error: Option<Redacted>,
    /// Contract drift seen in this unit's answers (`contract::status_lines`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One configured account of some provider.
pub trait Provider: Send + Sync + 'static {
    /// `"caminvoice"`, ...
    fn kind(&self) -> &'static str;
    /// The account name.
    fn account(&self) -> &str;
    /// Polls every unit once, commits state and events, and reports.
    fn cycle(self: Arc<Self>, ctx: CycleContext) -> BoxFuture<'static, CycleReport>;
    /// Per-unit progress as stored, for the units `shard` owns.
    fn status(&self, store: &Store, shard: Shard) -> Result<Vec<UnitStatus>, StoreError>;
    /// `pollhook probe`: read-only calls that check this account's live answers against what
    /// pollhook reads (its own `probe.rs`). Never touches the store.
    fn probe(self: Arc<Self>) -> BoxFuture<'static, probe::ProbeReport> {
        Box::pin(async move {
            let mut r = probe::ProbeReport::new(self.account(), self.kind(), "");
            r.problem(format!("no probe for provider {}", self.kind()));
            r.finish(0);
            r
        })
    }
}

/// Why an account's provider client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A secret of the account (client secret, refresh token, API token) cannot be read.
    #[error("account {account}: {source}")]
    Secret {
        account: String,
        source: ResolveError,
    },
}

/// Builds the provider client for `account`; its HTTP attempts and the anomalies it meets are
/// counted in `metrics`, and it sends nothing once `stop` is set. Fails when a secret cannot
/// be resolved.
pub fn build(
    account: &Account,
    metrics: Arc<AccountMetrics>,
    stop: &Stop,
) -> Result<Arc<dyn Provider>, BuildError> {
    let http = crate::http::Http::new(&account.http)
        .with_observer(Arc::clone(&metrics) as Arc<dyn crate::http::Observer>)
        .with_stop(stop.clone());
    let secret = |source| BuildError::Secret {
        account: account.name.clone(),
        source,
    };
    match &account.provider {
        ProviderSettings::CamInvoice(s) => Ok(Arc::new(
            caminvoice::CamInvoice::new(&account.name, s, &account.http, http, metrics)
                .map_err(secret)?,
        )),
        ProviderSettings::OnlinePajak(s) => Ok(Arc::new(
            onlinepajak::OnlinePajak::new(&account.name, s, http, metrics).map_err(secret)?,
        )),
    }
}

/// For `store verify`: checks that a record in the store decodes the way its account's provider
/// writes it (`Ok(false)`: the config has no such account, the record is not judged).
pub fn record_check(accounts: &[Account]) -> crate::store::verify::RecordCheck {
    use crate::store::verify::RecordTree;
    let kinds: BTreeMap<String, bool> = accounts
        .iter()
        .map(|a| {
            let caminvoice = matches!(a.provider, ProviderSettings::CamInvoice(_));
            (a.name.clone(), caminvoice)
        })
        .collect();
    Arc::new(move |account: &str, tree: RecordTree, value: &[u8]| {
        let Some(&caminvoice) = kinds.get(account) else {
            return Ok(false);
        };
        let ok = match (tree, caminvoice) {
            (RecordTree::State, true) => caminvoice::model::DocState::decode(value).is_some(),
            (RecordTree::State, false) => {
                onlinepajak::model::InvoiceRecord::decode(value).is_some()
            }
            (RecordTree::Cursors, true) => {
                serde_json::from_slice::<caminvoice::model::MemberRecord>(value).is_ok()
            }
            (RecordTree::Cursors, false) => {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value).is_ok()
            }
            (RecordTree::Connections, true) => {
                serde_json::from_slice::<caminvoice::model::Connection>(value).is_ok()
            }
            (RecordTree::Connections, false) => false,
        };
        if ok {
            Ok(true)
        } else {
            Err(format!(
                "not a {} record of this account's provider",
                match tree {
                    RecordTree::State => "document",
                    RecordTree::Cursors => "progress",
                    RecordTree::Connections => "connection",
                }
            ))
        }
    })
}
