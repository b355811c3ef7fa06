//! The fleet files, checked without loading anything into the kernel: the
//! Grafana dashboards' properties, the Prometheus rules (`promtool check
//! rules` and `promtool test rules`) and scrape config, the Kubernetes
//! manifests against the systemd unit, the Dockerfile and the Grafana
//! provisioning files. The proof that the dashboards' queries return data
//! is `fleet_dashboards`; the unit's restrictions are run in `systemd_unit`.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use common::{
    dashboards::{self, repo_root},
    systemd::Unit,
};
use serde_json::{json, Value};

fn path(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

fn yaml_docs(rel: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus) is needed: run `cargo xtask setup`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn dashboards_have_units_descriptions_variables_and_unique_ids() {
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    for d in dashboards::load_all() {
        let f = d.file;
        let j = &d.json;
        assert!(
            j["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{f}: schemaVersion {}",
            j["schemaVersion"]
        );
        for k in ["uid", "title", "description"] {
            assert!(j[k].as_str().is_some_and(|s| !s.is_empty()), "{f}: no {k}");
        }
        // Variables: the data source, then instance and cluster, which
        // query through the data-source variable.
        let vars = d.variables();
        let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        for n in ["datasource", "instance", "cluster"] {
            assert!(names.contains(&n), "{f}: no template variable {n}");
        }
        for v in j["templating"]["list"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            if name == "datasource" {
                assert_eq!(v["type"], "datasource", "{f}: {name}");
                assert_eq!(v["query"], "prometheus", "{f}: {name}");
            } else {
                assert_eq!(v["type"], "query", "{f}: {name}");
                assert_eq!(v["datasource"], ds, "{f}: variable {name}");
                let q = vars.iter().find(|x| x.name == name).unwrap().query.clone();
                assert!(
                    q.as_deref()
                        .and_then(dashboards::parse_label_values)
                        .is_some(),
                    "{f}: variable {name}: want a label_values() query, got {q:?}"
                );
            }
        }
        let defined: HashSet<String> = names
            .iter()
            .map(|s| s.to_string())
            .chain(dashboards::builtin_values().into_keys())
            .collect();

        let mut ids = HashSet::new();
        let mut boxes: Vec<(String, i64, i64, i64, i64, Option<String>)> = Vec::new();
        let mut repeat: Option<String> = None;
        for p in d.panels() {
            let title = p["title"].as_str().unwrap_or("");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{f}: {title}: no id"));
            assert!(ids.insert(id), "{f}: panel id {id} used twice ({title})");
            assert!(!title.is_empty(), "{f}: panel {id} has no title");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_i64().unwrap(),
                g["y"].as_i64().unwrap(),
                g["w"].as_i64().unwrap(),
                g["h"].as_i64().unwrap(),
            );
            assert!(
                x >= 0 && w > 0 && h > 0 && x + w <= 24,
                "{f}: {title}: gridPos {g}"
            );
            if p["type"] == "row" {
                repeat = p["repeat"].as_str().map(String::from);
                boxes.push((title.into(), x, y, w, h, None));
                continue;
            }
            boxes.push((title.into(), x, y, w, h, repeat.clone()));
            let desc = p["description"].as_str().unwrap_or("");
            assert!(desc.len() > 20, "{f}: {title}: no description");
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            assert!(!unit.is_empty(), "{f}: {title}: no unit");
            if p["type"] == "heatmap" {
                assert_eq!(p["options"]["yAxis"]["unit"], "s", "{f}: {title}: y axis");
            }
            assert_eq!(p["datasource"], ds, "{f}: {title}: datasource");
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{f}: {title}: no targets"));
            assert!(!targets.is_empty(), "{f}: {title}: no targets");
            let mut refs = HashSet::new();
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(
                    !expr.trim().is_empty(),
                    "{f}: {title}: a target without expr"
                );
                assert_eq!(t["datasource"], ds, "{f}: {title}: target datasource");
                assert!(
                    refs.insert(t["refId"].to_string()),
                    "{f}: {title}: refId twice"
                );
                for v in dashboards::variables_used(expr).unwrap() {
                    assert!(
                        defined.contains(&v),
                        "{f}: {title}: unknown variable ${v} in {expr}"
                    );
                }
            }
        }
        // No two panels overlap (Grafana would move them on import).
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let overlap =
                    a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4;
                assert!(!overlap, "{f}: panels {:?} and {:?} overlap", a.0, b.0);
            }
        }
    }
}

