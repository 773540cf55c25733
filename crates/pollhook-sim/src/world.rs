//! The simulated CamInvoice network: businesses, documents, tokens and the journal.
//!
//! This module owns every piece of simulator state and the rules that keep it consistent:
//! who may see which document, how `updated_at` moves, which webhooks a change journals and to
//! whom. Its methods are pure state transitions plus JSON building; it never does HTTP and
//! never sleeps. The traffic generator decides *what* changes; this module decides what that
//! change *means* (visibility, journal entries).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::faults::{Fault, FaultCounts, FaultKind};
use super::floor::Pending;
use super::op_world::OpWorld;
use super::{fmt_ts, JournalEntry, SimConfig, SimCredentials, SimMember};

/// Lifetime of the `authToken` handed out by the connect page ("valid ~24 h").
const AUTH_TOKEN_TTL: TimeDelta = TimeDelta::hours(24);

/// A document's status, as CamInvoice spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Submitted by the supplier and validated; not yet visible to the customer.
    Valid,
    /// Delivered to the customer on the network.
    Delivered,
    /// Customer-set statuses from here on.
    Acknowledged,
    InProcess,
    UnderQuery,
    ConditionallyAccepted,
    Accepted,
    Rejected,
    Paid,
}

impl Status {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "VALID",
            Status::Delivered => "DELIVERED",
            Status::Acknowledged => "ACKNOWLEDGED",
            Status::InProcess => "IN_PROCESS",
            Status::UnderQuery => "UNDER_QUERY",
            Status::ConditionallyAccepted => "CONDITIONALLY_ACCEPTED",
            Status::Accepted => "ACCEPTED",
            Status::Rejected => "REJECTED",
            Status::Paid => "PAID",
        }
    }

    /// Whether the customer has received the document (every status but `VALID`).
    pub fn is_delivered(self) -> bool {
        self != Status::Valid
    }

    /// `PAID` and `REJECTED` end a document's life.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Paid | Status::Rejected)
    }
}

/// `INVOICE`, `CREDIT_NOTE` or `DEBIT_NOTE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocType {
    Invoice,
    CreditNote,
    DebitNote,
}

impl DocType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DocType::Invoice => "INVOICE",
            DocType::CreditNote => "CREDIT_NOTE",
            DocType::DebitNote => "DEBIT_NOTE",
        }
    }

    /// Parses the wire spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<DocType> {
        match s.to_ascii_uppercase().as_str() {
            "INVOICE" => Some(DocType::Invoice),
            "CREDIT_NOTE" => Some(DocType::CreditNote),
            "DEBIT_NOTE" => Some(DocType::DebitNote),
            _ => None,
        }
    }

    fn number_prefix(self) -> &'static str {
        match self {
            DocType::Invoice => "INV",
            DocType::CreditNote => "CN",
            DocType::DebitNote => "DN",
        }
    }
}

/// A business's relation to our integrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// On the network, never connected to us.
    Outsider,
    /// Connected: a member, with its current refresh token.
    Connected { refresh_token: String },
    /// Was a member; disconnected. `/connect` may reconnect it.
    Revoked,
}

/// A business on the CamInvoice network.
#[derive(Clone, Debug)]
pub struct Business {
    pub endpoint_id: String,
    pub moc_id: String,
    pub name_en: String,
    pub name_kh: String,
    pub tin: String,
    pub date_of_incorporation: NaiveDate,
    pub business_type: &'static str,
    pub city: &'static str,
    pub phone_number: String,
    pub email: String,
    pub link: Link,
    /// How many times it has been connected (refresh tokens are derived from it).
    pub connections: u32,
}

/// Which side of a document a member is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The member is the supplier (`type=send`, poll `SEND`).
    Send,
    /// The member is the customer and the document was delivered (`received`, `RECEIVE`).
    Receive,
}

/// One e-invoicing document.
#[derive(Clone, Debug)]
pub struct Document {
    pub id: String,
    pub number: String,
    /// Index into [`World::businesses`].
    pub supplier: usize,
    /// Index into [`World::businesses`].
    pub customer: usize,
    pub status: Status,
    pub doc_type: DocType,
    /// Index of the referenced document (credit and debit notes).
    pub reference: Option<usize>,
    pub currency: &'static str,
    /// Amount in minor units: cents for USD, riel for KHR.
    pub amount_minor: i64,
    pub issue_date: NaiveDate,
    pub due_date: NaiveDate,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An access token handed out by `/auth/token` or `/auth/authorize/connect`.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    /// Real wall-clock expiry.
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct AccessToken {
    member: usize,
    expires_at: DateTime<Utc>,
}

/// Why `POST /api/v1/auth/token` refuses a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// Never issued.
    Unknown,
    /// Issued to a member that has since been revoked.
    Revoked,
}

