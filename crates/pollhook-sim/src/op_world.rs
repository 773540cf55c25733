//! The simulated OnlinePajak side: companies, VAT invoices, the per-token rate limiter, and the
//! `PPN_INVOICE_APPROVED` entries of the ground-truth journal.
//!
//! This module owns every piece of OnlinePajak state and the rules that keep it consistent:
//! an invoice's `updatedAt` strictly increases on every change and change stamps never go back
//! (a server's clock); a new revision starts its DJP fields over; a DJP answer journals exactly
//! one webhook, built from the invoice as it is at that moment (the shape in
//! `providers/onlinepajak.md`). Its methods are pure state transitions plus JSON building; it
//! never does HTTP and never sleeps. It draws only from its own RNG, derived from the seed, and
//! never from the CamInvoice one: adding OnlinePajak leaves the CamInvoice stream as it was.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::floor::Pending;
use super::world::{hex, uuid, World};
use super::{fmt_ts, SimCompany, SimConfig};

/// Calls one token may make per [`RATE_WINDOW`] (the published limit: 100 per minute).
pub const RATE_LIMIT: usize = 100;

/// The rolling window of the rate limit.
pub const RATE_WINDOW: TimeDelta = TimeDelta::seconds(60);

/// The one event OnlinePajak publishes.
pub const EVENT_NAME: &str = "PPN_INVOICE_APPROVED";

/// What DJP says when it approves.
pub const APPROVED_MESSAGE: &str = "Approved Successfully";

/// What DJP says when it rejects (plausible e-Faktur refusals).
const REJECTIONS: &[&str] = &[
    "NPWP pembeli tidak valid",
    "NIK pembeli tidak terdaftar",
    "Nomor seri faktur pajak sudah digunakan",
    "Tanggal faktur melewati batas waktu pengkreditan",
    "Masa pajak sudah dilaporkan",
];

/// An invoice's DJP approval status, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Created, not yet sent to DJP.
    Draft,
    /// Sent to DJP; the answer comes asynchronously.
    InProgress,
    /// DJP approved the current revision.
    Approved,
    /// DJP rejected the current revision.
    Rejected,
}

impl Approval {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Draft => "DRAFT",
            Approval::InProgress => "APPROVAL_IN_PROGRESS",
            Approval::Approved => "APPROVED",
            Approval::Rejected => "REJECTED",
        }
    }
}

/// `taxSummary.ppn.documentType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpDocType {
    /// `1`: a normal tax invoice.
    Normal,
    /// `2`: a credit note (rare; its webhook `type` is passed through as `"2"`).
    CreditNote,
    /// `4`: the cancellation of an approved invoice.
    Cancellation,
    /// `5`: the replacement of an approved invoice.
    Replacement,
}

impl OpDocType {
    /// The wire spelling of `documentType`.
    pub fn code(self) -> &'static str {
        match self {
            OpDocType::Normal => "1",
            OpDocType::CreditNote => "2",
            OpDocType::Cancellation => "4",
            OpDocType::Replacement => "5",
        }
    }
}

/// The webhook's `type` for a `documentType`: `1` normal, `5` replacement, `4` cancellation,
/// anything else as given.
pub fn webhook_type(document_type: &str) -> &str {
    match document_type {
        "1" => "normal",
        "5" => "replacement",
        "4" => "cancellation",
        other => other,
    }
}

/// A company (taxpayer) with API access: one access token, a few users.
#[derive(Clone, Debug)]
pub struct Company {
    /// As configured: 15-digit formatted, 16 digits, or a 22-digit NITKU. Never reformatted.
    pub npwp: String,
    pub token: String,
    pub name: String,
    /// Users' emails; `createdBy` is one of them (or empty for an API-created invoice).
    pub users: Vec<String>,
    /// Last commercial invoice serial handed out.
    invoice_serial: u32,
    /// Last NSFP serial handed out (the range DJP allocated starts at a random base).
    nsfp_serial: u64,
}

