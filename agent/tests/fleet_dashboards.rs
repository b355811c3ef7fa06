//! The fleet path, end to end: a real Prometheus (Debian's, on loopback,
//! scraping every second, with deploy/prometheus's rules loaded) scrapes a
//! real `pgpreempt run` watching a real PostgreSQL under pgbench. After a
//! minute, every query of every panel of both dashboards, and every
//! template-variable query, returns data through Prometheus's HTTP API; so
//! does every recording rule, and every rule evaluates without error. The
//! live scrape passes `promtool check metrics`, and the host dashboard
//! queries every metric family the agent exports.
mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    dashboards::{self, repo_root},
    http::{encode, free_port, get, Guard},
    postgres::Cluster,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pgpreempt");
/// How long Prometheus collects before the queries.
const COLLECT: Duration = Duration::from_secs(60);

/// Starts `cmd` with its stderr in `log` (read back when something fails).
fn spawn(cmd: &mut Command, log: &Path) -> Guard {
    let f = std::fs::File::create(log).unwrap();
    Guard(
        cmd.stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    )
}

fn log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The example scrape config with a 1 s interval, the rules by absolute
/// path, and this test's agent as the only target.
fn prometheus_config(agent_port: u16) -> String {
    let dir = repo_root().join("deploy/prometheus");
    let text = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    let rules: Vec<serde_yaml::Value> = cfg["rule_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()).display().to_string().into())
        .collect();
    cfg["rule_files"] = rules.into();
    let jobs = cfg["scrape_configs"].as_sequence_mut().unwrap();
    jobs.retain(|j| j["job_name"] == "pgpreempt");
    assert_eq!(jobs.len(), 1, "prometheus.yml has a job named pgpreempt");
    let job = &mut jobs[0];
    job["scrape_interval"] = "1s".into();
    job["scrape_timeout"] = "1s".into();
    job["static_configs"][0]["targets"] = vec![format!("127.0.0.1:{agent_port}")].into();
    serde_yaml::to_string(&cfg).unwrap()
}

struct Prometheus {
    port: u16,
}

impl Prometheus {
    /// An API call; panics unless Prometheus answers with status success.
    fn api(&self, path: &str) -> Value {
        let (code, body) =
            get(self.port, path).unwrap_or_else(|| panic!("Prometheus did not answer {path}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: HTTP {code}, not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "{path}: HTTP {code}: {body}");
        v["data"].clone()
    }

    /// An instant query: its result vector, or a description of the error.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (code, body) = get(self.port, &path).ok_or("no answer")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {code}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Values of `label`, restricted to series matching `selector`.
    fn label_values(&self, selector: Option<&str>, label: &str) -> Vec<String> {
        let mut path = format!("/api/v1/label/{label}/values");
        if let Some(s) = selector {
            path.push_str(&format!("?match[]={}", encode(s)));
        }
        self.api(&path)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

fn finite(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    common::require_root();
    let started = Instant::now();
    // A tiny buffer pool, so the buffer-mapping spinlocks contend (spin
    // sites), and TPC-B with clients well above the CPU count, so lock
    // holders are preempted while others wait (holder preemptions, waiter
    // delay, wakeups). At most 80 clients in all: PostgreSQL's default
    // max_connections is 100.
    let pg = Cluster::start(&["shared_buffers=2MB"]);
    pg.init_pgbench(2);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());

    let dir = tempfile::Builder::new()
        .prefix("pgpreempt-fleet")
        .tempdir()
        .unwrap();
    let logs = |name: &str| dir.path().join(name);

    let agent_port = free_port();
    let mut agent = spawn(
        Command::new(BIN).args([
            "run",
            "--bpf-stats",
            "--listen",
            &format!("127.0.0.1:{agent_port}"),
        ]),
        &logs("agent.log"),
    );
    let t = Instant::now();
    while get(agent_port, "/healthz").is_none() {
        assert!(
            agent.alive(),
            "the agent exited: {}",
            log(&logs("agent.log"))
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the agent did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let seconds = (COLLECT.as_secs() + 60).to_string();
    let mut loads = vec![
        spawn(
            pg.pgbench().args([
                "-c",
                &(cpus * 4).min(32).to_string(),
                "-j",
                "2",
                "-T",
                &seconds,
                "postgres",
            ]),
            &logs("pgbench-tpcb.log"),
        ),
        spawn(&mut pg.select_only(&seconds), &logs("pgbench-select.log")),
        // A connection per transaction: process starts and lifetimes.
        spawn(
            pg.pgbench().args([
                "-C", "-S", "-c", "1", "-j", "1", "-R", "20", "-T", &seconds, "postgres",
            ]),
            &logs("pgbench-connect.log"),
        ),
    ];

    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(agent_port)).unwrap();
    let out = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .expect("promtool (Debian package prometheus): run `cargo xtask setup`");
    assert!(
        out.status.success(),
        "promtool check config: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let prom = Prometheus { port: free_port() };
    let mut server = spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", prom.port))
            .arg("--log.level=warn"),
        &logs("prometheus.log"),
    );
    let t = Instant::now();
    while get(prom.port, "/-/ready").is_none_or(|(c, _)| c != 200) {
        assert!(
            server.alive(),
            "prometheus exited: {}",
            log(&logs("prometheus.log"))
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "prometheus not ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let collecting = Instant::now();

    // Meanwhile: the live scrape under PostgreSQL load is valid.
    std::thread::sleep(Duration::from_secs(10));
    let (_, body) = get(agent_port, "/metrics").unwrap();
    common::promtool_check(&body);
    let families: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();

    while collecting.elapsed() < COLLECT {
        assert!(
            agent.alive(),
            "the agent exited: {}",
            log(&logs("agent.log"))
        );
        assert!(
            server.alive(),
            "prometheus exited: {}",
            log(&logs("prometheus.log"))
        );
        for (l, name) in loads.iter_mut().zip([
            "pgbench-tpcb.log",
            "pgbench-select.log",
            "pgbench-connect.log",
        ]) {
            assert!(l.alive(), "pgbench ended early: {}", log(&logs(name)));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let up = prom.query(r#"up{job="pgpreempt"}"#).unwrap();
    assert!(
        up.len() == 1 && up[0]["value"][1] == "1",
        "the agent is not up in Prometheus: {up:?}"
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    let all = dashboards::load_all();
    for d in &all {
        // Template variables in order, each with the values that "All" (or
        // the first value) would give, as Grafana substitutes them.
        let mut values = dashboards::builtin_values();
        for v in d.variables() {
            if v.kind != "query" {
                continue;
            }
            let q = v.query.clone().unwrap();
            let (sel, label) = dashboards::parse_label_values(&q).unwrap();
            let sel = sel.map(|s| dashboards::substitute(&s, &values).unwrap());
            let found = prom.label_values(sel.as_deref(), &label);
            checked += 1;
            if found.is_empty() {
                failures.push(format!(
                    "{}: variable {}: {q} returned nothing",
                    d.file, v.name
                ));
                continue;
            }
            values.insert(v.name.clone(), dashboards::format_value(&v, &found));
        }
        for t in d.targets() {
            checked += 1;
            let expr = match dashboards::substitute(&t.expr, &values) {
                Ok(e) => e,
                Err(e) => {
                    failures.push(format!("{}: {}: {e}", d.file, t.panel));
                    continue;
                }
            };
            match prom.query(&expr) {
                Ok(r) if r.iter().any(finite) => {}
                Ok(r) if r.is_empty() => failures.push(format!(
                    "{}: panel {:?}: no result for\n    {expr}",
                    d.file, t.panel
                )),
                Ok(r) => failures.push(format!(
                    "{}: panel {:?}: only NaN or infinite values ({} series) for\n    {expr}",
                    d.file,
                    t.panel,
                    r.len()
                )),
                Err(e) => failures.push(format!(
                    "{}: panel {:?}: {e} for\n    {expr}",
                    d.file, t.panel
                )),
            }
        }
    }

    // The rules evaluated on this data: none in error, and every recording
    // rule has a result.
    let groups = prom.api("/api/v1/rules");
    let mut rules = 0;
    for g in groups["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            rules += 1;
            let name = r["name"].as_str().unwrap();
            if r["health"] != "ok" {
                failures.push(format!(
                    "rule {name}: health {} ({})",
                    r["health"], r["lastError"]
                ));
            }
            if r["type"] == "recording" {
                match prom.query(name) {
                    Ok(v) if v.iter().any(finite) => {}
                    other => failures.push(format!("recording rule {name}: {other:?}")),
                }
            }
        }
    }
    assert!(rules >= 10, "the rules were not loaded: {groups}");

    // The host dashboard shows every metric family the agent exports.
    let host = all
        .iter()
        .find(|d| d.file == "pgpreempt-host.json")
        .unwrap();
    let host_exprs: String = host
        .targets()
        .iter()
        .map(|t| t.expr.clone() + "\n")
        .collect();
    for f in &families {
        if !host_exprs.contains(f.as_str()) {
            failures.push(format!("pgpreempt-host.json: no panel queries {f}"));
        }
    }

    eprintln!(
        "{checked} dashboard queries and {rules} rules against {} metric families, {:.0} s in all",
        families.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(loads);
}
