//! `GET /findings` on a real `pgpreempt run` over a real PostgreSQL: an
//! idle cluster gets "nothing significant"; select-only pgbench with many
//! more clients than CPUs makes CPU saturation the top finding, with who
//! took the CPU. The new metrics are in the scrape.
mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    http::{free_port, get, Guard},
    postgres::Cluster,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pgpreempt");

fn findings(port: u16) -> Value {
    let (status, body) = get(port, "/findings").expect("/findings answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}):\n{body}"))
}

#[test]
fn findings_name_cpu_saturation_under_pgbench_and_nothing_when_idle() {
    common::require_root();
    let started = Instant::now();
    let pg = Cluster::start(&[]);
    pg.init_pgbench(1);

    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut agent = Guard(
        Command::new(BIN)
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while get(port, "/healthz").is_none() {
        assert!(
            agent.alive(),
            "the agent exited: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        assert!(t.elapsed() < Duration::from_secs(30), "no agent");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Idle: the cluster's background processes only.
    std::thread::sleep(Duration::from_secs(4));
    let idle = findings(port);
    eprintln!("idle: {idle:#}");
    assert!(idle["window_seconds"].as_f64().unwrap() > 0.0, "{idle}");
    assert!(
        idle["window"]
            .as_str()
            .unwrap()
            .contains("the window is 5 min"),
        "{idle}"
    );
    assert_eq!(idle["significant"], false, "{idle:#}");
    assert_eq!(idle["findings"][0]["cause"], "nothing_significant");

    // Select-only (no lock waiting to speak of) with eight clients per CPU.
    let _bench = Guard(
        pg.select_only("40")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(20));
    let busy = findings(port);
    eprintln!("busy: {busy:#}");
    let window = busy["window_seconds"].as_f64().unwrap();
    assert!((20.0..=60.0).contains(&window), "{window}");
    assert_eq!(busy["significant"], true, "{busy:#}");
    let top = &busy["findings"][0];
    assert_eq!(top["cause"], "cpu_saturation", "{busy:#}");
    assert!(top["share"].as_f64().unwrap() > 0.0, "{top}");
    assert_eq!(top["readme"], "README.md#cpu-saturation");
    assert!(
        !top["evidence"]["preempted_by"]
            .as_array()
            .unwrap()
            .is_empty(),
        "who took the CPU: {top}"
    );
    assert!(
        busy["headline"][0]
            .as_str()
            .unwrap()
            .starts_with("CPU saturation"),
        "{busy}"
    );

    let (_, metrics) = get(port, "/metrics").unwrap();
    for name in [
        "pgpreempt_cpu_seconds_total",
        "pgpreempt_preempted_by_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} counter")),
            "{name}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pgpreempt_preempted_by_total{")
                && l.contains("comm=\"postgres\"")),
        "backends preempted by other backends"
    );
    eprintln!("{:.0} s in all", started.elapsed().as_secs_f64());
}