/// One VAT invoice. Its fields always describe the current revision.
#[derive(Clone, Debug)]
pub struct Invoice {
    pub id: String,
    /// Index into [`OpWorld::companies`].
    pub company: usize,
    pub document_number: String,
    pub client_reference_id: String,
    pub commercial_invoice_number: String,
    pub tax_period: String,
    pub revision: u32,
    pub doc_type: OpDocType,
    pub status: Approval,
    pub djp_response_message: String,
    pub pdf_download_link: String,
    pub created_by: String,
    pub approved_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The two-digit transaction code of the e-Faktur number (`01`, `04`, `07`).
    trx_code: &'static str,
    /// The NSFP serial and two-digit year, reserved at the first approval, kept by revisions.
    nsfp: Option<(u64, i32)>,
}

/// The whole OnlinePajak state, owned by [`World`].
pub struct OpWorld {
    /// The OnlinePajak traffic RNG, seeded from a hash of the seed. Only this side draws on it.
    pub rng: fastrand::Rng,
    pub companies: Vec<Company>,
    pub invoices: Vec<Invoice>,
    by_id: HashMap<String, usize>,
    /// The latest stamp any live change got: later changes are never stamped before it.
    high_water: DateTime<Utc>,
    /// Per token, the instants of the calls admitted in the current window.
    windows: HashMap<String, VecDeque<DateTime<Utc>>>,
    /// Calls answered 429 by the rate limiter.
    pub rate_limited: u64,
    /// Per company, the invoices changed live since its last Bulk Fetch walk (the page floor,
    /// see [`super::floor`]).
    pub(crate) unread: Pending,
    seed: u64,
    error_serial: u64,
}

impl OpWorld {
    /// The companies with their NPWPs, tokens and users; no invoices yet.
    pub fn new(cfg: &SimConfig) -> OpWorld {
        let digest = Sha256::digest(format!("onlinepajak:{}", cfg.seed));
        let mut seed_bytes = [0u8; 8];
        seed_bytes.copy_from_slice(&digest[..8]);
        let mut rng = fastrand::Rng::with_seed(u64::from_le_bytes(seed_bytes));
        let mut companies: Vec<Company> = Vec::with_capacity(cfg.op_companies);
        for i in 0..cfg.op_companies {
            let mut npwp = make_npwp(&mut rng, i);
            while companies.iter().any(|c| c.npwp == npwp) {
                npwp = make_npwp(&mut rng, i);
            }
            companies.push(make_company(&mut rng, cfg.seed, i, npwp));
        }
        OpWorld {
            rng,
            companies,
            invoices: Vec::new(),
            by_id: HashMap::new(),
            high_water: DateTime::<Utc>::MIN_UTC,
            windows: HashMap::new(),
            rate_limited: 0,
            unread: Pending::new(Utc::now()),
            seed: cfg.seed,
            error_serial: 0,
        }
    }

    /// What `GET /_sim/credentials` and the config snippet show.
    pub fn credentials(&self) -> Vec<SimCompany> {
        self.companies
            .iter()
            .map(|c| SimCompany {
                npwp: c.npwp.clone(),
                token: c.token.clone(),
                name: c.name.clone(),
            })
            .collect()
    }

    // ----- access ------------------------------------------------------------------------

    /// The company a token belongs to.
    pub fn company_by_token(&self, token: &str) -> Option<usize> {
        self.companies.iter().position(|c| c.token == token)
    }

    /// The company with this NPWP, exactly as configured.
    pub fn company_by_npwp(&self, npwp: &str) -> Option<usize> {
        self.companies.iter().position(|c| c.npwp == npwp)
    }

    /// Counts a call of `token` at `now` against its rolling window; `false` (and the call is
    /// not counted) once [`RATE_LIMIT`] calls were admitted in the last [`RATE_WINDOW`].
    pub fn admit(&mut self, token: &str, now: DateTime<Utc>) -> bool {
        let window = self.windows.entry(token.to_string()).or_default();
        while window.front().is_some_and(|&t| t <= now - RATE_WINDOW) {
            window.pop_front();
        }
        if window.len() >= RATE_LIMIT {
            self.rate_limited += 1;
            return false;
        }
        window.push_back(now);
        true
    }

