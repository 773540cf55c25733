//! Member sharding: which daemon of a fleet polls which member.
//!
//! `[daemon] shard = "K/N"` makes this daemon poll only the members (CamInvoice endpoint ids,
//! OnlinePajak companies) that a stable hash of `(account, member)` assigns to shard K of N.
//! Every shard reads the same config; each has its own state dir. The hash is SHA-256 of the
//! length-prefixed account and member (the same on every platform and version) fed to a jump
//! consistent hash (Lamping and Veach, 2014): going from N to N+1 shards moves only the members
//! that the new shard takes, about 1/(N+1) of them, and no member moves between old shards.
//! SCALING.md has the procedure for changing N. Pure: no I/O.

use sha2::{Digest, Sha256};
use std::fmt;

/// The most shards a fleet may have.
pub const MAX_SHARDS: u32 = 4096;

/// This daemon's part of the fleet: shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl Shard {
    /// An unsharded daemon: it owns every member.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `"K/N"` (1 <= K <= N <= [`MAX_SHARDS`]).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not of the form \"K/N\""))?;
        let num = |s: &str| s.trim().parse::<u32>().ok();
        match (num(k), num(n)) {
            (Some(index), Some(count))
                if (1..=MAX_SHARDS).contains(&count) && (1..=count).contains(&index) =>
            {
                Ok(Shard { index, count })
            }
            (Some(_), Some(_)) => Err(format!(
                "{text:?}: K must be between 1 and N, and N between 1 and {MAX_SHARDS}"
            )),
            _ => Err(format!("{text:?} is not of the form \"K/N\"")),
        }
    }

    /// How many shards the fleet has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this daemon is one of several.
    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// Whether this shard polls `member` of `account`.
    pub fn owns(&self, account: &str, member: &str) -> bool {
        self.count == 1 || owner(account, member, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (1-based) that owns `member` of `account` in a fleet of `count`.
pub fn owner(account: &str, member: &str, count: u32) -> u32 {
    let mut h = Sha256::new();
    for part in [account, member] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let key = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    jump(key, count) + 1
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`.
fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n_and_rejects_the_rest() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        assert_eq!(Shard::parse("1/1").unwrap(), Shard::ALL);
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "1/5000", "", "/", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Shard::parse("2/3").unwrap().to_string(), "2/3");
    }

    #[test]
    fn every_member_has_exactly_one_owner_and_the_split_is_even() {
        let n = 3;
        let shards: Vec<Shard> = (1..=n).map(|k| Shard { index: k, count: n }).collect();
        let mut per_shard = vec![0usize; n as usize];
        for m in 0..3000 {
            let member = format!("KHUID{m:08}");
            let owners: Vec<usize> = (0..shards.len())
                .filter(|&i| shards[i].owns("acme", &member))
                .collect();
            assert_eq!(owners.len(), 1, "{member}: {owners:?}");
            per_shard[owners[0]] += 1;
        }
        for c in per_shard {
            assert!((850..1150).contains(&c), "uneven split: {c} of 3000");
        }
    }

    #[test]
    fn the_hash_is_stable_and_depends_on_the_account() {
        // Fixed values: a change here re-shards every deployed fleet.
        assert_eq!(owner("acme", "KHUID00001234", 3), 3);
        assert_eq!(owner("acme", "KHUID00001235", 3), 2);
        assert_eq!(owner("other", "KHUID00001234", 7), 7);
        assert_eq!(jump(0, 1), 0);
        let differs = (0..100).any(|m| {
            let member = m.to_string();
            owner("a", &member, 5) != owner("b", &member, 5)
        });
        assert!(differs);
    }

    #[test]
    fn growing_the_fleet_moves_members_only_to_the_new_shard() {
        let mut moved = 0;
        for m in 0..5000 {
            let member = format!("m{m}");
            let (before, after) = (owner("acme", &member, 4), owner("acme", &member, 5));
            if before != after {
                assert_eq!(after, 5, "{member} moved from {before} to {after}");
                moved += 1;
            }
        }
        assert!((800..1200).contains(&moved), "{moved} of 5000 moved");
    }
}