#[test]
fn the_overview_has_what_the_issue_asks_for() {
    let all = dashboards::load_all();
    let ov = all
        .iter()
        .find(|d| d.file == "pgpreempt-overview.json")
        .unwrap();
    let exprs: String = ov.targets().iter().map(|t| t.expr.clone() + "\n").collect();
    // One row per host.
    assert!(
        ov.panels()
            .iter()
            .any(|p| p["type"] == "row" && p["repeat"] == "instance"),
        "the overview repeats a row per instance"
    );
    for needle in [
        "pgpreempt_lock_waiter_delay_seconds_total",
        "pgpreempt_futex_wait_seconds_sum",
        "pgpreempt_lock_holder_preemptions_total",
        r#"pgpreempt_context_switches_total{instance=~"$instance", cluster=~"$cluster", kind="involuntary"}"#,
        "histogram_quantile(0.5, sum by (le) (rate(pgpreempt_preempted_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(pgpreempt_preempted_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(pgpreempt_wakeup_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(pgpreempt_wakeup_latency_seconds_bucket",
        "sum by (site) (rate(pgpreempt_spin_seconds_sum",
        "pgpreempt_kernel_info",
        "pgpreempt_bpf_program_run_seconds_total",
        // The memory row: shared memory faults beside the page size.
        "instance_cluster:pgpreempt_main_shared_page_faults:rate5m",
        "pgpreempt_shared_memory_info",
        "pgpreempt_faults_while_others_spin_total",
        "pgpreempt_reclaim_stall_seconds_sum",
        "pgpreempt_mmap_lock_wait_seconds_bucket",
    ] {
        assert!(
            exprs.contains(needle),
            "the overview has no query with {needle}"
        );
    }
    let heatmaps: Vec<String> = ov
        .panels()
        .iter()
        .filter(|p| p["type"] == "heatmap")
        .map(|p| p["targets"][0]["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(heatmaps
        .iter()
        .any(|e| e.contains("pgpreempt_preempted_seconds_bucket")));
    assert!(heatmaps
        .iter()
        .any(|e| e.contains("pgpreempt_wakeup_latency_seconds_bucket")));
}

#[test]
fn dashboards_use_only_recording_rules_that_exist() {
    let rules = &yaml_docs("deploy/prometheus/pgpreempt-rules.yml")[0];
    let recorded: BTreeSet<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["record"].as_str().map(String::from))
        .collect();
    let mut used = 0;
    for d in dashboards::load_all() {
        for t in d.targets() {
            for word in t
                .expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.contains(':') && w.starts_with(|c: char| c.is_ascii_alphabetic()))
            {
                assert!(
                    recorded.contains(word),
                    "{}: {}: {word} is not a recording rule in pgpreempt-rules.yml",
                    d.file,
                    t.panel
                );
                used += 1;
            }
        }
    }
    assert!(used > 0, "the fleet row reads the recording rules");
}