/// Documents one business sees on one side, kept in list order (`created_at`, then index):
/// appended as they appear, sorted only when an append broke the order.
#[derive(Clone, Debug, Default)]
struct ListIndex {
    docs: Vec<usize>,
    /// The greatest `(created_at, index)` pushed so far.
    last: Option<(DateTime<Utc>, usize)>,
    unsorted: bool,
}

impl ListIndex {
    fn push(&mut self, d: usize, created_at: DateTime<Utc>) {
        let key = (created_at, d);
        self.unsorted |= self.last.is_some_and(|last| key < last);
        self.last = Some(self.last.map_or(key, |l| l.max(key)));
        self.docs.push(d);
    }

    fn sorted(&mut self, documents: &[Document]) -> &[usize] {
        if self.unsorted {
            self.docs.sort_by_key(|&i| (documents[i].created_at, i));
            self.unsorted = false;
        }
        &self.docs
    }
}

/// The whole simulated state. Owned by [`super::Simulator`] behind a mutex.
pub struct World {
    pub cfg: SimConfig,
    /// The traffic RNG. Only the generator and world construction draw from it.
    pub rng: fastrand::Rng,
    clock_offset: TimeDelta,
    pub businesses: Vec<Business>,
    pub documents: Vec<Document>,
    doc_by_id: HashMap<String, usize>,
    /// Per business: the documents it sees, by `(updated_at, index)`: the poll's index.
    by_update: Vec<BTreeSet<(DateTime<Utc>, usize)>>,
    /// Per business and side (send, receive): the documents it sees, in list order once sorted.
    listed: Vec<[ListIndex; 2]>,
    access_tokens: HashMap<String, AccessToken>,
    /// Refresh tokens of revoked connections -> business index.
    retired_refresh: HashMap<String, usize>,
    /// `authToken`s from the connect page not yet exchanged -> business index.
    auth_tokens: HashMap<String, (usize, DateTime<Utc>)>,
    token_serial: u64,
    doc_serial: u64,
    pub journal: Vec<JournalEntry>,
    /// Instant of each business's latest journal entry, or of the simulator's creation.
    pub last_journaled: HashMap<String, DateTime<Utc>>,
    /// A member the generator is about to revoke: no more traffic involves it.
    pub leaving: Option<usize>,
    /// Revocations the generator has made (explicit revokes do not count).
    pub auto_revocations: usize,
    pub requests: BTreeMap<String, u64>,
    faults: Vec<Fault>,
    /// The next document [`Simulator::churn`](super::Simulator::churn) looks at.
    pub churn_next: usize,
    /// When the first API request since the last [`World::take_first_request`] arrived.
    pub first_request: Option<std::time::Instant>,
    /// The OnlinePajak side, with its own RNG (see [`OpWorld`]).
    pub op: OpWorld,
    /// Per business, the documents it sees that changed since its last poll answer (the
    /// detail-call floor, see [`super::floor`]).
    pub(crate) unread: Pending,
    /// Which injected faults fired, and how stalls ended.
    pub fault_counts: FaultCounts,
    /// Hostile answer variants and poisoned timestamps (see [`super::hostile`]).
    pub hostile: super::hostile::HostileState,
    /// How the wire drifts from the contract (see [`super::drift`]).
    pub drift: super::drift::Drift,
}

