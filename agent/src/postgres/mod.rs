//! What the agent knows about PostgreSQL: its processes and their backend
//! types (from /proc), the label sets (cluster, backend type) they are
//! counted under, the table of traced processes, their starts and lifetimes,
//! spinlock call sites, and where each cluster's shared memory lies.
pub mod backend_type;
pub mod groups;
pub mod processes;
pub mod shared_memory;
pub mod spin_sites;
pub mod starts;
pub mod tracker;