    /// A fresh `errorId` for an error envelope (from a counter, not the RNG: requests never
    /// perturb the traffic).
    pub fn next_error_id(&mut self) -> String {
        self.error_serial += 1;
        let d = Sha256::digest(format!("op-error:{}:{}", self.seed, self.error_serial));
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        super::world::uuid_of(b)
    }

    /// The invoice with this id, if it belongs to company `c`.
    pub fn visible(&self, c: usize, id: &str) -> Option<&Invoice> {
        let inv = &self.invoices[*self.by_id.get(id)?];
        (inv.company == c).then_some(inv)
    }

    /// Bulk Fetch: company `c`'s invoices with `updatedAt >= from` (inclusive), ascending by
    /// `updatedAt`, ties by id.
    pub fn bulk(&self, c: usize, from: Option<DateTime<Utc>>) -> Vec<&Invoice> {
        let mut found: Vec<&Invoice> = self
            .invoices
            .iter()
            .filter(|inv| inv.company == c && from.map_or(true, |f| inv.updated_at >= f))
            .collect();
        found.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
        found
    }

    // ----- JSON --------------------------------------------------------------------------

    /// The INVOICE object, every key always present, in the contract's order.
    pub fn invoice_json(&self, inv: &Invoice) -> Value {
        json!({
            "id": inv.id,
            "documentNumber": inv.document_number,
            "clientReferenceId": inv.client_reference_id,
            "commercialInvoiceNumber": inv.commercial_invoice_number,
            "taxPeriod": inv.tax_period,
            "revision": inv.revision,
            "documentType": inv.doc_type.code(),
            "approvalStatus": inv.status.as_str(),
            "djpResponseMessage": inv.djp_response_message,
            "pdfDownloadLink": inv.pdf_download_link,
            "createdBy": inv.created_by,
            "npwp": self.companies[inv.company].npwp,
            "approvedAt": inv.approved_at.map(fmt_ts),
            "updatedAt": fmt_ts(inv.updated_at),
        })
    }

    /// The `PPN_INVOICE_APPROVED` body for invoice `i` as it is now, keys in the documented
    /// order; every value is the one [`OpWorld::invoice_json`] shows.
    pub fn webhook_payload(&self, i: usize) -> Value {
        let inv = &self.invoices[i];
        let shown = self.invoice_json(inv);
        json!({
            "npwp": shown["npwp"],
            "user_email": shown["createdBy"],
            "event_name": EVENT_NAME,
            "event_date": shown["approvedAt"],
            "event_data": {
                "reference_number": shown["id"],
                "document_number": shown["documentNumber"],
                "client_reference_id": shown["clientReferenceId"],
                "commercial_invoice_number": shown["commercialInvoiceNumber"],
                "tax_period": shown["taxPeriod"],
                "revision": shown["revision"],
                "type": webhook_type(inv.doc_type.code()),
                "approved": inv.status == Approval::Approved,
                "djp_response_message": shown["djpResponseMessage"],
                "pdf_download_link": shown["pdfDownloadLink"],
            },
        })
    }

    // ----- transitions -------------------------------------------------------------------

    /// Stamps a change of invoice `i` at `at`: strictly after its previous `updatedAt` and,
    /// when `live`, never before an earlier live change of any invoice.
    fn touch(&mut self, i: usize, at: DateTime<Utc>, live: bool) -> DateTime<Utc> {
        let inv = &mut self.invoices[i];
        let mut stamp = at.max(inv.updated_at + TimeDelta::milliseconds(1));
        if live {
            stamp = stamp.max(self.high_water);
            self.high_water = stamp;
            self.unread.changed(inv.company, i, stamp);
        }
        inv.updated_at = stamp;
        stamp
    }

