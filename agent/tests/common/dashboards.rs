//! The Grafana dashboards in `dashboards/`, read from their JSON: panels,
//! query targets, template variables, and Grafana's variable substitution.
//! The tests take every expression from these files, so there is no second
//! copy of a query to drift.
use std::{collections::BTreeMap, path::PathBuf};

use serde_json::Value;

/// The dashboards every deployment ships.
pub const FILES: [&str; 2] = ["pgpreempt-overview.json", "pgpreempt-host.json"];

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Dashboard {
    pub file: &'static str,
    pub json: Value,
}

pub fn load_all() -> Vec<Dashboard> {
    FILES
        .iter()
        .map(|&file| {
            let path = repo_root().join("dashboards").join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
            Dashboard { file, json }
        })
        .collect()
}

/// One query of one panel.
pub struct Target {
    pub panel: String,
    pub expr: String,
}

/// A template variable.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub kind: String,
    /// The query of a `query` variable (`label_values(...)`), as Grafana
    /// stores it: a string, or an object with a `query` field.
    pub query: Option<String>,
    pub multi: bool,
    pub include_all: bool,
}

impl Dashboard {
    /// Every panel, including those inside collapsed rows.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().expect("panels") {
            out.push(p);
            if let Some(inner) = p["panels"].as_array() {
                out.extend(inner.iter());
            }
        }
        out
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(Target {
                    panel: p["title"].as_str().unwrap_or("?").to_string(),
                    expr: t["expr"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        out
    }

    pub fn variables(&self) -> Vec<Variable> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| Variable {
                name: v["name"].as_str().unwrap_or("").to_string(),
                kind: v["type"].as_str().unwrap_or("").to_string(),
                query: match &v["query"] {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o.get("query").and_then(|q| q.as_str()).map(String::from),
                    _ => None,
                },
                multi: v["multi"].as_bool().unwrap_or(false),
                include_all: v["includeAll"].as_bool().unwrap_or(false),
            })
            .collect()
    }
}

/// `label_values(selector, label)` or `label_values(label)`: (selector, label).
pub fn parse_label_values(q: &str) -> Option<(Option<String>, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((sel, label)) => Some((Some(sel.trim().to_string()), label.trim().to_string())),
        None => Some((None, inner.trim().to_string())),
    }
}

/// A value as Grafana's Prometheus data source writes it into a query:
/// a single-valued variable as is; a multi-value or "All" variable with the
/// regex metacharacters of each value escaped (doubled backslash, inside a
/// PromQL string) and the values joined as `(a|b)`.
pub fn format_value(v: &Variable, values: &[String]) -> String {
    if !v.multi && !v.include_all {
        return values[0].clone();
    }
    let escaped: Vec<String> = values
        .iter()
        .map(|s| {
            let mut o = String::new();
            for c in s.chars() {
                if r"\^$*+?.()|{}[]".contains(c) {
                    o.push_str(r"\\");
                }
                o.push(c);
            }
            o
        })
        .collect();
    if escaped.len() == 1 {
        escaped[0].clone()
    } else {
        format!("({})", escaped.join("|"))
    }
}

/// Each variable reference in `expr`: (byte offset, length, name). Knows
/// `$name`, `${name}` and `${name:format}`.
fn references(expr: &str) -> Result<Vec<(usize, usize, String)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = expr[at..].find('$').map(|i| i + at) {
        let after = &expr[i + 1..];
        let (name, len) = if let Some(b) = after.strip_prefix('{') {
            let end = b
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
            (b[..end].split(':').next().unwrap_or(""), end + 3)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end + 1)
        };
        if name.is_empty() {
            return Err(format!("a lone $ in {expr}"));
        }
        out.push((i, len, name.to_string()));
        at = i + len;
    }
    Ok(out)
}

/// Replaces every variable reference with its value from `values`. Fails on
/// a variable that has no value.
pub fn substitute(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut at = 0;
    for (i, len, name) in references(expr)? {
        let v = values
            .get(&name)
            .ok_or_else(|| format!("no value for variable ${name} in {expr}"))?;
        out.push_str(&expr[at..i]);
        out.push_str(v);
        at = i + len;
    }
    out.push_str(&expr[at..]);
    Ok(out)
}

/// The names of the variables an expression uses.
pub fn variables_used(expr: &str) -> Result<Vec<String>, String> {
    Ok(references(expr)?.into_iter().map(|r| r.2).collect())
}

/// Grafana's interval variables, as Grafana would fill them in for a
/// dashboard over the last hour on a data source whose scrape interval is
/// 15 s (the default, and deploy/prometheus/prometheus.yml's):
/// `$__rate_interval` = max(`$__interval` + 15 s, 4 x 15 s) = 1m.
pub fn builtin_values() -> BTreeMap<String, String> {
    [
        ("__interval", "15s"),
        ("__interval_ms", "15000"),
        ("__rate_interval", "1m"),
        ("__range", "1h"),
        ("__range_s", "3600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
