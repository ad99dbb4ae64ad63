//! The Grafana dashboard shipped in docker/grafana/vesta-dashboard.json: it parses, every panel queries
//! Prometheus through the dashboard's data-source variable, every metric it queries is one the code
//! records (a renamed metric leaves an empty panel otherwise), and every query is valid PromQL according
//! to Prometheus's own `promtool` (skipped, visibly, without it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn dashboard() -> serde_json::Value {
    let path = repo_root().join("docker/grafana/vesta-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard, with the panel it belongs to.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("a panels list");
    let mut queries = Vec::new();
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title:?} must use the data-source variable");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    queries
}

/// The `vesta_…` metric names a PromQL expression refers to (label values such as job names excluded).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_quotes = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if word.starts_with("vesta_") {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// Every string literal `"vesta_…"` in the Rust sources of the crates that record metrics.
fn recorded_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for literal in text.split('"').skip(1).step_by(2) {
                    if literal.starts_with("vesta_") && literal.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        found.insert(literal.to_string());
                    }
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    for krate in ["resp-proxy", "store", "cluster", "repl", "tls"] {
        walk(&repo_root().join(krate).join("src"), &mut found);
    }
    found
}

#[test]
fn every_metric_the_dashboard_queries_is_recorded() {
    let dashboard = dashboard();
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource", "the first variable picks the Prometheus");
    let recorded = recorded_metrics();
    assert!(recorded.contains("vesta_proxy_commands_total"), "metric names not found in the sources: {recorded:?}");
    let mut unknown = Vec::new();
    let mut queried = BTreeSet::new();
    for (panel, expr) in queries(&dashboard) {
        let names = metric_names(&expr);
        // `up` is Prometheus's own: whether the target's /metrics answered.
        assert!(!names.is_empty() || expr.starts_with("up{"), "panel {panel:?} queries no Vesta metric: {expr}");
        for name in names {
            // A histogram's series: NAME_bucket, NAME_sum, NAME_count; a summary's NAME{quantile}.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| recorded.contains(*b)))
                .unwrap_or(&name);
            if !recorded.contains(base) {
                unknown.push(format!("{name} (panel {panel:?})"));
            }
            queried.insert(base.to_string());
        }
    }
    assert!(unknown.is_empty(), "the dashboard queries metrics that no code records: {unknown:#?}");
    eprintln!("the dashboard queries {} metrics, all recorded: {queried:?}", queried.len());
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    if !std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED every_dashboard_query_is_valid_promql: no promtool (Debian package prometheus)");
        return;
    }
    // promtool checks recording rules' expressions: one rule per query, Grafana's variables filled in.
    let mut rules = String::from("groups:\n  - name: vesta-dashboard\n    rules:\n");
    let queries = queries(&dashboard());
    for (i, (_, expr)) in queries.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$proxy_job", "vesta-proxy")
            .replace("$store_job", "vesta-store");
        let quoted = serde_json::to_string(&expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!("      - record: vesta_dashboard_query_{i}\n        expr: {quoted}\n"));
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).expect("write the rules file");
    let out = std::process::Command::new("promtool").args(["check", "rules"]).arg(&file).output().expect("promtool");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool rejects a dashboard query:\n{report}\n{rules}");
    assert!(report.contains(&format!("SUCCESS: {} rules found", queries.len())), "{report}");
}