    /// Creates a `DRAFT` for company `c` at `at`.
    pub fn create(
        &mut self,
        c: usize,
        doc_type: OpDocType,
        at: DateTime<Utc>,
        live: bool,
    ) -> usize {
        let at = if live { at.max(self.high_water) } else { at };
        if live {
            self.high_water = at;
        }
        let id = uuid(&mut self.rng);
        let client_reference_id: String = (0..29)
            .map(|_| {
                let n = self.rng.u8(0..16);
                char::from_digit(u32::from(n), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase()
            })
            .collect();
        let company = &mut self.companies[c];
        let created_by = if self.rng.u8(0..8) == 0 {
            String::new() // created through the API by the application: no user
        } else {
            company.users[self.rng.usize(0..company.users.len())].clone()
        };
        company.invoice_serial += 1;
        let prefix = match doc_type {
            OpDocType::CreditNote => "RET",
            _ => "INV",
        };
        let commercial_invoice_number = format!(
            "{prefix}/{}/{}/{:04}",
            at.year(),
            ROMAN_MONTHS[at.month0() as usize],
            company.invoice_serial
        );
        let trx_code = ["01", "01", "01", "04", "07"][self.rng.usize(0..5)];
        let idx = self.invoices.len();
        if live {
            self.unread.changed(c, idx, at);
        }
        self.by_id.insert(id.clone(), idx);
        self.invoices.push(Invoice {
            id,
            company: c,
            document_number: String::new(),
            client_reference_id,
            commercial_invoice_number,
            tax_period: at.format("%Y/%m").to_string(),
            revision: 0,
            doc_type,
            status: Approval::Draft,
            djp_response_message: String::new(),
            pdf_download_link: String::new(),
            created_by,
            approved_at: None,
            updated_at: at,
            trx_code,
            nsfp: None,
        });
        idx
    }

    /// Sends a draft to DJP: `DRAFT` -> `APPROVAL_IN_PROGRESS`.
    pub fn submit(&mut self, i: usize, at: DateTime<Utc>, live: bool) {
        self.touch(i, at, live);
        self.invoices[i].status = Approval::InProgress;
    }

    /// DJP answers for the current revision at `at` (not journaled here: see
    /// [`World::op_answer`]).
    pub fn answer(&mut self, i: usize, approved: bool, at: DateTime<Utc>, live: bool) {
        self.touch(i, at, live);
        self.settle(i, approved);
    }

    /// The fields of a DJP answer, at the invoice's current `updatedAt`.
    fn settle(&mut self, i: usize, approved: bool) {
        let reason = REJECTIONS[self.rng.usize(0..REJECTIONS.len())];
        let inv = &mut self.invoices[i];
        let at = inv.updated_at;
        inv.approved_at = Some(at);
        if approved {
            inv.status = Approval::Approved;
            inv.djp_response_message = APPROVED_MESSAGE.to_string();
            let (serial, yy) = match inv.nsfp {
                Some(n) => n,
                None => {
                    let company = &mut self.companies[inv.company];
                    company.nsfp_serial += 1;
                    let n = (company.nsfp_serial, at.year() % 100);
                    inv.nsfp = Some(n);
                    n
                }
            };
            // Status digit: 0 normal, 1 replacement (Normal-Pengganti).
            let status_digit = u8::from(inv.doc_type == OpDocType::Replacement);
            inv.document_number = format!("{}{status_digit}.000-{yy:02}.{serial:08}", inv.trx_code);
            inv.pdf_download_link = format!(
                "https://files.onlinepajak.invalid/efaktur/{}/r{}.pdf",
                inv.id, inv.revision
            );
        } else {
            inv.status = Approval::Rejected;
            inv.djp_response_message = reason.to_string();
            inv.document_number = String::new();
            inv.pdf_download_link = String::new();
        }
    }

    /// A new revision of an approved invoice (a replacement or a cancellation), sent to DJP at
    /// once: `revision` + 1, the DJP fields start over.
    pub fn revise(&mut self, i: usize, doc_type: OpDocType, at: DateTime<Utc>, live: bool) {
        self.touch(i, at, live);
        let inv = &mut self.invoices[i];
        inv.revision += 1;
        inv.doc_type = doc_type;
        inv.status = Approval::InProgress;
        inv.document_number = String::new();
        inv.djp_response_message = String::new();
        inv.pdf_download_link = String::new();
        inv.approved_at = None;
    }
}

impl World {
    /// DJP answers invoice `i` now-ish (`at`) and the webhook is journaled. Returns 1.
    pub fn op_answer(&mut self, i: usize, approved: bool, at: DateTime<Utc>) -> usize {
        self.op.answer(i, approved, at, true);
        self.journal_op(i)
    }

