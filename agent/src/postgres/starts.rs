//! Process starts and lifetimes per label set: how many processes the
//! clusters' processes forked while the agent ran (a connection without a
//! pooler is a new backend), and how long they lived. Both are counted once
//! a process's backend type is known (its title settled, or its exit), so a
//! new auxiliary process is not counted as the client backend it starts as.
use std::collections::BTreeMap;

use crate::postgres::groups::Labels;

/// Upper bounds of the lifetime histogram's finite buckets, in seconds: from
/// a backend that only authenticates (milliseconds) to a pooled connection
/// (hours).
pub const LIFETIME_BOUNDS: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 14400.0,
];

/// Lifetimes of the processes of one label set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lifetimes {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; LIFETIME_BOUNDS.len() + 1],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Lifetimes {
    pub fn observe(&mut self, seconds: f64) {
        let i = LIFETIME_BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LIFETIME_BOUNDS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// Starts and lifetimes since the agent started.
#[derive(Debug, Clone, Default)]
pub struct Starts {
    pub starts: BTreeMap<Labels, u64>,
    pub lifetimes: BTreeMap<Labels, Lifetimes>,
}

impl Starts {
    pub fn started(&mut self, labels: &Labels) {
        *self.starts.entry(labels.clone()).or_default() += 1;
    }

    pub fn lived(&mut self, labels: &Labels, seconds: f64) {
        self.lifetimes
            .entry(labels.clone())
            .or_default()
            .observe(seconds);
    }

    /// What was added since `older` (an earlier copy of the same counts).
    pub fn since(&self, older: &Starts) -> Starts {
        let starts = self
            .starts
            .iter()
            .map(|(l, n)| {
                let before = older.starts.get(l).copied().unwrap_or(0);
                (l.clone(), n.saturating_sub(before))
            })
            .collect();
        let lifetimes = self
            .lifetimes
            .iter()
            .map(|(l, h)| {
                let mut d = h.clone();
                if let Some(o) = older.lifetimes.get(l) {
                    for (b, ob) in d.buckets.iter_mut().zip(o.buckets.iter()) {
                        *b = b.saturating_sub(*ob);
                    }
                    d.count = d.count.saturating_sub(o.count);
                    d.sum_seconds = (d.sum_seconds - o.sum_seconds).max(0.0);
                }
                (l.clone(), d)
            })
            .collect();
        Starts { starts, lifetimes }
    }

    /// All starts of a cluster.
    pub fn of_cluster(&self, cluster: &str) -> u64 {
        self.starts
            .iter()
            .filter(|(l, _)| l.cluster == cluster)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_fall_in_the_first_bucket_that_holds_them() {
        let mut l = Lifetimes::default();
        l.observe(0.001);
        l.observe(0.0011);
        l.observe(7200.0);
        l.observe(1e6);
        assert_eq!(l.buckets[0], 1);
        assert_eq!(l.buckets[1], 1);
        assert_eq!(l.buckets[LIFETIME_BOUNDS.len() - 1], 1);
        assert_eq!(l.buckets[LIFETIME_BOUNDS.len()], 1);
        assert_eq!(l.count, 4);
    }
}
