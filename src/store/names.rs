//! Interned names (schema 3): accounts and units get small numbers, so that a document record
//! in a bucket starts with one or two bytes instead of the member's endpoint id, and progress
//! keys stay short. The numbers live in the `data` tree (`n` keys, see `keys.rs`) and, for
//! the life of the store, in memory both ways ([`Names`]: a few entries per unit; a
//! 1,000-member account is some 100 KB).
//!
//! A commit that names a unit not yet numbered numbers it in the same atomic batch (the one
//! committer allocates, so numbers never collide); the memory map learns the number only once
//! that batch is applied.

use super::codec::{get_uvarint, put_uvarint};
use super::keys::{self, UnitNo, NAMES};
use super::{StoreError, Unit};
use std::collections::HashMap;

/// Every interned name, both ways.
#[derive(Debug, Default, Clone)]
pub(super) struct Names {
    accounts: HashMap<String, u64>,
    account_names: HashMap<u64, String>,
    units: HashMap<(u64, String), u64>,
    unit_names: HashMap<UnitNo, String>,
    /// The greatest unit number of each account.
    last_unit: HashMap<u64, u64>,
    last_account: u64,
}

/// Names a commit numbers: their `n` records, and what to learn once they are written.
#[derive(Debug, Default)]
pub(super) struct Numbering {
    pub(super) records: Vec<(Vec<u8>, Vec<u8>)>,
    accounts: Vec<(String, u64)>,
    units: Vec<(u64, String, u64)>,
}

impl Names {
    /// Reads every `n` record of the `data` tree.
    pub(super) fn load(data: &sled::Tree) -> Result<Names, StoreError> {
        let mut n = Names::default();
        let bad = || StoreError::Corrupt("an interned name (n)".into());
        for kv in data.scan_prefix([NAMES]) {
            let (k, v) = kv?;
            let (no, used) = get_uvarint(&v).ok_or_else(bad)?;
            if used != v.len() || no == 0 {
                return Err(bad());
            }
            match &k[1..] {
                [b'a', name @ ..] => {
                    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
                    n.learn_account(name, no);
                }
                [b'u', rest @ ..] => {
                    let (account, used) = get_uvarint(rest).ok_or_else(bad)?;
                    let name = String::from_utf8(rest[used..].to_vec()).map_err(|_| bad())?;
                    n.learn_unit(account, name, no);
                }
                _ => return Err(bad()),
            }
        }
        Ok(n)
    }

    fn learn_account(&mut self, name: String, no: u64) {
        self.last_account = self.last_account.max(no);
        self.account_names.insert(no, name.clone());
        self.accounts.insert(name, no);
    }

    fn learn_unit(&mut self, account: u64, name: String, no: u64) {
        let last = self.last_unit.entry(account).or_default();
        *last = (*last).max(no);
        self.unit_names
            .insert(UnitNo { account, unit: no }, name.clone());
        self.units.insert((account, name), no);
    }

    pub(super) fn account(&self, account: &str) -> Option<u64> {
        self.accounts.get(account).copied()
    }

    /// The numbers of `unit`, if it has them.
    pub(super) fn unit(&self, unit: Unit) -> Option<UnitNo> {
        let account = self.account(unit.account)?;
        let no = *self.units.get(&(account, unit.id.to_string()))?;
        Some(UnitNo { account, unit: no })
    }

    pub(super) fn account_name(&self, no: u64) -> Option<&str> {
        self.account_names.get(&no).map(String::as_str)
    }

    pub(super) fn unit_name(&self, no: UnitNo) -> Option<&str> {
        self.unit_names.get(&no).map(String::as_str)
    }

    /// Every (account, unit) name by numbers.
    pub(super) fn units(&self) -> impl Iterator<Item = (UnitNo, &str)> {
        self.unit_names.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// The numbers of `unit`, numbering it (and its account) in `numbering` if needed. The
    /// caller writes `numbering.records` in its batch and calls [`Names::learn`] once written.
    pub(super) fn number(&self, unit: Unit, numbering: &mut Numbering) -> UnitNo {
        let account = match self.account(unit.account).or_else(|| {
            numbering
                .accounts
                .iter()
                .find(|(n, _)| n == unit.account)
                .map(|(_, no)| *no)
        }) {
            Some(no) => no,
            None => {
                let no = self.last_account + 1 + numbering.accounts.len() as u64;
                numbering.accounts.push((unit.account.to_string(), no));
                numbering
                    .records
                    .push((keys::account_name(unit.account), varint(no)));
                no
            }
        };
        if let Some(&no) = self.units.get(&(account, unit.id.to_string())) {
            return UnitNo { account, unit: no };
        }
        if let Some((_, _, no)) = numbering
            .units
            .iter()
            .find(|(a, n, _)| *a == account && n == unit.id)
        {
            return UnitNo { account, unit: *no };
        }
        let pending = numbering
            .units
            .iter()
            .filter(|(a, _, _)| *a == account)
            .count() as u64;
        let no = self.last_unit.get(&account).copied().unwrap_or(0) + 1 + pending;
        numbering.units.push((account, unit.id.to_string(), no));
        numbering
            .records
            .push((keys::unit_name(account, unit.id), varint(no)));
        UnitNo { account, unit: no }
    }

    /// Learns what `numbering` wrote.
    pub(super) fn learn(&mut self, numbering: Numbering) {
        for (name, no) in numbering.accounts {
            self.learn_account(name, no);
        }
        for (account, name, no) in numbering.units {
            self.learn_unit(account, name, no);
        }
    }
}

fn varint(n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(2);
    put_uvarint(&mut v, n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_is_stable_dense_and_learned_only_when_told() {
        let mut names = Names::default();
        let mut n = Numbering::default();
        let a = names.number(Unit::new("acme", "K1"), &mut n);
        let b = names.number(Unit::new("acme", "K2"), &mut n);
        let again = names.number(Unit::new("acme", "K1"), &mut n);
        let c = names.number(Unit::new("beta", "K1"), &mut n);
        assert_eq!(a, again);
        assert_eq!((a.account, a.unit, b.unit), (1, 1, 2));
        assert_eq!((c.account, c.unit), (2, 1));
        assert_eq!(n.records.len(), 5, "2 accounts, 3 units");
        assert_eq!(names.unit(Unit::new("acme", "K1")), None, "not learned yet");
        names.learn(n);
        assert_eq!(names.unit(Unit::new("acme", "K2")), Some(b));
        assert_eq!(names.unit_name(c), Some("K1"));
        assert_eq!(names.account_name(2), Some("beta"));
        let mut n = Numbering::default();
        let d = names.number(Unit::new("acme", "K3"), &mut n);
        assert_eq!((d.account, d.unit), (1, 3));
        assert_eq!(n.records.len(), 1);
    }
}
