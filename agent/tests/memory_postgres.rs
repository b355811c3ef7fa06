//! A real PostgreSQL's page faults on its main shared memory segment, with
//! huge pages off and on: the difference the Linux 7.0 slowdown turned on.
//! After a restart the buffer pool is empty and every backend faults in
//! each page of it that it touches; on 4 kB pages that is two faults per
//! 8 kB buffer, on 2 MB pages one per 256 buffers.
mod common;

use agent_common::stats::{counter, Counters};
use common::postgres::{run_polling, Cluster, HugePages};
use pgpreempt::{
    agent::{Agent, SharedMemory},
    config::Config,
    kernel::snapshot::add_counters,
    postgres::groups::UNASSIGNED_CLUSTER,
};

const SHARED_BUFFERS: &str = "shared_buffers=256MB";
/// pgbench scale: 500,000 accounts, about 80 MB with the index, all of it
/// fitting in the buffer pool.
const SCALE: u32 = 5;
const CLIENTS: usize = 4;
const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = 2 << 20;

/// What one fresh pgbench run did to the cluster's main segment.
struct Run {
    /// Counters of every group of the cluster, summed.
    cluster: Counters,
    /// Those of its client backends.
    clients: Counters,
    /// Those of processes not classified yet (any cluster's).
    unattributed: Counters,
    segment: SharedMemory,
    /// Buffers holding pgbench's tables after the run: each was read in
    /// by a backend since the restart.
    pgbench_buffers: u64,
}

/// Restarts the cluster with `huge_pages` (a fresh segment, an empty
/// buffer pool), and runs select-only pgbench with a new agent watching.
fn fresh_run(pg: &Cluster, huge_pages: &str) -> Run {
    pg.restart(&[SHARED_BUFFERS, &format!("huge_pages={huge_pages}")]);
    let name = pg.data().canonicalize().unwrap().display().to_string();
    let mut agent = Agent::start(&Config::default()).expect("agent starts");
    run_polling(
        &mut agent,
        pg.pgbench().args([
            "-S",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            "4",
            "postgres",
        ]),
    );
    let snap = agent.snapshot();
    let [mut cluster, mut clients, mut unattributed] = [Counters::zeroed(); 3];
    for (labels, g) in &snap.groups {
        if labels.cluster == UNASSIGNED_CLUSTER {
            add_counters(&mut unattributed, &g.counters);
        }
        if labels.cluster != name {
            continue;
        }
        add_counters(&mut cluster, &g.counters);
        if labels.backend_type == "client backend" {
            add_counters(&mut clients, &g.counters);
        }
    }
    let segment = snap
        .shared_memory
        .iter()
        .find(|s| s.cluster == name)
        .unwrap_or_else(|| panic!("cluster {name} missing from {:?}", snap.shared_memory))
        .clone();
    let pgbench_buffers = pg
        .query(
            "SELECT count(*) FROM pg_buffercache b JOIN pg_class c \
             ON b.relfilenode = pg_relation_filenode(c.oid) \
             WHERE c.relname LIKE 'pgbench_accounts%'",
        )
        .parse()
        .unwrap();
    Run {
        cluster,
        clients,
        unattributed,
        segment,
        pgbench_buffers,
    }
}

#[test]
fn huge_pages_take_a_hundred_times_fewer_shared_memory_faults() {
    common::require_root();
    let pg = Cluster::start(&[SHARED_BUFFERS, "huge_pages=off"]);
    pg.init_pgbench(SCALE);
    pg.query("CREATE EXTENSION pg_buffercache");
    // What the segment needs on huge pages, as PostgreSQL computes it.
    let need: u64 = pg
        .query("SHOW shared_memory_size_in_huge_pages")
        .parse()
        .unwrap();

    let off = fresh_run(&pg, "off");
    // Given back on drop, also on a panic (pages the cluster still holds
    // then become surplus pages, freed when it stops).
    let _reserved = HugePages::reserve(need + 8);
    let on = fresh_run(&pg, "on");
    drop(pg);

    let main = |r: &Run| r.cluster.v[counter::FAULTS_MAIN_SHARED];
    for (what, r) in [("off", &off), ("on", &on)] {
        eprintln!(
            "huge_pages={what}: {} main-segment faults ({} in {CLIENTS} client backends, {} \
             hugetlb), {} pgbench buffers read in, segment {} MB on {} kB pages; not yet \
             classified: {} other-shared faults, {} hugetlb",
            main(r),
            r.clients.v[counter::FAULTS_MAIN_SHARED],
            r.cluster.v[counter::FAULTS_HUGETLB],
            r.pgbench_buffers,
            r.segment.size_bytes >> 20,
            r.segment.page_size >> 10,
            r.unattributed.v[counter::FAULTS_OTHER_SHARED],
            r.unattributed.v[counter::FAULTS_HUGETLB],
        );
    }
    eprintln!("ratio {:.0}", main(&off) as f64 / main(&on).max(1) as f64);

    // The agent found the segment, and how it is backed.
    assert_eq!(
        (off.segment.huge_pages, off.segment.page_size),
        ("off", PAGE)
    );
    assert_eq!(
        (on.segment.huge_pages, on.segment.page_size),
        ("on", HUGE_PAGE)
    );
    assert!(off.segment.size_bytes >= 256 << 20, "{:?}", off.segment);

    // Huge pages on: the same run, at least a hundred times fewer faults,
    // all of them on hugetlb pages; none with huge pages off.
    assert!(
        main(&off) >= 100 * main(&on),
        "huge pages on: {} main-segment faults, off: {} (less than 100x apart)",
        main(&on),
        main(&off)
    );
    assert!(
        on.cluster.v[counter::FAULTS_HUGETLB] > 0,
        "no hugetlb fault with huge pages on"
    );
    assert_eq!(on.cluster.v[counter::FAULTS_HUGETLB], main(&on));
    assert_eq!(off.cluster.v[counter::FAULTS_HUGETLB], 0);

    // Huge pages off, the order of the pages touched: every buffer read in
    // since the restart was written by a client backend, which faulted in
    // both of its 4 kB pages (inside `pread`); a backend's first moments,
    // before the agent classified it, count elsewhere: half of that is the
    // floor. No backend faults a page of the segment twice.
    let client_faults = off.clients.v[counter::FAULTS_MAIN_SHARED];
    assert!(
        off.pgbench_buffers > 5_000,
        "pgbench read only {} buffers: no test",
        off.pgbench_buffers
    );
    assert!(
        client_faults <= CLIENTS as u64 * off.segment.size_bytes / PAGE,
        "{client_faults} faults: more than every page once per client backend"
    );
    assert!(
        client_faults >= off.pgbench_buffers,
        "client backends took {client_faults} main-segment faults for {} buffers they read in",
        off.pgbench_buffers
    );
}