    /// `n` invoices of the company with `npwp` created and answered at once (about 90%
    /// approved), each with its own, increasing `updatedAt`, each journaled. Returns how many
    /// journal entries were added (0 for an unknown NPWP).
    pub fn op_burst(&mut self, npwp: &str, n: usize) -> usize {
        let Some(c) = self.op.company_by_npwp(npwp) else {
            return 0;
        };
        let now = self.now();
        let mut added = 0;
        for _ in 0..n {
            let at = now.max(self.op.high_water + TimeDelta::milliseconds(1));
            let i = self.op.create(c, OpDocType::Normal, at, true);
            // Submitted and answered in the same instant: nobody could see the draft.
            let approved = self.op.rng.u8(0..100) < 90;
            self.op.invoices[i].status = Approval::InProgress;
            self.op.settle(i, approved);
            added += self.journal_op(i);
        }
        added
    }

    fn journal_op(&mut self, i: usize) -> usize {
        let payload = self.op.webhook_payload(i);
        let inv = &self.op.invoices[i];
        let at = inv.approved_at.unwrap_or(inv.updated_at);
        let npwp = self.op.companies[inv.company].npwp.clone();
        self.journal_push(at, &npwp, EVENT_NAME, &payload);
        1
    }
}

const ROMAN_MONTHS: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

/// Company names and mail domains.
const COMPANIES: &[(&str, &str)] = &[
    ("PT Nusantara Kopi Sejahtera", "nusantarakopi.co.id"),
    ("PT Sumber Makmur Logistik", "sumbermakmur.co.id"),
    ("CV Batik Sekar Jagad", "sekarjagad.id"),
    ("PT Bintang Timur Elektronik", "bintangtimur.co.id"),
    ("PT Rempah Maluku Ekspor", "rempahmaluku.co.id"),
    ("PT Sinar Jaya Tekstil", "sinarjaya-tekstil.co.id"),
];

const USERS: &[&str] = &["finance", "pajak", "admin.faktur", "akunting"];

fn digits(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + rng.u8(0..10))).collect()
}

/// Company `i`'s NPWP, the forms taking turns: old 15-digit `99.999.999.9-999.999`, 16 digits,
/// 22-digit NITKU.
fn make_npwp(rng: &mut fastrand::Rng, i: usize) -> String {
    match i % 3 {
        0 => {
            let d = digits(rng, 15);
            format!(
                "{}.{}.{}.{}-{}.{}",
                &d[0..2],
                &d[2..5],
                &d[5..8],
                &d[8..9],
                &d[9..12],
                &d[12..15]
            )
        }
        1 => digits(rng, 16),
        _ => digits(rng, 22),
    }
}