#[test]
fn rules_pass_promtool_and_every_alert_is_tested_both_ways() {
    let dir = path("deploy/prometheus");
    let out = promtool(&["check", "rules", "pgpreempt-rules.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "pgpreempt-rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");

    let rules = &yaml_docs("deploy/prometheus/pgpreempt-rules.yml")[0];
    let alerts: BTreeSet<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    for a in [
        "PgpreemptLockHolderPreemptionCost",
        "PgpreemptSpinlockContention",
        "PgpreemptAgentDown",
        "PgpreemptNotCounting",
        "PgpreemptBpfOverheadHigh",
        "PgpreemptSharedMemoryFaultsWithoutHugePages",
        "PgpreemptCpuSaturation",
        "PgpreemptMemoryStalls",
    ] {
        assert!(alerts.contains(a), "no alert {a}");
    }
    // Every alert has a test case where it fires and one where it does not.
    let tests = &yaml_docs("deploy/prometheus/pgpreempt-rules.test.yml")[0];
    let mut fires: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for c in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = c["alertname"].as_str().unwrap().to_string();
            let e = fires.entry(name).or_default();
            if c["exp_alerts"].as_sequence().is_some_and(|s| !s.is_empty()) {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    for a in &alerts {
        assert_eq!(
            fires.get(a),
            Some(&(true, true)),
            "{a}: want a promtool test where it fires and one where it does not"
        );
    }
}

/// The numbers an expression compares with: each `> N` (the rules only
/// alert on "more than").
fn thresholds_in(expr: &str) -> Vec<f64> {
    expr.split('>')
        .skip(1)
        .map(|rest| {
            let n: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            n.parse()
                .unwrap_or_else(|_| panic!("no number after '>' in {expr}"))
        })
        .collect()
}

#[test]
fn alert_thresholds_are_the_diagnosis_alert_levels() {
    use pgpreempt::diagnosis::{thresholds as t, Cause};
    // Alert, its cause, and every threshold its expression compares with.
    let want: &[(&str, Cause, &[f64])] = &[
        (
            "PgpreemptCpuSaturation",
            Cause::CpuSaturation,
            &[
                t::CPU_SATURATION_ALERT_SHARE,
                t::MIN_ACTIVE_SECONDS_PER_SECOND,
            ],
        ),
        (
            "PgpreemptLockHolderPreemptionCost",
            Cause::LockHolderPreemption,
            &[
                t::HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT,
                t::HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND,
            ],
        ),
        (
            "PgpreemptSpinlockContention",
            Cause::SpinlockContention,
            &[t::SPIN_SITE_ALERT_SECONDS_PER_SECOND],
        ),
        (
            "PgpreemptSharedMemoryFaultsWithoutHugePages",
            Cause::SharedMemory4kPages,
            &[t::MAIN_SHARED_FAULTS_PER_SECOND],
        ),
        (
            "PgpreemptMemoryStalls",
            Cause::MemoryStalls,
            &[
                t::MEMORY_STALL_ALERT_SHARE,
                t::MEMORY_STALL_MIN_SECONDS_PER_SECOND,
                t::MIN_ACTIVE_SECONDS_PER_SECOND,
            ],
        ),
    ];
    let rules = &yaml_docs("deploy/prometheus/pgpreempt-rules.yml")[0];
    let all: Vec<&serde_yaml::Value> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .collect();
    let readme = std::fs::read_to_string(path("README.md")).unwrap();
    for (name, cause, levels) in want {
        let rule = all
            .iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no alert {name}"));
        let expr = rule["expr"].as_str().unwrap();
        assert_eq!(
            thresholds_in(expr),
            levels.to_vec(),
            "{name}: its thresholds, in order, are not the diagnosis' alert levels: {expr}"
        );
        // The annotations speak of the cause by the diagnosis' name and
        // link to its README section.
        let ann = &rule["annotations"];
        assert_eq!(
            ann["runbook_url"].as_str(),
            Some(format!("README.md{}", cause.anchor()).as_str()),
            "{name}"
        );
        assert!(
            ann["summary"].as_str().unwrap().starts_with(cause.name()),
            "{name}: the summary starts with the cause's name, {}",
            cause.name()
        );
        let id = cause.anchor().trim_start_matches('#');
        assert!(
            readme.contains(&format!("<a id=\"{id}\"></a>")),
            "{name}: README has no anchor {id}"
        );
    }
}

#[test]
fn the_example_scrape_config_is_valid() {
    let out = promtool(
        &["check", "config", "prometheus.yml"],
        &path("deploy/prometheus"),
    );
    assert!(out.contains("is valid prometheus config"), "{out}");
    let cfg = &yaml_docs("deploy/prometheus/prometheus.yml")[0];
    let job = cfg["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "pgpreempt")
        .expect("a pgpreempt job");
    for t in job["static_configs"][0]["targets"].as_sequence().unwrap() {
        assert!(
            t.as_str().unwrap().ends_with(":19432"),
            "{t:?}: the agent's port"
        );
    }
    assert_eq!(cfg["rule_files"][0], "pgpreempt-rules.yml");
}

fn str_list(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_daemonset_matches_the_systemd_unit() {
    let docs = yaml_docs("deploy/kubernetes/daemonset.yaml");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let tpl = &ds["spec"]["template"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"],
        "the selector matches the pods"
    );
    let spec = &tpl["spec"];
    assert_eq!(
        spec["hostPID"], true,
        "hostPID: the agent reads the host's /proc"
    );
    let c = spec["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pgpreempt")
        .expect("the pgpreempt container");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(str_list(&sc["capabilities"]["drop"]), ["ALL"]);
    // Exactly the unit's capabilities (Kubernetes spells them without CAP_).
    let mut k8s = str_list(&sc["capabilities"]["add"]);
    let mut unit: Vec<String> = Unit::load()
        .capabilities()
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    k8s.sort();
    unit.sort();
    assert_eq!(k8s, unit, "DaemonSet capabilities vs the systemd unit's");
    // Only the short-lived bpf-stats init container is privileged.
    for ic in spec["initContainers"].as_sequence().into_iter().flatten() {
        assert_eq!(ic["name"], "bpf-stats", "unexpected init container");
        let cmd = str_list(&ic["command"]).join(" ");
        assert!(cmd.contains("kernel/bpf_stats_enabled"), "{cmd}");
    }
    // The listen port, the container port, the probes and the scrape
    // annotations agree.
    let args = str_list(&c["args"]);
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args[i + 1].clone())
        .expect("--listen in args");
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "reachable from Prometheus: {listen}"
    );
    let cport = &c["ports"][0];
    assert_eq!(cport["containerPort"].as_u64(), Some(port));
    let pname = cport["name"].as_str().unwrap();
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"];
        assert!(
            ["/healthz", "/metrics"].contains(&p["path"].as_str().unwrap()),
            "{probe}"
        );
        assert_eq!(p["port"].as_str(), Some(pname), "{probe} port");
    }
    assert!(c["livenessProbe"].is_mapping(), "a liveness probe");
    let ann = &tpl["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    for r in ["cpu", "memory"] {
        assert!(
            c["resources"]["requests"][r].is_string(),
            "resource request {r}"
        );
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The host paths the agent reads.
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["readOnly"], true, "{m:?}: the agent writes nothing");
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for needed in ["/sys/kernel/tracing", "/sys/kernel/btf"] {
        let name = mounts
            .iter()
            .find(|(_, p)| *p == needed)
            .unwrap_or_else(|| panic!("no mount at {needed}"))
            .0;
        let vol = spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name.as_str())
            .unwrap();
        assert_eq!(vol["hostPath"]["path"], needed, "{name}");
    }
    // The args are flags the agent knows, and the systemd unit's command
    // line (ExecStart= with the flags file): both deployments run the same.
    check_flags_exist(&args[1..]);
    assert_eq!(
        args,
        Unit::load().exec_args(&common::systemd::flags()),
        "DaemonSet args vs the systemd unit's ExecStart= and flags"
    );

    // The PodMonitor selects the same pods and port; the annotation-based
    // scrape job keeps them.
    let pm = &yaml_docs("deploy/kubernetes/podmonitor.yaml")[0];
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        tpl["metadata"]["labels"]
    );
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some(pname)
    );
    let job = &yaml_docs("deploy/kubernetes/prometheus-scrape-job.yml")[0][0];
    assert!(
        job["job_name"].as_str().unwrap().starts_with("pgpreempt"),
        "{job:?}: the alert rules match job=~\"pgpreempt.*\""
    );
    let relabels = serde_yaml::to_string(&job["relabel_configs"]).unwrap();
    assert!(relabels.contains("__meta_kubernetes_pod_annotation_prometheus_io_scrape"));
    assert!(relabels.contains("__meta_kubernetes_pod_label_app_kubernetes_io_name"));
}