impl World {
    /// Businesses and members' refresh tokens; no documents yet.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let total = cfg.members + cfg.outsiders;
        let mut businesses: Vec<Business> = Vec::with_capacity(total);
        for i in 0..total {
            let mut endpoint_id = format!("KHUID{:08}", rng.u32(1_000..100_000));
            while businesses.iter().any(|b| b.endpoint_id == endpoint_id) {
                endpoint_id = format!("KHUID{:08}", rng.u32(1_000..100_000));
            }
            businesses.push(make_business(&mut rng, i, endpoint_id));
        }
        let op = OpWorld::new(&cfg);
        let mut world = World {
            cfg,
            rng,
            clock_offset: TimeDelta::zero(),
            businesses,
            documents: Vec::new(),
            doc_by_id: HashMap::new(),
            by_update: vec![BTreeSet::new(); total],
            listed: (0..total).map(|_| Default::default()).collect(),
            access_tokens: HashMap::new(),
            retired_refresh: HashMap::new(),
            auth_tokens: HashMap::new(),
            token_serial: 0,
            doc_serial: 0,
            journal: Vec::new(),
            last_journaled: HashMap::new(),
            leaving: None,
            auto_revocations: 0,
            requests: BTreeMap::new(),
            faults: Vec::new(),
            churn_next: 0,
            first_request: None,
            op,
            unread: Pending::new(Utc::now()),
            fault_counts: FaultCounts::default(),
            hostile: Default::default(),
            drift: Default::default(),
        };
        let created = world.now();
        for i in 0..world.cfg.members {
            world.connect(i);
            let endpoint_id = world.businesses[i].endpoint_id.clone();
            // A poller needs the quiet period from the start too before a revocation.
            world.last_journaled.insert(endpoint_id, created);
        }
        world
    }

    // ----- clock -------------------------------------------------------------------------

    /// The simulated now (wall clock + offset), truncated to milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        truncate_ms(Utc::now() + self.clock_offset)
    }

    /// Moves the simulated clock forward.
    pub fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += TimeDelta::from_std(by).unwrap_or(TimeDelta::zero());
    }

    // ----- businesses and membership -----------------------------------------------------

    /// The business with this endpoint id.
    pub fn find_business(&self, endpoint_id: &str) -> Option<usize> {
        self.businesses
            .iter()
            .position(|b| b.endpoint_id == endpoint_id)
    }

    /// Whether business `i` is connected to our integrator.
    pub fn is_connected(&self, i: usize) -> bool {
        matches!(self.businesses[i].link, Link::Connected { .. })
    }

    /// Whether traffic may involve business `i`: not revoked, not about to be.
    pub fn is_active(&self, i: usize) -> bool {
        self.businesses[i].link != Link::Revoked && self.leaving != Some(i)
    }

    /// Connected members, in business order.
    pub fn connected(&self) -> Vec<usize> {
        (0..self.businesses.len())
            .filter(|&i| self.is_connected(i))
            .collect()
    }

    /// Connects business `i` with a fresh refresh token derived from the seed.
    fn connect(&mut self, i: usize) {
        let b = &mut self.businesses[i];
        b.connections += 1;
        let refresh_token = refresh_token_for(self.cfg.seed, &b.endpoint_id, b.connections);
        b.link = Link::Connected { refresh_token };
    }

    /// What `GET /_sim/credentials` and the config snippet show.
    pub fn credentials(&self) -> SimCredentials {
        let members = self
            .businesses
            .iter()
            .filter_map(|b| match &b.link {
                Link::Connected { refresh_token } => Some(SimMember {
                    endpoint_id: b.endpoint_id.clone(),
                    refresh_token: refresh_token.clone(),
                    company_name_en: b.name_en.clone(),
                }),
                _ => None,
            })
            .collect();
        SimCredentials {
            client_id: self.cfg.client_id.clone(),
            client_secret: self.cfg.client_secret.clone(),
            members,
            onlinepajak: self.op.credentials(),
        }
    }

    /// Revokes a connected member by endpoint id; `false` if it is not one.
    pub fn revoke_endpoint(&mut self, endpoint_id: &str) -> bool {
        match self.find_business(endpoint_id) {
            Some(i) => self.revoke(i),
            None => false,
        }
    }

    /// Disconnects member `i`: its refresh token is retired, its access tokens die, and
    /// `ENTITY.REVOKED` is journaled. `false` if it was not connected.
    pub fn revoke(&mut self, i: usize) -> bool {
        let Link::Connected { refresh_token } = self.businesses[i].link.clone() else {
            return false;
        };
        let at = self.now();
        let endpoint_id = self.businesses[i].endpoint_id.clone();
        self.journal_event(
            at,
            &endpoint_id,
            json!({"type": "ENTITY.REVOKED", "endpoint_id": endpoint_id}),
        );
        self.businesses[i].link = Link::Revoked;
        self.retired_refresh.insert(refresh_token, i);
        self.access_tokens.retain(|_, t| t.member != i);
        if self.leaving == Some(i) {
            self.leaving = None;
        }
        true
    }

    /// The connect page: connects the first business not connected (a revoked member first,
    /// since members come first, else an outsider) and returns the `authToken` for it.
    pub fn connect_next(&mut self) -> Option<String> {
        let i = (0..self.businesses.len()).find(|&i| !self.is_connected(i))?;
        self.connect(i);
        let now = Utc::now();
        let expires_at = now + AUTH_TOKEN_TTL;
        self.token_serial += 1;
        let token = self.jwt(json!({
            "sub": self.businesses[i].endpoint_id,
            "typ": "auth",
            "exp": expires_at.timestamp(),
            "iat": now.timestamp(),
            "jti": self.token_serial,
        }));
        self.auth_tokens.insert(token.clone(), (i, expires_at));
        Some(token)
    }

    /// Exchanges a connect-page `authToken` (single use) for an access and a refresh token.
    pub fn exchange_auth_token(&mut self, auth_token: &str) -> Option<(Issued, String, usize)> {
        let (i, expires_at) = self.auth_tokens.remove(auth_token)?;
        if Utc::now() >= expires_at {
            return None;
        }
        let Link::Connected { refresh_token } = self.businesses[i].link.clone() else {
            return None;
        };
        let issued = self.issue_access(i, true);
        Some((issued, refresh_token, i))
    }

    // ----- tokens ------------------------------------------------------------------------

    /// Checks a refresh token and issues an access token (a JWT or an opaque string, as the
    /// current token variant dictates).
    pub fn refresh(&mut self, refresh_token: &str) -> Result<Issued, RefreshError> {
        let member = self.businesses.iter().position(
            |b| matches!(&b.link, Link::Connected { refresh_token: t } if t == refresh_token),
        );
        match member {
            Some(i) => {
                let jwt = matches!(
                    self.cfg.token_variant,
                    super::TokenVariant::Documented | super::TokenVariant::DataWrapped
                );
                Ok(self.issue_access(i, jwt))
            }
            None if self.retired_refresh.contains_key(refresh_token) => Err(RefreshError::Revoked),
            None => Err(RefreshError::Unknown),
        }
    }

    fn issue_access(&mut self, member: usize, jwt: bool) -> Issued {
        let now = Utc::now();
        let ttl = TimeDelta::from_std(self.cfg.token_ttl).unwrap_or(TimeDelta::seconds(900));
        let expires_at = now + ttl;
        self.token_serial += 1;
        let token = if jwt {
            self.jwt(json!({
                "sub": self.businesses[member].endpoint_id,
                "exp": expires_at.timestamp(),
                "iat": now.timestamp(),
                "jti": self.token_serial,
            }))
        } else {
            let digest = Sha256::digest(format!("access:{}:{}", self.cfg.seed, self.token_serial));
            format!("at_{}", &hex(&digest)[..40])
        };
        self.access_tokens
            .insert(token.clone(), AccessToken { member, expires_at });
        Issued { token, expires_at }
    }

    /// `base64url(header).base64url(claims).base64url(sha256(secret.header.claims))`.
    fn jwt(&self, claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = Sha256::digest(format!("{}.{header}.{payload}", self.cfg.client_secret));
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// The member a Bearer token belongs to, if the token is known, unexpired and its member
    /// still connected.
    pub fn bearer(&self, token: &str) -> Option<usize> {
        let t = self.access_tokens.get(token)?;
        (Utc::now() < t.expires_at && self.is_connected(t.member)).then_some(t.member)
    }

    /// Invalidates every access token issued so far.
    pub fn expire_tokens(&mut self) {
        self.access_tokens.clear();
    }

    /// Moves every issued access token's expiry `by` earlier, as if that much time had passed
    /// for them (tokens expire by the real clock, which tests do not wait for).
    pub fn age_tokens(&mut self, by: TimeDelta) {
        for t in self.access_tokens.values_mut() {
            t.expires_at -= by;
        }
    }

    // ----- documents ---------------------------------------------------------------------

    /// Creates a `VALID` document submitted at `at` (nothing is journaled for `VALID`).
    pub fn create_document(
        &mut self,
        supplier: usize,
        customer: usize,
        doc_type: DocType,
        reference: Option<usize>,
        at: DateTime<Utc>,
    ) -> usize {
        let id = uuid(&mut self.rng);
        let (currency, amount_minor) = if self.rng.u8(0..100) < 60 {
            ("USD", self.rng.i64(1_000..500_000))
        } else {
            ("KHR", self.rng.i64(40..20_000) * 1_000)
        };
        self.doc_serial += 1;
        let number = format!(
            "{}-{}-{:06}",
            doc_type.number_prefix(),
            at.format("%Y"),
            self.doc_serial
        );
        let issue_date = at.date_naive();
        let due_date = issue_date + TimeDelta::days(30);
        let idx = self.documents.len();
        self.doc_by_id.insert(id.clone(), idx);
        self.by_update[supplier].insert((at, idx));
        self.unread.changed(supplier, idx, at);
        self.listed[supplier][0].push(idx, at);
        self.documents.push(Document {
            id,
            number,
            supplier,
            customer,
            status: Status::Valid,
            doc_type,
            reference,
            currency,
            amount_minor,
            issue_date,
            due_date,
            created_at: at,
            updated_at: at,
        });
        idx
    }

    /// Moves document `d` to `to` at `at` (`updated_at` strictly increases) and, when
    /// `journaled`, records the webhooks CamInvoice sends for that change. Returns how many.
    pub fn set_status(
        &mut self,
        d: usize,
        to: Status,
        at: DateTime<Utc>,
        journaled: bool,
    ) -> usize {
        let doc = &mut self.documents[d];
        let (was, before) = (doc.status, doc.updated_at);
        doc.status = to;
        doc.updated_at = at.max(doc.updated_at + TimeDelta::milliseconds(1));
        let (supplier, customer, after, created) =
            (doc.supplier, doc.customer, doc.updated_at, doc.created_at);
        self.by_update[supplier].remove(&(before, d));
        self.by_update[supplier].insert((after, d));
        self.unread.changed(supplier, d, after);
        if customer != supplier && to.is_delivered() {
            self.by_update[customer].remove(&(before, d));
            self.by_update[customer].insert((after, d));
            // The customer needs a detail only for its first sight (RECEIVED): later changes
            // on its side produce no webhook, so a poller that has seen the document needs
            // nothing more to read them.
            if !was.is_delivered() {
                self.unread.changed(customer, d, after);
            }
            if !was.is_delivered() {
                self.listed[customer][1].push(d, created);
            }
        }
        if !journaled {
            return 0;
        }
        let at = after;
        let id = self.documents[d].id.clone();
        let supplier_id = self.businesses[supplier].endpoint_id.clone();
        let customer_id = self.businesses[customer].endpoint_id.clone();
        let mut count = 0;
        if to == Status::Delivered {
            if self.is_connected(supplier) {
                self.journal_event(
                    at,
                    &supplier_id,
                    json!({"type": "DOCUMENT.DELIVERED", "document_id": id, "endpoint_id": supplier_id}),
                );
                count += 1;
            }
            if self.is_connected(customer) {
                self.journal_event(
                    at,
                    &customer_id,
                    json!({"type": "DOCUMENT.RECEIVED", "document_id": id, "endpoint_id": customer_id}),
                );
                count += 1;
            }
        } else if to != Status::Valid && self.is_connected(supplier) {
            self.journal_event(
                at,
                &supplier_id,
                json!({
                    "type": "DOCUMENT.STATUS_UPDATED",
                    "document_id": id,
                    "endpoint_id": supplier_id,
                    "status": to.as_str(),
                }),
            );
            count += 1;
        }
        count
    }

    /// Appends one CamInvoice webhook to the journal. `payload["type"]` names the event.
    fn journal_event(&mut self, at: DateTime<Utc>, endpoint_id: &str, payload: Value) {
        let event_type = payload["type"].as_str().unwrap_or_default().to_string();
        self.journal_push(at, endpoint_id, &event_type, &payload);
        self.last_journaled.insert(endpoint_id.to_string(), at);
    }

    /// Appends one webhook of any provider to the journal, `payload` as compact JSON.
    pub(super) fn journal_push(
        &mut self,
        at: DateTime<Utc>,
        endpoint_id: &str,
        event_type: &str,
        payload: &Value,
    ) {
        self.journal.push(JournalEntry {
            seq: self.journal.len() as u64 + 1,
            at,
            endpoint_id: endpoint_id.to_string(),
            event_type: event_type.to_string(),
            payload: payload.to_string(),
        });
    }

    /// The side member `m` sees document `d` from, or `None` if it cannot see it: the supplier
    /// always, the customer from delivery on.
    pub fn side(&self, d: &Document, m: usize) -> Option<Side> {
        if d.supplier == m {
            Some(Side::Send)
        } else if d.customer == m && d.status.is_delivered() {
            Some(Side::Receive)
        } else {
            None
        }
    }

    /// The document with this id, if member `m` can see it.
    pub fn visible_document(&self, m: usize, id: &str) -> Option<&Document> {
        let d = &self.documents[*self.doc_by_id.get(id)?];
        self.side(d, m).map(|_| d)
    }

    /// Poll items for member `m`: documents it sees with `updated_at >= since` (inclusive),
    /// ascending by `updated_at` (creation order on ties).
    pub fn poll(&self, m: usize, since: Option<DateTime<Utc>>) -> Vec<Value> {
        let from = since.unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.by_update[m]
            .range((from, 0)..)
            .filter_map(|&(_, i)| {
                let d = &self.documents[i];
                self.side(d, m).map(|side| {
                    json!({
                        "document_id": d.id,
                        "updated_at": fmt_ts(d.updated_at),
                        "type": match side { Side::Send => "SEND", Side::Receive => "RECEIVE" },
                    })
                })
            })
            .collect()
    }

    /// Indices of the documents member `m` sees on `side`, optionally of one type, ascending
    /// by `created_at` (creation order on ties).
    #[cfg(test)]
    pub fn list(&mut self, m: usize, side: Side, doc_type: Option<DocType>) -> Vec<usize> {
        let (total, page) = self.list_page(m, side, doc_type, 0, usize::MAX);
        debug_assert_eq!(total, page.len());
        page
    }

    /// One page of [`World::list`] (`skip` items, then at most `size`) and the total count.
    pub fn list_page(
        &mut self,
        m: usize,
        side: Side,
        doc_type: Option<DocType>,
        skip: usize,
        size: usize,
    ) -> (usize, Vec<usize>) {
        let index = &mut self.listed[m][match side {
            Side::Send => 0,
            Side::Receive => 1,
        }];
        let docs = &self.documents;
        let all = index.sorted(docs);
        match doc_type {
            None => (
                all.len(),
                all.iter().skip(skip).take(size).copied().collect(),
            ),
            Some(t) => {
                let of_type: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&i| docs[i].doc_type == t)
                    .collect();
                let total = of_type.len();
                (total, of_type.into_iter().skip(skip).take(size).collect())
            }
        }
    }

    /// The Get Document Detail object, fields in the documented order.
    pub fn detail_json(&self, d: &Document) -> Value {
        let s = &self.businesses[d.supplier];
        let c = &self.businesses[d.customer];
        let reference = d.reference.map(|r| &self.documents[r]);
        json!({
            "document_id": d.id,
            "document_number": d.number,
            "supplier_id": s.endpoint_id,
            "supplier_company_name_kh": s.name_kh,
            "supplier_company_name_en": s.name_en,
            "supplier_vattin": s.tin,
            "customer_id": c.endpoint_id,
            "customer_company_name_en": c.name_en,
            "customer_company_name_kh": c.name_kh,
            "customer_vattin": c.tin,
            "status": d.status.as_str(),
            "issue_date": d.issue_date.format("%Y-%m-%d").to_string(),
            "due_date": d.due_date.format("%Y-%m-%d").to_string(),
            "pdf_file": format!("/api/v1/document/{}/pdf", d.id),
            "created_at": fmt_ts(d.created_at),
            "updated_at": fmt_ts(d.updated_at),
            "currency": d.currency,
            "tax_inclusive_amount": amount_json(d.currency, d.amount_minor),
            "document_type": d.doc_type.as_str(),
            "reference_document_id": reference.map(|r| r.id.clone()),
            "reference_document_number": reference.map(|r| r.number.clone()),
        })
    }

    /// `business_info` of the connect exchange.
    pub fn business_info_json(&self, i: usize) -> Value {
        let b = &self.businesses[i];
        json!({
            "endpoint_id": b.endpoint_id,
            "moc_id": b.moc_id,
            "company_name_en": b.name_en,
            "company_name_kh": b.name_kh,
            "tin": b.tin,
            "date_of_incorporation": b.date_of_incorporation.format("%Y-%m-%d").to_string(),
            "business_type": b.business_type,
            "city": b.city,
            "country": "KH",
            "phone_number": b.phone_number,
            "email": b.email,
        })
    }

    /// `GET /api/v1/business/{endpoint_id}`.
    pub fn business_json(&self, i: usize) -> Value {
        let b = &self.businesses[i];
        json!({
            "endpoint_id": b.endpoint_id,
            "company_name_en": b.name_en,
            "company_name_kh": b.name_kh,
            "entity_type": "COMPANY",
            "entity_id": b.moc_id,
            "tin": b.tin,
            "country": "KH",
        })
    }

    // ----- faults ------------------------------------------------------------------------

    /// Queues a fault (a zero `count` is already used up and ignored).
    pub fn inject(&mut self, fault: Fault) {
        if fault.count > 0 {
            self.faults.push(fault);
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Uses up one application of the first queued fault matching `key`.
    pub fn take_fault(&mut self, key: &str) -> Option<FaultKind> {
        let pos = self.faults.iter().position(|f| f.matches(key))?;
        let fault = &mut self.faults[pos];
        fault.count -= 1;
        let kind = fault.kind.clone();
        if fault.count == 0 {
            self.faults.remove(pos);
        }
        self.fault_counts.fired(&kind, key);
        Some(kind)
    }
}

/// JSON amount: USD with cents (`1234.5`), KHR whole riel.
fn amount_json(currency: &str, minor: i64) -> Value {
    if currency == "USD" {
        json!(minor as f64 / 100.0)
    } else {
        json!(minor)
    }
}

pub(crate) fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A version-4-shaped UUID from `rng`.
pub(super) fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    uuid_of(b)
}

