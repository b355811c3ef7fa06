//! Group ids: one per label set (`cluster`, `backend_type`). The kernel
//! aggregates per group, so a group's counters only ever grow; a process
//! whose labels change moves to another group from then on.
use std::collections::HashMap;

use agent_common::{
    config::{DEFAULT_MAX_GROUPS, MAX_GROUPS},
    stats::UNASSIGNED_GROUP,
};

// The kernel counts unclassified processes in group 0: `labels[0]` below.
const _: () = assert!(UNASSIGNED_GROUP == 0);

/// Label values of group 0 (processes not classified yet).
pub const UNASSIGNED_CLUSTER: &str = "unattributed";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub cluster: String,
    pub backend_type: String,
}

#[derive(Debug)]
pub struct Groups {
    ids: HashMap<Labels, u32>,
    labels: Vec<Labels>,
    clusters: HashMap<String, u32>,
    /// Ids are below this (the kernel's `GROUP_STATS` has this many entries).
    capacity: u32,
}

impl Default for Groups {
    fn default() -> Self {
        Self::new()
    }
}

impl Groups {
    /// Groups with the default capacity.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MAX_GROUPS)
    }

    /// Groups whose ids stay below `capacity` (2 to `MAX_GROUPS`).
    pub fn with_capacity(capacity: u32) -> Self {
        let unassigned = Labels {
            cluster: UNASSIGNED_CLUSTER.into(),
            backend_type: "other".into(),
        };
        Self {
            ids: HashMap::new(),
            labels: vec![unassigned],
            clusters: HashMap::new(),
            capacity: capacity.clamp(2, MAX_GROUPS),
        }
    }

    /// The group of a label set, allocated on first use. When all ids are
    /// taken, the label set shares the last id, labelled `cluster="overflow"`.
    pub fn id(&mut self, cluster: &str, backend_type: &str) -> u32 {
        let key = Labels {
            cluster: cluster.into(),
            backend_type: backend_type.into(),
        };
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.labels.len() as u32;
        let last = self.capacity - 1;
        if id >= last {
            let overflow = Labels {
                cluster: "overflow".into(),
                backend_type: "other".into(),
            };
            if self.labels.len() < self.capacity as usize {
                log::warn!(
                    "more than {} label sets; new ones are counted as cluster=\"overflow\" (raise --max-groups, at most {MAX_GROUPS})",
                    last - 1
                );
                self.labels.push(overflow);
            }
            return last;
        }
        self.labels.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    /// A small id per cluster: futex addresses are matched within one.
    pub fn cluster_id(&mut self, cluster: &str) -> u32 {
        let next = self.clusters.len() as u32 + 1;
        *self.clusters.entry(cluster.to_string()).or_insert(next)
    }

    /// The cluster label of a cluster id.
    pub fn cluster_name(&self, id: u32) -> Option<&str> {
        self.clusters
            .iter()
            .find(|(_, &v)| v == id)
            .map(|(k, _)| k.as_str())
    }

    pub fn labels(&self, id: u32) -> Option<&Labels> {
        self.labels.get(id as usize)
    }

    /// Every allocated group, with group 0 first.
    pub fn all(&self) -> impl Iterator<Item = (u32, &Labels)> {
        self.labels.iter().enumerate().map(|(i, l)| (i as u32, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_start_after_unassigned() {
        let mut g = Groups::new();
        let a = g.id("/data", "client backend");
        let b = g.id("/data", "checkpointer");
        assert_eq!(a, 1);
        assert_eq!(b, 2);
        assert_eq!(g.id("/data", "client backend"), a);
        assert_eq!(g.labels(0).unwrap().cluster, UNASSIGNED_CLUSTER);
        assert_eq!(g.labels(b).unwrap().backend_type, "checkpointer");
    }

    #[test]
    fn overflow_shares_the_last_id() {
        for cap in [DEFAULT_MAX_GROUPS, MAX_GROUPS, 2] {
            let mut g = Groups::with_capacity(cap);
            for i in 0..(cap + 10) {
                let id = g.id(&format!("pid:{i}"), "other");
                assert!(id < cap);
            }
            assert_eq!(g.labels(cap - 1).unwrap().cluster, "overflow");
            assert_eq!(g.all().count(), cap as usize);
        }
        // The default holds 126 label sets of their own.
        let mut g = Groups::new();
        for i in 1..=126 {
            assert_eq!(g.id(&format!("/c{}", i / 12), &format!("t{i}")), i);
        }
        assert_eq!(g.id("/another", "client backend"), DEFAULT_MAX_GROUPS - 1);
        assert_eq!(g.labels(127).unwrap().cluster, "overflow");
    }

    #[test]
    fn cluster_ids_are_per_cluster() {
        let mut g = Groups::new();
        let a = g.cluster_id("/a");
        let b = g.cluster_id("/b");
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_eq!(g.cluster_id("/a"), a);
    }
}