/// Every `--flag` in `args` appears in `pgpreempt run --help`.
fn check_flags_exist(args: &[String]) {
    let help = Command::new(env!("CARGO_BIN_EXE_pgpreempt"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(a.as_str()),
            "{a} is not a flag of pgpreempt run"
        );
    }
}

#[test]
fn the_unit_flags_and_dockerfile_agree() {
    let flags = common::systemd::flags();
    check_flags_exist(&flags);
    assert!(
        !flags.iter().any(|f| f == "--bpf-stats"),
        "--bpf-stats needs CAP_SYS_ADMIN, which the unit does not grant"
    );
    let unit = Unit::load();
    let exec = unit.get("ExecStart").unwrap();
    assert!(exec.ends_with(" $PGPREEMPT_FLAGS"), "{exec}");
    check_flags_exist(&unit.exec_args(&[]));
    assert!(unit.get("EnvironmentFile").is_some());

    let docker = std::fs::read_to_string(path("deploy/docker/Dockerfile")).unwrap();
    let stages = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a multi-stage build");
    for needed in ["rust-src", "bpf-linker", "llvm-22", "cargo build --release"] {
        assert!(
            docker.contains(needed),
            "the Dockerfile's build stage needs {needed}"
        );
    }
    // The image's default command serves on the port it exposes, which is
    // the DaemonSet's.
    let cmd = docker
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert_eq!(cmd[0], "run");
    check_flags_exist(&cmd[1..]);
    let expose = docker
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .trim()
        .to_string();
    assert!(
        cmd.join(" ")
            .contains(&format!("--listen 0.0.0.0:{expose}")),
        "{cmd:?}"
    );
    let ds = yaml_docs("deploy/kubernetes/daemonset.yaml");
    let c = &ds.iter().find(|d| d["kind"] == "DaemonSet").unwrap()["spec"]["template"]["spec"]
        ["containers"][0];
    assert_eq!(
        c["ports"][0]["containerPort"]
            .as_u64()
            .map(|p| p.to_string()),
        Some(expose)
    );

    // The spinlocks drop-in adds CAP_SYS_ADMIN with a reason and removes
    // --no-uprobes, and nothing else.
    let spin = Unit::with_spinlocks_dropin();
    let added: Vec<String> = spin
        .capabilities()
        .into_iter()
        .filter(|c| !unit.capabilities().contains(c))
        .collect();
    assert_eq!(added, ["CAP_SYS_ADMIN"]);
    assert_eq!(spin.list("AmbientCapabilities"), spin.capabilities());
    assert!(spin.all("CapabilityBoundingSet")[1]
        .comment
        .contains("CAP_SYS_ADMIN:"));
    let base_args = unit.exec_args(&flags);
    let spin_args = spin.exec_args(&flags);
    assert!(base_args.contains(&"--no-uprobes".to_string()));
    assert_eq!(
        spin_args,
        base_args
            .iter()
            .filter(|a| *a != "--no-uprobes")
            .cloned()
            .collect::<Vec<_>>()
    );
}

