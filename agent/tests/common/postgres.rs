//! A scratch PostgreSQL cluster started by the tests: initdb in a temporary
//! directory, a Unix socket only, stopped and removed on drop.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// pgbench clients well above the CPU count, so backends preempt each other.
pub fn clients() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run `cargo xtask setup`")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    v.sort();
    v.pop()
        .expect("no PostgreSQL server under /usr/lib/postgresql")
}

pub fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

fn ok(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// initdb + start, with extra `-c` settings.
    pub fn start(settings: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("pgpreempt-test")
            .tempdir_in("/tmp")
            .unwrap();
        ok(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()));
        let c = Cluster { dir, bin: pg_bin() };
        ok(as_postgres(&c.bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(c.data()));
        c.pg_ctl_start(settings);
        c
    }

    fn pg_ctl_start(&self, settings: &[&str]) {
        let mut opts = format!("-k {} -c listen_addresses=''", self.dir.path().display());
        for s in settings {
            opts.push_str(&format!(" -c {s}"));
        }
        ok(as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("start"));
    }

    /// Stops the cluster (fast shutdown) and starts it again with
    /// `settings` instead: a new postmaster, a new main shared memory
    /// segment, an empty buffer pool.
    pub fn restart(&self, settings: &[&str]) {
        ok(as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "fast", "stop"]));
        self.pg_ctl_start(settings);
    }

    /// `pgbench -i` at scale `scale`.
    pub fn init_pgbench(&self, scale: u32) {
        ok(self
            .pgbench()
            .args(["-i", "-q", "-s", &scale.to_string(), "postgres"]));
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn postmaster_pid(&self) -> u32 {
        let s = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        s.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn pgbench(&self) -> Command {
        let mut c = as_postgres(&self.bin, "pgbench");
        c.arg("-h").arg(self.dir.path()).args(["-U", "postgres"]);
        c
    }

    /// pgbench select-only for `seconds` with clients well above the CPU
    /// count (capped below max_connections): with `shared_buffers=2MB` the
    /// workload that contends PostgreSQL's spinlocks. Not started.
    pub fn select_only(&self, seconds: &str) -> Command {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut c = self.pgbench();
        c.args([
            "-S",
            "-c",
            &(cpus * 8).min(48).to_string(),
            "-j",
            "2",
            "-T",
            seconds,
            "postgres",
        ]);
        c
    }

    /// pgbench TPC-B-like with [`clients`] clients for up to two minutes,
    /// returned once at least half of them are running queries (pgbench
    /// reads pgbench_branches at start-up: a test locks it only after).
    pub fn start_pgbench(&self) -> Child {
        let bench = self
            .pgbench()
            .args([
                "-c",
                &clients().to_string(),
                "-j",
                "2",
                "-T",
                "120",
                "postgres",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.wait_for(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active'",
            |n| n.parse::<usize>().unwrap_or(0) >= clients() / 2,
            "pgbench clients to run",
        );
        bench
    }

    /// The backends serving pgbench, by pid.
    pub fn pgbench_backends(&self) -> Vec<u32> {
        self.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' ORDER BY pid",
        )
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
    }

    /// Takes the table lock every pgbench transaction needs, in `lock`'s
    /// transaction, and waits until every backend waits on it: the edge of
    /// a window where nothing of theirs runs. `COMMIT;` on `lock` opens it.
    pub fn block_pgbench(&self, lock: &mut Session) {
        lock.send("BEGIN; LOCK TABLE pgbench_branches IN ACCESS EXCLUSIVE MODE;");
        self.all_pgbench_blocked();
    }

    /// Waits until every pgbench backend waits on a lock (the test's
    /// `LOCK TABLE`).
    pub fn all_pgbench_blocked(&self) {
        self.wait_for(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND wait_event_type = 'Lock'",
            |n| n == clients().to_string(),
            "every pgbench backend to wait on the test's lock",
        );
    }

    /// One query's output (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> String {
        let out = as_postgres(&self.bin, "psql")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-U", "postgres", "-d", "postgres", "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An interactive psql session fed through stdin.
    pub fn session(&self) -> Session {
        let child = as_postgres(&self.bin, "psql")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-U", "postgres", "-d", "postgres", "-Aqt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Session { child }
    }

    /// Waits until `sql` returns `want`.
    pub fn wait_for(&self, sql: &str, want: impl Fn(&str) -> bool, what: &str) {
        let start = Instant::now();
        loop {
            let got = self.query(sql);
            if want(&got) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what} (last: {got})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a load while polling the agent as the daemon does (every 100 ms),
/// so new backends are classified while they work.
pub fn run_polling(agent: &mut pgpreempt::agent::Agent, cmd: &mut Command) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{cmd:?} failed");
            break;
        }
        agent.refresh();
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.refresh();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

pub struct Session {
    child: Child,
}

impl Session {
    pub fn send(&mut self, sql: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Raises `vm.nr_hugepages`; the old value comes back on drop, also when
/// the test panics.
pub struct HugePages {
    old: String,
}

impl HugePages {
    /// Reserves `more` huge pages beyond those reserved now, or fails the
    /// test saying how many the kernel could find.
    pub fn reserve(more: u64) -> HugePages {
        let old = std::fs::read_to_string(NR_HUGEPAGES).unwrap();
        let want = old.trim().parse::<u64>().unwrap() + more;
        let guard = HugePages { old };
        let _ = std::fs::write(NR_HUGEPAGES, want.to_string());
        let got: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            got >= want,
            "could reserve only {got} of {want} huge pages (vm.nr_hugepages): \
             this test needs {more} free 2 MB pages"
        );
        guard
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.old.trim());
    }
}
