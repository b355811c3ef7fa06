//! PostgreSQL's process titles: which kind of backend a process is, and
//! what it is doing. PostgreSQL rewrites argv, so `/proc/PID/cmdline` reads
//! `postgres: [cluster_name: ]<backend type or user db host> <activity>`.

/// Every `backend_type` label value.
pub const BACKEND_TYPES: &[&str] = &[
    "client backend",
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "autovacuum worker",
    "walsender",
    "walreceiver",
    "logical replication launcher",
    "parallel worker",
    "postmaster",
    "io worker",
    "other",
];

/// The backend type of a process forked by a postmaster whose title is
/// not known yet (still the postmaster's command line, or it exited before
/// anything read it): nearly all of them are client backends (a
/// connection), and an auxiliary process (checkpointer, autovacuum worker,
/// parallel worker, ...) takes its title within its first milliseconds and
/// is relabelled then. The README states this assumption ("Short-lived
/// processes").
pub const FORKED_CHILD: &str = "client backend";

/// Auxiliary process title prefixes, longest first where one is a prefix of
/// another. Titles not listed (archiver, startup, ...) are `other`.
const AUX: &[(&str, &str)] = &[
    ("checkpointer", "checkpointer"),
    ("background writer", "background writer"),
    ("walwriter", "walwriter"),
    ("autovacuum launcher", "autovacuum launcher"),
    ("autovacuum worker", "autovacuum worker"),
    (
        "logical replication launcher",
        "logical replication launcher",
    ),
    ("parallel worker", "parallel worker"),
    ("walsender", "walsender"),
    ("walreceiver", "walreceiver"),
    ("io worker", "io worker"),
];

/// What a title says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title {
    pub backend_type: &'static str,
    /// The rest of the title: a client's `user db host activity`, or an
    /// auxiliary process's status.
    pub activity: String,
    /// False while the title is still the postmaster's command line (a
    /// freshly forked child): the type must be read again later.
    pub settled: bool,
}

/// Parses a process title (`cmdline` with NULs turned into spaces).
/// `is_postmaster` says whether the process is the postmaster of its cluster.
pub fn parse_title(title: &str, is_postmaster: bool) -> Title {
    let title = title.trim();
    if is_postmaster {
        return Title {
            backend_type: "postmaster",
            activity: String::new(),
            settled: true,
        };
    }
    let rest = title
        .strip_prefix("postgres: ")
        .or_else(|| title.strip_prefix("postmaster: "));
    let Some(mut rest) = rest else {
        // Still the postmaster's argv (forked, title not set yet), or not
        // PostgreSQL at all.
        return Title {
            backend_type: "other",
            activity: String::new(),
            settled: false,
        };
    };
    // `cluster_name` adds "name: " before the type.
    if let Some((first, after)) = rest.split_once(": ") {
        if !first.contains(' ') {
            rest = after;
        }
    }
    for (prefix, kind) in AUX {
        if let Some(after) = rest.strip_prefix(prefix) {
            if after.is_empty() || after.starts_with(' ') {
                return Title {
                    backend_type: kind,
                    activity: after.trim().to_string(),
                    settled: true,
                };
            }
        }
    }
    // A client backend: "user db host[(port)] activity".
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() >= 3 && looks_like_host(words[2]) {
        return Title {
            backend_type: "client backend",
            activity: words[3..].join(" "),
            settled: true,
        };
    }
    Title {
        backend_type: "other",
        activity: rest.to_string(),
        settled: true,
    }
}

fn looks_like_host(w: &str) -> bool {
    w == "[local]"
        || w.ends_with(')')
        || w.parse::<std::net::IpAddr>().is_ok()
        || w.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> (&'static str, String) {
        let r = parse_title(s, false);
        (r.backend_type, r.activity)
    }

    #[test]
    fn auxiliary_processes() {
        assert_eq!(t("postgres: checkpointer ").0, "checkpointer");
        assert_eq!(t("postgres: background writer").0, "background writer");
        assert_eq!(t("postgres: walwriter").0, "walwriter");
        assert_eq!(t("postgres: autovacuum launcher").0, "autovacuum launcher");
        assert_eq!(
            t("postgres: autovacuum worker bench"),
            ("autovacuum worker", "bench".into())
        );
        assert_eq!(
            t("postgres: logical replication launcher").0,
            "logical replication launcher"
        );
        assert_eq!(
            t("postgres: parallel worker for PID 4242").0,
            "parallel worker"
        );
        assert_eq!(
            t("postgres: walsender rep 10.0.0.2(5432) streaming 0/3000148").0,
            "walsender"
        );
        assert_eq!(
            t("postgres: walreceiver streaming 0/3000148").0,
            "walreceiver"
        );
        assert_eq!(t("postgres: io worker 2").0, "io worker");
        assert_eq!(t("postgres: archiver last was 00000001").0, "other");
        assert_eq!(t("postgres: stats collector").0, "other");
    }

    #[test]
    fn client_backends() {
        assert_eq!(
            t("postgres: alice bench [local] idle"),
            ("client backend", "idle".into())
        );
        assert_eq!(
            t("postgres: alice bench 127.0.0.1(51234) UPDATE waiting"),
            ("client backend", "UPDATE waiting".into())
        );
        assert_eq!(t("postgres: bob db ::1(40000) SELECT").0, "client backend");
        assert_eq!(
            t("postgres: bob db 10.1.2.3 idle in transaction").0,
            "client backend"
        );
        assert_eq!(
            t("postgres: alice bench [local] startup").0,
            "client backend"
        );
    }

    #[test]
    fn cluster_name_prefix_is_skipped() {
        assert_eq!(t("postgres: main: checkpointer").0, "checkpointer");
        assert_eq!(
            t("postgres: main: alice bench [local] idle"),
            ("client backend", "idle".into())
        );
    }

    #[test]
    fn postmaster_and_unsettled_children() {
        let p = parse_title("/usr/lib/postgresql/15/bin/postgres -D /data", true);
        assert_eq!((p.backend_type, p.settled), ("postmaster", true));
        // A child that still shows the postmaster's argv is not settled.
        let c = parse_title("/usr/lib/postgresql/15/bin/postgres -D /data", false);
        assert_eq!((c.backend_type, c.settled), ("other", false));
        // Background workers with their own names are "other".
        assert_eq!(
            t("postgres: TimescaleDB Background Worker Launcher").0,
            "other"
        );
    }

    #[test]
    fn every_type_is_a_known_label() {
        for s in ["postgres: checkpointer", "postgres: a b [local] idle", "x"] {
            assert!(BACKEND_TYPES.contains(&parse_title(s, false).backend_type));
        }
    }
}