/// The version-4 UUID spelled from 16 random bytes (its version and variant bits set), as
/// the simulator spells document ids.
pub fn uuid_of(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refresh token of a business's `generation`-th connection, derived from the seed.
fn refresh_token_for(seed: u64, endpoint_id: &str, generation: u32) -> String {
    let digest = Sha256::digest(format!("refresh:{seed}:{endpoint_id}:{generation}"));
    format!("rt_{}", &hex(&digest)[..48])
}

/// English and Khmer company names, city.
const COMPANIES: &[(&str, &str, &str)] = &[
    (
        "Angkor Rice Trading Co., Ltd.",
        "ក្រុមហ៊ុន អង្គរ ពាណិជ្ជកម្មអង្ករ ឯ.ក",
        "Siem Reap",
    ),
    (
        "Mekong Logistics Co., Ltd.",
        "ក្រុមហ៊ុន មេគង្គ ដឹកជញ្ជូន ឯ.ក",
        "Phnom Penh",
    ),
    ("Phnom Penh Coffee House", "ផ្ទះកាហ្វេ ភ្នំពេញ", "Phnom Penh"),
    (
        "Tonle Sap Fisheries Co., Ltd.",
        "ក្រុមហ៊ុន នេសាទ ទន្លេសាប ឯ.ក",
        "Kampong Chhnang",
    ),
    (
        "Kampot Pepper Export Co., Ltd.",
        "ក្រុមហ៊ុន នាំចេញម្រេចកំពត ឯ.ក",
        "Kampot",
    ),
    (
        "Siem Reap Hospitality Group",
        "ក្រុមហ៊ុន បដិសណ្ឋារកិច្ច សៀមរាប",
        "Siem Reap",
    ),
    (
        "Battambang Agro Supplies",
        "ការផ្គត់ផ្គង់កសិកម្ម បាត់ដំបង",
        "Battambang",
    ),
    (
        "Khmer Steel Works Co., Ltd.",
        "ក្រុមហ៊ុន ដែកថែប ខ្មែរ ឯ.ក",
        "Phnom Penh",
    ),
    (
        "Sihanoukville Port Services",
        "សេវាកំពង់ផែ ក្រុងព្រះសីហនុ",
        "Sihanoukville",
    ),
    ("Kep Seafood Trading", "ពាណិជ្ជកម្មអាហារសមុទ្រ កែប", "Kep"),
    (
        "Mondulkiri Timber Co., Ltd.",
        "ក្រុមហ៊ុន ឈើ មណ្ឌលគិរី ឯ.ក",
        "Sen Monorom",
    ),
    (
        "Koh Kong Energy Co., Ltd.",
        "ក្រុមហ៊ុន ថាមពល កោះកុង ឯ.ក",
        "Koh Kong",
    ),
];

const BUSINESS_TYPES: &[&str] = &[
    "Private Limited Company",
    "Single Member Private Limited Company",
    "Public Limited Company",
    "Sole Proprietorship",
];

fn make_business(rng: &mut fastrand::Rng, i: usize, endpoint_id: String) -> Business {
    let (en, kh, city) = COMPANIES[i % COMPANIES.len()];
    let round = i / COMPANIES.len();
    let (name_en, name_kh) = if round == 0 {
        (en.to_string(), kh.to_string())
    } else {
        (
            format!("{en} ({})", round + 1),
            format!("{kh} ({})", round + 1),
        )
    };
    let slug: String = en
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("-")
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let tin = format!(
        "{}{:03}-{:09}",
        if rng.bool() { 'K' } else { 'L' },
        rng.u32(1..10),
        rng.u32(100_000_000..1_000_000_000)
    );
    let date_of_incorporation =
        NaiveDate::from_ymd_opt(rng.i32(2005..2023), rng.u32(1..13), rng.u32(1..29))
            .unwrap_or_default();
    Business {
        endpoint_id,
        moc_id: format!("{:08}", rng.u32(10_000_000..100_000_000)),
        name_en,
        name_kh,
        tin,
        date_of_incorporation,
        business_type: BUSINESS_TYPES[rng.usize(0..BUSINESS_TYPES.len())],
        city,
        phone_number: format!(
            "+855 {} {:03} {:03}",
            rng.u32(10..100),
            rng.u32(0..1000),
            rng.u32(0..1000)
        ),
        email: format!(
            "accounts{}@{slug}.example.com.kh",
            if round == 0 {
                String::new()
            } else {
                (round + 1).to_string()
            }
        ),
        link: Link::Outsider,
        connections: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(SimConfig::default())
    }

    #[test]
    fn ids_look_like_caminvoice_ids() {
        let mut w = world();
        for b in &w.businesses {
            assert_eq!(b.endpoint_id.len(), 13, "{}", b.endpoint_id);
            assert!(b.endpoint_id.starts_with("KHUID"));
        }
        let id = uuid(&mut w.rng);
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12], "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn updated_at_strictly_increases_even_within_one_millisecond() {
        let mut w = world();
        let at = w.now();
        let d = w.create_document(0, 1, DocType::Invoice, None, at);
        w.set_status(d, Status::Delivered, at, true);
        let first = w.documents[d].updated_at;
        assert!(first > at);
        w.set_status(d, Status::Acknowledged, at, true);
        assert!(w.documents[d].updated_at > first);
    }

    #[test]
    fn delivery_between_two_members_journals_one_entry_each() {
        let mut w = world();
        let at = w.now();
        let d = w.create_document(0, 1, DocType::Invoice, None, at);
        assert_eq!(w.set_status(d, Status::Delivered, at, true), 2);
        let types: Vec<&str> = w.journal.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["DOCUMENT.DELIVERED", "DOCUMENT.RECEIVED"]);
        assert_eq!(w.journal[0].endpoint_id, w.businesses[0].endpoint_id);
        assert_eq!(w.journal[1].endpoint_id, w.businesses[1].endpoint_id);
        assert_eq!(
            w.journal[1].payload,
            format!(
                r#"{{"type":"DOCUMENT.RECEIVED","document_id":"{}","endpoint_id":"{}"}}"#,
                w.documents[d].id, w.businesses[1].endpoint_id
            )
        );
    }

    #[test]
    fn customer_status_goes_to_the_supplier_only_and_only_if_connected() {
        let mut w = world();
        let outsider = w.cfg.members; // first outsider
        let at = w.now();
        let to_outsider = w.create_document(0, outsider, DocType::Invoice, None, at);
        w.set_status(to_outsider, Status::Delivered, at, true);
        assert_eq!(w.set_status(to_outsider, Status::Accepted, at, true), 1);
        let last = w.journal.last().unwrap();
        assert_eq!(
            last.payload,
            format!(
                r#"{{"type":"DOCUMENT.STATUS_UPDATED","document_id":"{}","endpoint_id":"{}","status":"ACCEPTED"}}"#,
                w.documents[to_outsider].id, w.businesses[0].endpoint_id
            )
        );
        let from_outsider = w.create_document(outsider, 0, DocType::Invoice, None, at);
        assert_eq!(w.set_status(from_outsider, Status::Delivered, at, true), 1);
        assert_eq!(w.set_status(from_outsider, Status::Paid, at, true), 0);
    }

    #[test]
    fn customer_sees_a_document_only_from_delivery_on() {
        let mut w = world();
        let at = w.now();
        let d = w.create_document(0, 1, DocType::Invoice, None, at);
        let id = w.documents[d].id.clone();
        assert!(w.visible_document(0, &id).is_some());
        assert!(w.visible_document(1, &id).is_none());
        assert!(w.visible_document(2, &id).is_none());
        assert!(w.poll(1, None).is_empty());
        w.set_status(d, Status::Delivered, at, true);
        assert!(w.visible_document(1, &id).is_some());
        assert_eq!(w.poll(1, None)[0]["type"], "RECEIVE");
        assert_eq!(w.poll(0, None)[0]["type"], "SEND");
    }

    #[test]
    fn refresh_refusals_distinguish_unknown_from_revoked() {
        let mut w = world();
        let creds = w.credentials();
        let rt = creds.members[0].refresh_token.clone();
        let issued = w.refresh(&rt).unwrap();
        assert_eq!(w.bearer(&issued.token), Some(0));
        assert_eq!(w.refresh("nope").unwrap_err(), RefreshError::Unknown);
        assert!(w.revoke(0));
        assert_eq!(w.refresh(&rt).unwrap_err(), RefreshError::Revoked);
        assert_eq!(
            w.bearer(&issued.token),
            None,
            "a revoked member's token dies"
        );
        assert!(!w.revoke(0), "already revoked");
    }

    #[test]
    fn connect_page_reconnects_a_revoked_member_with_a_new_refresh_token() {
        let mut w = world();
        let old = w.credentials().members[1].refresh_token.clone();
        w.revoke(1);
        let auth = w.connect_next().unwrap();
        let (access, refresh, i) = w.exchange_auth_token(&auth).unwrap();
        assert_eq!(i, 1);
        assert_ne!(refresh, old);
        assert_eq!(w.bearer(&access.token), Some(1));
        assert!(w.exchange_auth_token(&auth).is_none(), "single use");
        // The next connection takes the first outsider.
        let auth = w.connect_next().unwrap();
        assert_eq!(w.exchange_auth_token(&auth).unwrap().2, w.cfg.members);
    }

    #[test]
    fn a_fault_is_used_up_after_count_matching_requests() {
        let mut w = world();
        w.inject(Fault::new("poll", 2, FaultKind::Unauthorized));
        assert_eq!(w.take_fault("GET /api/v1/document/{id}"), None);
        assert!(w.take_fault("GET /api/v1/document/poll").is_some());
        assert!(w.take_fault("GET /api/v1/document/poll").is_some());
        assert_eq!(w.take_fault("GET /api/v1/document/poll"), None);
    }

    #[test]
    fn the_poll_and_list_indices_agree_with_a_scan_of_every_document() {
        let mut w = world();
        super::super::traffic::seed_history(&mut w);
        for _ in 0..200 {
            super::super::traffic::step(&mut w);
        }
        let since = w.now() - TimeDelta::seconds(100);
        for m in 0..w.businesses.len() {
            let mut scan: Vec<&Document> = w
                .documents
                .iter()
                .filter(|d| d.updated_at >= since && w.side(d, m).is_some())
                .collect();
            scan.sort_by_key(|d| d.updated_at);
            let ids: Vec<String> = scan.iter().map(|d| d.id.clone()).collect();
            let polled: Vec<String> = w
                .poll(m, Some(since))
                .iter()
                .map(|v| v["document_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(polled, ids, "poll of business {m}");
            for side in [Side::Send, Side::Receive] {
                let mut scan: Vec<usize> = (0..w.documents.len())
                    .filter(|&i| w.side(&w.documents[i], m) == Some(side))
                    .collect();
                scan.sort_by_key(|&i| (w.documents[i].created_at, i));
                assert_eq!(
                    w.list(m, side, None),
                    scan,
                    "list of business {m}, {side:?}"
                );
            }
        }
    }
}
