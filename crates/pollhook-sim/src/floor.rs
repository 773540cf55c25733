//! The API cost floor as the simulator sees it: what a poller's requests cost, measured by the
//! simulator's own counters, against what they had to cost given what the simulator changed.
//!
//! This module owns the bookkeeping of *changes not yet read*: every document (per business
//! that sees it) and every OnlinePajak invoice (per company) whose `updated_at` moved since
//! that unit's previous read. A CamInvoice poll answer reads a member's pending documents: each
//! needs one detail call. An OnlinePajak walk (Bulk Fetch pages until one comes back short)
//! reads a company's pending invoices: they need one page per [`PAGE_FLOOR_SIZE`], at least
//! one. Nothing here looks at what the daemon reports about itself; tests grade the daemon's
//! cost with [`Cost`] alone. History (changes stamped before the simulator was built) is not
//! counted: it predates any poller.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The largest Bulk Fetch page the simulated OnlinePajak serves: the floor's page size.
pub const PAGE_FLOOR_SIZE: usize = super::onlinepajak::MAX_PAGE_SIZE;

/// A poller's API cost as the simulator counted it, and the floor of that cost.
///
/// Polls and walks are the poller's schedule (one per member, or company, per cycle): they are
/// counted, and the test that drives the cycles checks their number; the rest is graded
/// against what the simulator changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// `GET /api/v1/document/poll` requests received.
    pub polls: u64,
    /// `GET /api/v1/document/{id}` requests received.
    pub details: u64,
    /// Detail calls the changes required: at each poll answer, the documents the member sees
    /// that changed since its previous poll answer — for a customer, only a document it sees
    /// for the first time (its later changes produce no webhook for the customer).
    pub details_needed: u64,
    /// `GET /v2.0/invoices/sale` (Bulk Fetch) requests received.
    pub bulk_fetches: u64,
    /// Bulk Fetch walks that ended (a page shorter than asked for).
    pub walks: u64,
    /// Bulk Fetch pages the changes required: per walk, one per [`PAGE_FLOOR_SIZE`] invoices
    /// of the company changed since its previous walk, at least one (the ask itself).
    pub bulk_fetches_needed: u64,
    /// `GET /v2.0/invoices/sale/{id}` (Retrieve) requests received. The simulator's Bulk Fetch
    /// items are complete, so none is needed.
    pub retrieves: u64,
}

impl Cost {
    /// The requests of the kinds the floor counts.
    pub fn requests(&self) -> u64 {
        self.polls + self.details + self.bulk_fetches + self.retrieves
    }

    /// The fewest requests that could have read every change, for the polls the poller made.
    pub fn floor(&self) -> u64 {
        self.polls + self.details_needed + self.bulk_fetches_needed
    }

    /// What happened between `earlier` and `self` (both from the same simulator).
    pub fn since(&self, earlier: &Cost) -> Cost {
        Cost {
            polls: self.polls - earlier.polls,
            details: self.details - earlier.details,
            details_needed: self.details_needed - earlier.details_needed,
            bulk_fetches: self.bulk_fetches - earlier.bulk_fetches,
            walks: self.walks - earlier.walks,
            bulk_fetches_needed: self.bulk_fetches_needed - earlier.bulk_fetches_needed,
            retrieves: self.retrieves - earlier.retrieves,
        }
    }
}

/// Items changed per unit since the unit's last read, and how many reads were needed.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Changes stamped before this are history, not counted.
    since: DateTime<Utc>,
    by_unit: BTreeMap<usize, BTreeSet<usize>>,
    /// Item reads the changes required so far (detail calls, or Bulk Fetch pages).
    pub needed: u64,
    /// Reads completed (poll answers, walks).
    pub reads: u64,
}

impl Pending {
    pub fn new(since: DateTime<Utc>) -> Pending {
        Pending {
            since,
            by_unit: BTreeMap::new(),
            needed: 0,
            reads: 0,
        }
    }

    /// Item `item`, seen by `unit`, changed at `at`.
    pub fn changed(&mut self, unit: usize, item: usize, at: DateTime<Utc>) {
        if at >= self.since {
            self.by_unit.entry(unit).or_default().insert(item);
        }
    }

    /// `unit` read its changes: one item read each (a CamInvoice poll answer).
    pub fn read_each(&mut self, unit: usize) {
        self.needed += self.take(unit);
        self.reads += 1;
    }

    /// `unit` read its changes in pages of `size` (an OnlinePajak walk), at least one page.
    pub fn read_paged(&mut self, unit: usize, size: usize) {
        self.needed += self.take(unit).div_ceil(size.max(1) as u64).max(1);
        self.reads += 1;
    }

    fn take(&mut self, unit: usize) -> u64 {
        self.by_unit.remove(&unit).map_or(0, |s| s.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_needed_once_per_read_and_history_not_at_all() {
        let start = Utc::now();
        let mut p = Pending::new(start);
        p.changed(0, 7, start - chrono::TimeDelta::hours(1)); // history
        p.changed(0, 1, start);
        p.changed(0, 1, start); // the same document twice before a read: one detail
        p.changed(0, 2, start);
        p.changed(1, 1, start); // the other party of document 1
        p.read_each(0);
        assert_eq!((p.needed, p.reads), (2, 1));
        p.read_each(0);
        assert_eq!((p.needed, p.reads), (2, 2), "nothing changed since");
        p.read_each(1);
        assert_eq!(p.needed, 3);
    }

    #[test]
    fn a_walk_needs_one_page_per_page_size_and_at_least_one() {
        let start = Utc::now();
        let mut p = Pending::new(start);
        p.read_paged(0, 100);
        assert_eq!(p.needed, 1, "an empty walk still asks once");
        for i in 0..201 {
            p.changed(0, i, start);
        }
        p.read_paged(0, 100);
        assert_eq!((p.needed, p.reads), (4, 2));
    }
}
