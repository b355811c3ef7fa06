//! A scratch PostgreSQL cluster for the demo: initdb in a temporary
//! directory, a Unix socket only, removed (with the server) on drop.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::sh;

pub struct Scratch {
    pub dir: PathBuf,
    pub bin: PathBuf,
}

/// Runs a PostgreSQL tool as the `postgres` user (the server refuses root).
pub fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

fn pg_bin() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (run `cargo xtask setup`)")?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no PostgreSQL server binary under /usr/lib/postgresql")
}

impl Scratch {
    pub fn start() -> Result<Scratch> {
        Self::start_with(&["shared_buffers=32MB"])
    }

    /// A scratch cluster with extra `-c` settings.
    pub fn start_with(settings: &[&str]) -> Result<Scratch> {
        let bin = pg_bin()?;
        let dir = PathBuf::from(
            String::from_utf8(
                Command::new("mktemp")
                    .args(["-d", "/tmp/pgpreempt-demo.XXXXXX"])
                    .output()?
                    .stdout,
            )?
            .trim(),
        );
        let s = Scratch { dir, bin };
        sh(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&s.dir))?;
        let data = s.dir.join("data");
        sh(as_postgres(&s.bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null()))?;
        let mut opts = format!("-k {} -c listen_addresses=''", s.dir.display());
        for setting in settings {
            opts.push_str(&format!(" -c {setting}"));
        }
        sh(as_postgres(&s.bin, "pg_ctl")
            .args(["-D"])
            .arg(&data)
            .args(["-w", "-o", &opts, "-l"])
            .arg(s.dir.join("log"))
            .arg("start")
            .stdout(std::process::Stdio::null()))?;
        Ok(s)
    }

    /// `pgbench -i` at `scale`, quietly.
    pub fn init_pgbench(&self, scale: u32) -> Result<()> {
        sh(self
            .pgbench()
            .args(["-i", "-q", "-s", &scale.to_string(), "postgres"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()))
    }

    /// pgbench against the scratch cluster.
    pub fn pgbench(&self) -> Command {
        let mut c = as_postgres(&self.bin, "pgbench");
        c.arg("-h").arg(&self.dir).args(["-U", "postgres"]);
        c
    }

    pub fn datadir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.datadir())
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo loads eBPF programs and starts PostgreSQL with runuser.
pub fn require_root() -> Result<()> {
    if !crate::setup::is_root() {
        bail!(
            "run this as root: it loads eBPF programs and starts PostgreSQL as the postgres user"
        );
    }
    Ok(())
}