fn make_company(rng: &mut fastrand::Rng, seed: u64, i: usize, npwp: String) -> Company {
    let (name, domain) = COMPANIES[i % COMPANIES.len()];
    let round = i / COMPANIES.len();
    let (name, domain) = if round == 0 {
        (name.to_string(), domain.to_string())
    } else {
        (
            format!("{name} ({})", round + 1),
            format!("{}.{domain}", round + 1),
        )
    };
    let user_count = rng.usize(2..=USERS.len());
    let users = USERS[..user_count]
        .iter()
        .map(|u| format!("{u}@{domain}"))
        .collect();
    let token_digest = Sha256::digest(format!("onlinepajak-token:{seed}:{i}"));
    Company {
        npwp,
        token: format!("opk_{}", &hex(&token_digest)[..40]),
        name,
        users,
        invoice_serial: 0,
        nsfp_serial: rng.u64(1..50_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> OpWorld {
        OpWorld::new(&SimConfig::default())
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn npwps_mix_the_old_and_the_new_forms_and_tokens_differ() {
        let w = OpWorld::new(&SimConfig {
            op_companies: 3,
            ..SimConfig::default()
        });
        let npwps: Vec<&str> = w.companies.iter().map(|c| c.npwp.as_str()).collect();
        let old = npwps[0];
        assert_eq!(old.len(), 20, "{old}");
        let shape: String = old
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "99.999.999.9-999.999");
        assert_eq!(npwps[1].len(), 16);
        assert!(npwps[1].chars().all(|c| c.is_ascii_digit()));
        assert_eq!(npwps[2].len(), 22);
        let tokens: std::collections::BTreeSet<&str> =
            w.companies.iter().map(|c| c.token.as_str()).collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            w.companies[0].token,
            op().companies[0].token,
            "from the seed"
        );
    }

    #[test]
    fn an_approval_assigns_the_number_link_and_message_and_a_revision_starts_over() {
        let mut w = op();
        let t0 = at("2026-11-23T08:57:35.383Z");
        let i = w.create(0, OpDocType::Normal, t0, true);
        let inv = &w.invoices[i];
        assert_eq!(
            (inv.status, inv.document_number.as_str()),
            (Approval::Draft, "")
        );
        assert_eq!(inv.tax_period, "2026/11");
        assert!(
            inv.commercial_invoice_number.starts_with("INV/2026/XI/"),
            "{}",
            inv.commercial_invoice_number
        );
        w.submit(i, t0, true);
        w.answer(i, true, t0, true);
        let inv = &w.invoices[i];
        assert_eq!(inv.status, Approval::Approved);
        assert_eq!(inv.approved_at, Some(inv.updated_at));
        assert_eq!(
            inv.updated_at,
            t0 + TimeDelta::milliseconds(2),
            "strictly increasing"
        );
        let number = inv.document_number.clone();
        let shape: String = number
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "999.999-99.99999999", "{number}");
        assert!(number[2..].starts_with("0.000-26."), "{number}");
        assert!(inv.pdf_download_link.starts_with("https://"));
        w.revise(i, OpDocType::Replacement, t0, true);
        let inv = &w.invoices[i];
        assert_eq!((inv.revision, inv.status), (1, Approval::InProgress));
        assert_eq!(inv.approved_at, None);
        assert_eq!(inv.document_number, "");
        assert_eq!(inv.pdf_download_link, "");
        w.answer(i, true, t0, true);
        let inv = &w.invoices[i];
        assert_eq!(inv.document_number[..2], number[..2]);
        assert_eq!(&inv.document_number[2..3], "1", "replacement status digit");
        assert_eq!(inv.document_number[3..], number[3..], "same NSFP serial");
    }

    #[test]
    fn live_changes_are_never_stamped_before_an_earlier_live_change() {
        let mut w = op();
        let late = at("2026-01-01T00:00:10Z");
        let early = at("2026-01-01T00:00:00Z");
        let a = w.create(0, OpDocType::Normal, late, true);
        let b = w.create(1, OpDocType::Normal, early, true);
        assert_eq!(w.invoices[b].updated_at, w.invoices[a].updated_at);
        w.submit(b, early, true);
        assert!(w.invoices[b].updated_at > late);
        // The history is not live: its stamps stay in the past.
        let c = w.create(0, OpDocType::Normal, early, false);
        assert_eq!(w.invoices[c].updated_at, early);
    }

    #[test]
    fn the_rate_limit_window_rolls() {
        let mut w = op();
        let t0 = at("2026-01-01T00:00:00Z");
        for k in 0..RATE_LIMIT {
            assert!(w.admit("t", t0 + TimeDelta::milliseconds(k as i64)));
        }
        assert!(!w.admit("t", t0 + TimeDelta::seconds(59)));
        assert!(w.admit("other", t0 + TimeDelta::seconds(59)), "per token");
        // The first call leaves the window exactly 60 s after it was made.
        assert!(w.admit("t", t0 + TimeDelta::seconds(60)));
        assert!(!w.admit("t", t0 + TimeDelta::seconds(60)));
        assert_eq!(w.rate_limited, 2);
    }

    #[test]
    fn webhook_type_maps_the_three_known_codes_and_passes_the_rest() {
        assert_eq!(webhook_type("1"), "normal");
        assert_eq!(webhook_type("5"), "replacement");
        assert_eq!(webhook_type("4"), "cancellation");
        assert_eq!(webhook_type("2"), "2");
    }
}
