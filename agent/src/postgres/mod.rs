//! What the agent knows about PostgreSQL: its processes and their backend
//! types (from /proc), the label sets (cluster, backend type) they are
//! counted under, the table of traced processes, and spinlock call sites.
pub mod backend_type;
pub mod groups;
pub mod processes;
pub mod spin_sites;
pub mod tracker;
