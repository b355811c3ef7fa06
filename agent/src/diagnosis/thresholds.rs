//! Every threshold of the diagnosis, in one place. The README's
//! "Diagnosis thresholds" table lists each with its reason (a unit test
//! keeps the two in step), and the alert rules in
//! `deploy/prometheus/pgpreempt-rules.yml` use the alert levels
//! (`agent/tests/deploy_files.rs` checks them).
//!
//! Shares are of the PostgreSQL processes' *active* time: on a CPU,
//! waiting for one, or waiting for a lock (`Figures::active_seconds`).

/// Below this much active time per second (0.05 s/s: a twentieth of one
/// CPU kept busy or waiting by all PostgreSQL processes together) the
/// database is close to idle: shares of so little time are noise, and
/// nothing is called significant.
pub const MIN_ACTIVE_SECONDS_PER_SECOND: f64 = 0.05;

/// CPU saturation: run-queue time (after preemption and after wakeup) is
/// at least this share of active time. A backend that waits for a CPU a
/// tenth of the time it needs is visibly slower; healthy hosts measured
/// here stay under 5% (README, "Diagnosing an incident").
pub const CPU_SATURATION_SHARE: f64 = 0.10;
/// The alert level: a quarter of the active time spent in run queues.
pub const CPU_SATURATION_ALERT_SHARE: f64 = 0.25;

/// Lock-holder preemption: waiter delay (lock waiting while the holder
/// that ends it sat preempted) is at least this share of all lock
/// waiting...
pub const HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT: f64 = 0.10;
/// ...and at least this many seconds per second (a few long waits on a
/// nearly idle cluster are not an incident).
pub const HOLDER_PREEMPTION_MIN_SECONDS_PER_SECOND: f64 = 0.01;
/// The alert level, as in the `PgpreemptLockHolderPreemptionCost` rule:
/// a fifth of lock waiting, and 0.05 s/s.
pub const HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT: f64 = 0.20;
pub const HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND: f64 = 0.05;

/// Spinlock contention: time inside `s_lock` (spinning, its sleeps, and
/// preemptions while in it) is at least this share of active time.
/// `s_lock` runs only when a spinlock is contended, so any share at all is
/// contention; 2% is where it starts to cost throughput.
pub const SPIN_SHARE: f64 = 0.02;
/// The alert level, as in the `PgpreemptSpinlockContention` rule: one call
/// site spending a tenth of a CPU in `s_lock`.
pub const SPIN_SITE_ALERT_SECONDS_PER_SECOND: f64 = 0.1;

/// Shared memory on 4 KB pages: page faults per second on a cluster's
/// main shared memory segment while it is not on huge pages. The same
/// level as the `PgpreemptSharedMemoryFaultsWithoutHugePages` alert: a
/// backend faults in every page it touches once, so a steady rate this
/// high means new backends or a segment still being touched. The finding
/// is called on the count alone: its time is an estimate (below), and the
/// harm that matters most, a fault taken while holding a spinlock that
/// others spin on, is not in that estimate.
pub const MAIN_SHARED_FAULTS_PER_SECOND: f64 = 1000.0;
/// A page fault that maps a shared-memory page already in memory takes
/// about this long (a minor fault; the kernel gives no tracepoint at the
/// end of a fault, so faults are counted, not timed). The 4 KB pages
/// finding is sized with it, and says so.
pub const MINOR_FAULT_SECONDS: f64 = 1e-6;

/// Memory stalls: direct and cgroup reclaim, compaction and `mmap_lock`
/// waits together are at least this share of active time...
pub const MEMORY_STALL_SHARE: f64 = 0.02;
/// ...and at least this many seconds per second.
pub const MEMORY_STALL_MIN_SECONDS_PER_SECOND: f64 = 0.005;
/// The alert level: a twentieth of the active time stalled on memory.
pub const MEMORY_STALL_ALERT_SHARE: f64 = 0.05;

/// NUMA balancing is named in the memory finding's evidence from this
/// many task moves per second.
pub const NUMA_MIGRATIONS_PER_SECOND: f64 = 1.0;

/// Connection churn: client backends started at least this many times a
/// second...
pub const CONNECTION_CHURN_STARTS_PER_SECOND: f64 = 10.0;
/// ...that lived at most this long on average.
pub const CONNECTION_CHURN_MEAN_LIFETIME_SECONDS: f64 = 10.0;

/// The thresholds by name, for the README table test and `--json`.
pub const ALL: &[(&str, f64)] = &[
    (
        "MIN_ACTIVE_SECONDS_PER_SECOND",
        MIN_ACTIVE_SECONDS_PER_SECOND,
    ),
    ("CPU_SATURATION_SHARE", CPU_SATURATION_SHARE),
    ("CPU_SATURATION_ALERT_SHARE", CPU_SATURATION_ALERT_SHARE),
    (
        "HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT",
        HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT,
    ),
    (
        "HOLDER_PREEMPTION_MIN_SECONDS_PER_SECOND",
        HOLDER_PREEMPTION_MIN_SECONDS_PER_SECOND,
    ),
    (
        "HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT",
        HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT,
    ),
    (
        "HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND",
        HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND,
    ),
    ("SPIN_SHARE", SPIN_SHARE),
    (
        "SPIN_SITE_ALERT_SECONDS_PER_SECOND",
        SPIN_SITE_ALERT_SECONDS_PER_SECOND,
    ),
    (
        "MAIN_SHARED_FAULTS_PER_SECOND",
        MAIN_SHARED_FAULTS_PER_SECOND,
    ),
    ("MINOR_FAULT_SECONDS", MINOR_FAULT_SECONDS),
    ("MEMORY_STALL_SHARE", MEMORY_STALL_SHARE),
    (
        "MEMORY_STALL_MIN_SECONDS_PER_SECOND",
        MEMORY_STALL_MIN_SECONDS_PER_SECOND,
    ),
    ("MEMORY_STALL_ALERT_SHARE", MEMORY_STALL_ALERT_SHARE),
    ("NUMA_MIGRATIONS_PER_SECOND", NUMA_MIGRATIONS_PER_SECOND),
    (
        "CONNECTION_CHURN_STARTS_PER_SECOND",
        CONNECTION_CHURN_STARTS_PER_SECOND,
    ),
    (
        "CONNECTION_CHURN_MEAN_LIFETIME_SECONDS",
        CONNECTION_CHURN_MEAN_LIFETIME_SECONDS,
    ),
];
