//! Group ids: one per label set (`cluster`, `backend_type`). The kernel
//! aggregates per group, so a group's counters only ever grow; a process
//! whose labels change moves to another group from then on.
use std::collections::HashMap;

use agent_common::{config::MAX_GROUPS, stats::UNASSIGNED_GROUP};

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
}

impl Default for Groups {
    fn default() -> Self {
        Self::new()
    }
}

impl Groups {
    pub fn new() -> Self {
        let unassigned = Labels {
            cluster: UNASSIGNED_CLUSTER.into(),
            backend_type: "other".into(),
        };
        Self {
            ids: HashMap::new(),
            labels: vec![unassigned],
            clusters: HashMap::new(),
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
        if id >= MAX_GROUPS - 1 {
            let overflow = Labels {
                cluster: "overflow".into(),
                backend_type: "other".into(),
            };
            if self.labels.len() < MAX_GROUPS as usize {
                log::warn!(
                    "more than {} label sets; new ones are counted as cluster=\"overflow\"",
                    MAX_GROUPS - 1
                );
                self.labels.push(overflow);
            }
            return MAX_GROUPS - 1;
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
        let mut g = Groups::new();
        for i in 0..(MAX_GROUPS + 10) {
            let id = g.id(&format!("pid:{i}"), "other");
            assert!(id < MAX_GROUPS);
        }
        assert_eq!(g.labels(MAX_GROUPS - 1).unwrap().cluster, "overflow");
        assert_eq!(g.all().count(), MAX_GROUPS as usize);
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
