//! The adaptive scheduler's record per member (`mode = "adaptive"`): its change-rate estimate
//! and its next poll, so a restart neither forgets which members are busy nor polls every
//! member at once. One tree, `schedule`, keyed like the progress records (`account \0 unit`);
//! the value is a versioned fixed-size record ([`ScheduleRecord`]). It is a cache of what the
//! polls taught: not in backups (a restored store relearns it within a day; new members start
//! at the fleet's rate), written after each poll outside the commit (a crash loses one
//! observation).

use super::keys::Unit;
use super::{Store, StoreError};

/// The tree's name.
const TREE: &str = "schedule";
/// The record's layout version (its first byte).
const VERSION: u8 = 1;
/// version, observed_at, count, exposure, spread, due, changed.
const LEN: usize = 1 + 5 * 8 + 1;

/// One member's adaptive schedule, as stored (see `adaptive::RateState` for the meaning).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleRecord {
    /// The last poll folded into the estimate (ms since the epoch).
    pub observed_at: i64,
    /// Changes seen, weighted by age.
    pub count: f64,
    /// Seconds observed, weighted the same way.
    pub exposure: f64,
    /// The measured variance of `count`.
    pub spread: f64,
    /// The last poll saw changes.
    pub changed: bool,
    /// The next planned poll (ms since the epoch).
    pub due: i64,
}

impl ScheduleRecord {
    fn encode(&self) -> [u8; LEN] {
        let mut v = [0u8; LEN];
        v[0] = VERSION;
        v[1..9].copy_from_slice(&self.observed_at.to_be_bytes());
        v[9..17].copy_from_slice(&self.count.to_be_bytes());
        v[17..25].copy_from_slice(&self.exposure.to_be_bytes());
        v[25..33].copy_from_slice(&self.spread.to_be_bytes());
        v[33..41].copy_from_slice(&self.due.to_be_bytes());
        v[41] = u8::from(self.changed);
        v
    }

    fn decode(v: &[u8]) -> Option<ScheduleRecord> {
        if v.len() != LEN || v[0] != VERSION || v[41] > 1 {
            return None;
        }
        let word = |at: usize| <[u8; 8]>::try_from(&v[at..at + 8]).expect("in bounds");
        let f = |at: usize| f64::from_be_bytes(word(at));
        let r = ScheduleRecord {
            observed_at: i64::from_be_bytes(word(1)),
            count: f(9),
            exposure: f(17),
            spread: f(25),
            due: i64::from_be_bytes(word(33)),
            changed: v[41] == 1,
        };
        // Absurd numbers are no estimate: the member starts over at the fleet's rate.
        let sane = |x: f64| x.is_finite() && x >= 0.0;
        (sane(r.count) && sane(r.exposure) && sane(r.spread)).then_some(r)
    }
}

impl Store {
    /// The schedule record of `unit`; `None` if it has none, or if what is stored is not a
    /// record this build reads (a cache: the member starts over, nothing else is affected).
    pub fn get_schedule(&self, unit: Unit) -> Result<Option<ScheduleRecord>, StoreError> {
        let tree = self.db.open_tree(TREE)?;
        Ok(tree
            .get(unit.key())?
            .and_then(|v| ScheduleRecord::decode(&v)))
    }

    /// Writes the schedule record of `unit` (flushed with the next commit's flush).
    pub fn put_schedule(&self, unit: Unit, record: &ScheduleRecord) -> Result<(), StoreError> {
        let tree = self.db.open_tree(TREE)?;
        tree.insert(unit.key(), &record.encode()[..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_record_survives_a_reopen_and_garbage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ScheduleRecord {
            observed_at: 1_700_000_000_000,
            count: 12.5,
            exposure: 80_000.0,
            spread: 30.25,
            changed: true,
            due: 1_700_000_030_000,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.get_schedule(Unit::new("a", "m1")).unwrap(), None);
            store.put_schedule(Unit::new("a", "m1"), &rec).unwrap();
            store
                .db
                .open_tree(TREE)
                .unwrap()
                .insert(Unit::new("a", "m2").key(), &b"junk"[..])
                .unwrap();
            let mut nan = rec.encode();
            nan[9..17].copy_from_slice(&f64::NAN.to_be_bytes());
            store
                .db
                .open_tree(TREE)
                .unwrap()
                .insert(Unit::new("a", "m3").key(), &nan[..])
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_schedule(Unit::new("a", "m1")).unwrap(), Some(rec));
        assert_eq!(store.get_schedule(Unit::new("b", "m1")).unwrap(), None);
        assert_eq!(store.get_schedule(Unit::new("a", "m2")).unwrap(), None);
        assert_eq!(store.get_schedule(Unit::new("a", "m3")).unwrap(), None);
    }
}
