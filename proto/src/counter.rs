//! Counters that add up across sites.
//!
//! A key changed only by INCR, INCRBY, DECR, DECRBY and INCRBYFLOAT since its last SET or DEL (its
//! *reset*) keeps, besides its value, one contribution per origin site: what that site's increments since
//! the reset add up to. Only the site itself changes its contribution (its own writes to a key are
//! linearizable), so each contribution carries a version that orders it, and two copies of a counter
//! on the same reset merge by taking, per site, the contribution with the greater version. Merging is
//! commutative, associative and idempotent, so sites that exchanged their copies in any order, any
//! number of times, hold the same counter: the reset's value plus every site's increments.
//!
//! A SET or DEL is a reset: the record it writes carries no counter. Copies on different resets do not
//! merge; the newer copy by the order of copies wins whole, as for any other write. So increments
//! concurrent with a reset in another site survive only if they are stamped after it (they then build on
//! the value they saw, and the concurrent SET or DEL is lost like any concurrent write); if the reset
//! is the newer, the concurrent increments are lost.
//!
//! The record's value is always the counter's current total as text (what GET returns), computed by
//! whoever wrote the copy from the contributions it knew.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::record::Order;

/// One site's increments since the reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    pub origin: u32,
    /// Sum of its integer increments (INCR, INCRBY, DECR, DECRBY).
    pub int: i64,
    /// Sum of its INCRBYFLOAT increments, as `f64` bits (so that records stay `Eq`).
    pub float_bits: u64,
    /// +1 per increment by this site: the newer of two versions of one site's contribution.
    pub version: u64,
}

impl Contribution {
    pub fn float(&self) -> f64 {
        f64::from_bits(self.float_bits)
    }
}

/// What a counter is made of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The write the increments build on: the copy that was there at the first increment (a SET, the
    /// tombstone of a DEL), or the zero order when there was none.
    pub reset: Order,
    /// The value that write left (empty for none, a delete, or an expired copy: 0).
    pub base: Bytes,
    /// Per site, sorted by origin.
    pub sites: Vec<Contribution>,
}

impl Counter {
    /// A counter starting on `reset` (whose value was `base`).
    pub fn on(reset: Order, base: Bytes) -> Counter {
        Counter { reset, base, sites: Vec::new() }
    }

    /// Adds `int` and `float` to `origin`'s contribution.
    pub fn add(&mut self, origin: u32, int: i64, float: f64) {
        let i = match self.sites.binary_search_by_key(&origin, |c| c.origin) {
            Ok(i) => i,
            Err(i) => {
                self.sites.insert(i, Contribution { origin, int: 0, float_bits: 0f64.to_bits(), version: 0 });
                i
            }
        };
        let c = &mut self.sites[i];
        c.int = c.int.wrapping_add(int);
        if float != 0.0 {
            c.float_bits = (c.float() + float).to_bits();
        }
        c.version += 1;
    }

    /// Whether `self` and `other` count increments on the same reset (and so merge).
    pub fn same_reset(&self, other: &Counter) -> bool {
        self.reset == other.reset && self.base == other.base
    }

    /// Per site, the newer contribution of the two. Only meaningful on the same reset.
    pub fn merge(&self, other: &Counter) -> Counter {
        let mut sites = self.sites.clone();
        for theirs in &other.sites {
            match sites.binary_search_by_key(&theirs.origin, |c| c.origin) {
                Ok(i) if sites[i].version < theirs.version => sites[i] = *theirs,
                Ok(_) => {}
                Err(i) => sites.insert(i, *theirs),
            }
        }
        Counter { reset: self.reset, base: self.base.clone(), sites }
    }

    /// The total as Redis would print it: an integer while the base and every increment are integers,
    /// else a float in INCRBYFLOAT's format. `None` when the base is not a number (never written so:
    /// an increment on a non-number is refused).
    pub fn total(&self, format_float: fn(f64) -> String) -> Option<Bytes> {
        let floats: f64 = self.sites.iter().map(Contribution::float).sum();
        let ints: i128 = self.sites.iter().map(|c| c.int as i128).sum();
        let base = std::str::from_utf8(&self.base).ok()?;
        let base_int = if base.is_empty() { Some(0) } else { base.parse::<i64>().ok() };
        let any_float = self.sites.iter().any(|c| c.float_bits != 0f64.to_bits());
        match base_int {
            Some(b) if !any_float => Some(Bytes::from((b as i128 + ints).to_string())),
            _ => {
                let b = if base.is_empty() { 0.0 } else { base.parse::<f64>().ok()? };
                Some(Bytes::from(format_float(b + ints as f64 + floats)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plain(f: f64) -> String {
        f.to_string()
    }

    #[test]
    fn a_counter_adds_every_sites_increments_to_its_base() {
        let reset = Order { hlc: 5, origin: 1, writer: Default::default() };
        let mut a = Counter::on(reset, Bytes::from_static(b"10"));
        a.add(1, 3, 0.0);
        let mut b = a.clone();
        a.add(1, 2, 0.0);
        b.add(2, -4, 0.0);
        let m = a.merge(&b);
        assert_eq!(m, b.merge(&a));
        assert_eq!(m.total(plain).unwrap(), "11");
        assert_eq!(m.merge(&a).merge(&b), m, "merging again changes nothing");
        let mut f = m.clone();
        f.add(3, 0, 0.5);
        assert_eq!(f.total(plain).unwrap(), "11.5");
        assert_eq!(Counter::on(reset, Bytes::new()).total(plain).unwrap(), "0");
        assert_eq!(Counter::on(reset, Bytes::from_static(b"x")).total(plain), None);
    }

    proptest! {
        /// Three sites increment, exchanging copies at random: every order of merges ends at the sum.
        #[test]
        fn merges_converge_to_the_sum(ops in proptest::collection::vec((0u32..3, -1000i64..1000, 0usize..3), 0..60)) {
            let start = Counter::on(Order { hlc: 1, origin: 0, writer: Default::default() }, Bytes::from_static(b"7"));
            let mut sites = [start.clone(), start.clone(), start];
            let mut sum = 7i64;
            for (site, delta, merge_from) in ops {
                let s = site as usize;
                sites[s].add(site + 1, delta, 0.0);
                sum += delta;
                let other = sites[merge_from].clone();
                sites[s] = sites[s].merge(&other);
            }
            let all = sites[0].merge(&sites[1]).merge(&sites[2]);
            let other_way = sites[2].merge(&sites[0]).merge(&sites[1]);
            prop_assert_eq!(&all, &other_way);
            prop_assert_eq!(all.total(plain).unwrap(), Bytes::from(sum.to_string()));
        }
    }
}