#[test]
fn grafana_provisioning_files_are_valid() {
    let d = &yaml_docs("dashboards/provisioning/dashboards.yaml")[0];
    assert_eq!(d["apiVersion"], 1);
    let p = &d["providers"][0];
    assert_eq!(p["type"], "file");
    assert!(p["options"]["path"]
        .as_str()
        .is_some_and(|s| s.starts_with('/')));
    let s = &yaml_docs("dashboards/provisioning/datasources.yaml")[0];
    assert_eq!(s["apiVersion"], 1);
    assert_eq!(s["datasources"][0]["type"], "prometheus");
    // The dashboards are importable as files: an object with a uid, no
    // dashboard id (Grafana assigns it) and no hard-coded data source.
    for d in dashboards::load_all() {
        assert!(
            d.json.get("id").is_none_or(Value::is_null),
            "{}: id",
            d.file
        );
        let text = d.json.to_string();
        assert!(
            !text.contains("\"uid\":\"prometheus\""),
            "{}: a fixed data source",
            d.file
        );
    }
}

#[test]
fn the_dashboards_readme_names_every_panel() {
    let readme = std::fs::read_to_string(path("dashboards/README.md")).unwrap();
    for d in dashboards::load_all() {
        for p in d.panels() {
            let title = p["title"].as_str().unwrap();
            if p["type"] == "row" && p["repeat"].is_string() {
                continue;
            }
            assert!(
                readme.contains(&format!("**{title}**"))
                    || readme.contains(&format!("### {title}")),
                "dashboards/README.md does not describe {}: {title}",
                d.file
            );
        }
    }
}
