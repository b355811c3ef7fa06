//! A cgroup v1 memory cgroup for the tests that make processes reclaim.
use std::path::PathBuf;

/// A cgroup v1 memory cgroup below the test's own, removed on drop (after
/// the processes in it: declare it before them).
pub struct MemCgroup {
    path: PathBuf,
}

impl MemCgroup {
    pub fn create(name: &str, limit: Option<u64>) -> MemCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.trim_start_matches('/').to_string())
            })
            .expect("no cgroup v1 memory controller: this test needs /sys/fs/cgroup/memory");
        let path = PathBuf::from("/sys/fs/cgroup/memory")
            .join(rel)
            .join(format!("pgpt-{name}-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let cg = MemCgroup { path };
        if let Some(l) = limit {
            std::fs::write(cg.path.join("memory.limit_in_bytes"), l.to_string()).unwrap();
        }
        cg
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // Empty once its last process is reaped; the kernel may take a moment.
        for _ in 0..200 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("could not remove {}", self.path.display());
    }
}
