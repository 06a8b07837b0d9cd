//! Just enough PromQL and Prometheus text format to check that queries (a Grafana dashboard's,
//! the alert rules') name metrics and labels that senti really exports.
//!
//! [`selectors`] scans an expression for the series it reads: every metric name with the label
//! names of its matchers, plus the label names of `by (...)` / `without (...)` / `on (...)`
//! clauses. It is a scanner, not a parser: it skips string literals, `[...]` ranges (durations,
//! `$__rate_interval`) and numbers, takes an identifier followed by `(` for a function or an
//! aggregation, and any other identifier that is not a keyword for a metric name. Grafana's
//! `$variables` only appear inside strings and ranges, so they need no special case.
//! [`Exposition`] reads a `/metrics` page: sample names (a histogram's `_bucket`, `_sum` and
//! `_count` appear there under those names) and the label names each one carries.

use std::collections::{BTreeMap, BTreeSet};

/// One series selector of an expression: `name{label="..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric name (empty for a selector on `{__name__=...}` only).
    pub metric: String,
    /// Label names its matchers use.
    pub labels: Vec<String>,
}

/// What an expression reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reads {
    /// Its series selectors, in order.
    pub selectors: Vec<Selector>,
    /// Label names of its grouping and matching clauses (`by`, `without`, `on`, `ignoring`,
    /// `group_left`, `group_right`).
    pub grouping: BTreeSet<String>,
}

impl Reads {
    /// The metric names it reads.
    pub fn metrics(&self) -> BTreeSet<String> {
        self.selectors.iter().filter(|s| !s.metric.is_empty()).map(|s| s.metric.clone()).collect()
    }
}

/// Keywords that look like identifiers but name no metric.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The series selectors and grouping labels of a PromQL expression.
pub fn selectors(expr: &str) -> Reads {
    let chars: Vec<char> = expr.chars().collect();
    let mut reads = Reads::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector without a name in front of it, `{__name__="x"}`.
            let (labels, end) = matchers(&chars, i);
            reads.selectors.push(Selector { metric: String::new(), labels });
            i = end;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            // A number or a duration (`offset 5m`, `1e3`, `0x1f`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            let lower = word.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                if next.is_some_and(|n| chars[n] == '(') {
                    let close = find_close(&chars, next.unwrap(), '(', ')');
                    let list: String = chars[next.unwrap() + 1..close].iter().collect();
                    reads.grouping.extend(list.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
                    i = close + 1;
                }
            } else if next.is_some_and(|n| chars[n] == '(')
                || KEYWORDS.contains(&lower.as_str())
                || next.is_some_and(|n| ["by", "without"].contains(&word_at(&chars, n).to_ascii_lowercase().as_str()))
            {
                // A function or an aggregation (`sum by (le) (...)`): its arguments are scanned as
                // they come.
            } else if next.is_some_and(|n| chars[n] == '{') {
                let (labels, end) = matchers(&chars, next.unwrap());
                reads.selectors.push(Selector { metric: word, labels });
                i = end;
            } else {
                reads.selectors.push(Selector { metric: word, labels: Vec::new() });
            }
        } else {
            i += 1;
        }
    }
    reads
}

/// Label names of the matchers in `{...}` starting at `open`; returns them and the index after `}`.
fn matchers(chars: &[char], open: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut i = open + 1;
    let mut name = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '}' {
            return (labels, i + 1);
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i);
            continue;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else if c == '=' || c == '!' {
            if !name.is_empty() {
                labels.push(std::mem::take(&mut name));
            }
            // `=~`, `!=`, `!~`: the second character is skipped with the value that follows.
        } else {
            name.clear();
        }
        i += 1;
    }
    (labels, i)
}

/// The index after the string literal starting at `open`.
fn skip_string(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    i
}

/// The identifier starting at `from` (empty if none does).
fn word_at(chars: &[char], from: usize) -> String {
    chars[from..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect()
}

fn next_non_space(chars: &[char], from: usize) -> Option<usize> {
    (from..chars.len()).find(|&j| !chars[j].is_whitespace())
}

/// The index of the bracket closing the one at `open` (or the end).
fn find_close(chars: &[char], open: usize, left: char, right: char) -> usize {
    let mut depth = 0;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        if c == left {
            depth += 1;
        } else if c == right {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    chars.len()
}

/// A `/metrics` page in the Prometheus text format.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    /// Sample name -> every label name seen on it.
    pub samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    /// Reads one page (call again to merge several nodes' pages).
    pub fn add(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let chars: Vec<char> = line.chars().collect();
            let end = chars.iter().position(|&c| c == '{' || c == ' ').unwrap_or(chars.len());
            let name: String = chars[..end].iter().collect();
            let labels = if chars.get(end) == Some(&'{') { matchers(&chars, end).0 } else { Vec::new() };
            self.samples.entry(name).or_default().extend(labels);
        }
    }

    /// Whether a series of this name exists.
    pub fn has(&self, metric: &str) -> bool {
        self.samples.contains_key(metric)
    }

    /// Label names seen on a metric.
    pub fn labels(&self, metric: &str) -> Option<&BTreeSet<String>> {
        self.samples.get(metric)
    }
}

/// Series Prometheus adds to every target itself (they are in no `/metrics` page).
pub const SCRAPE_SERIES: &[&str] =
    &["up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling"];
/// Labels Prometheus attaches to every scraped series (the target's address and its job).
pub const TARGET_LABELS: &[&str] = &["instance", "job"];

/// What in `expr` is not exported: metric names absent from `exposition` and label names that
/// none of the expression's metrics carries. Empty when everything it reads exists.
pub fn missing(expr: &str, exposition: &Exposition) -> Vec<String> {
    let reads = selectors(expr);
    let mut problems = Vec::new();
    if reads.metrics().is_empty() {
        problems.push("reads no metric".to_owned());
    }
    let mut known_labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
    for selector in &reads.selectors {
        let metric = &selector.metric;
        if metric.is_empty() {
            problems.push("a selector without a metric name".to_owned());
            continue;
        }
        let labels = if SCRAPE_SERIES.contains(&metric.as_str()) {
            Some(BTreeSet::new())
        } else if let Some(labels) = exposition.labels(metric) {
            Some(labels.clone())
        } else {
            let histogram = ["_bucket", "_sum", "_count"].iter().any(|s| exposition.has(&format!("{metric}{s}")));
            let hint = if histogram { " (a histogram: read its _bucket, _sum or _count)" } else { "" };
            problems.push(format!("metric `{metric}` is not exported{hint}"));
            None
        };
        if let Some(labels) = labels {
            for label in &selector.labels {
                if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!("`{metric}` has no label `{label}`"));
                }
            }
            known_labels.extend(labels);
        }
    }
    for label in &reads.grouping {
        if !known_labels.contains(label) {
            problems.push(format!("no metric of the expression has the grouping label `{label}`"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metrics_and_skips_functions_strings_ranges_and_grouping_labels() {
        let reads = selectors(
            r#"histogram_quantile(0.99, sum by (instance, le) (rate(senti_http_request_seconds_bucket{instance=~"$instance", route=~"/v1/classify|/analyze"}[$__rate_interval])))
               / on (instance) group_left sum(rate(senti_x_total[5m] offset 1h)) > 0.25 and senti_y unless up{job="senti"} == bool 0"#,
        );
        assert_eq!(
            reads.selectors,
            vec![
                Selector {
                    metric: "senti_http_request_seconds_bucket".into(),
                    labels: vec!["instance".into(), "route".into()]
                },
                Selector { metric: "senti_x_total".into(), labels: vec![] },
                Selector { metric: "senti_y".into(), labels: vec![] },
                Selector { metric: "up".into(), labels: vec!["job".into()] },
            ]
        );
        assert_eq!(reads.grouping, ["instance", "le"].iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn strings_with_braces_and_escapes_do_not_confuse_it() {
        let reads = selectors(r#"count(senti_a{route="/x{1}", b!~"a\"}b"}) by (route)"#);
        assert_eq!(reads.metrics(), ["senti_a".to_owned()].into());
        assert_eq!(reads.selectors[0].labels, ["route", "b"]);
    }

    #[test]
    fn reports_unknown_metrics_labels_and_bare_histogram_names() {
        let mut exposition = Exposition::default();
        exposition.add(
            "# TYPE senti_h histogram\nsenti_h_bucket{le=\"0.1\"} 1\nsenti_h_sum 0.1\nsenti_h_count 1\n\
             senti_c_total{route=\"/a\",status=\"200\"} 3\n",
        );
        assert!(missing(r#"sum by (le) (rate(senti_h_bucket[5m])) / up"#, &exposition).is_empty());
        assert!(
            missing(r#"sum by (status) (rate(senti_c_total{instance=~"$i", route="/a"}[5m]))"#, &exposition).is_empty()
        );
        assert_eq!(
            missing("rate(senti_h[5m])", &exposition),
            ["metric `senti_h` is not exported (a histogram: read its _bucket, _sum or _count)"]
        );
        assert_eq!(missing(r#"senti_c_total{hop="x"}"#, &exposition), ["`senti_c_total` has no label `hop`"]);
        assert_eq!(
            missing("sum by (hop) (senti_c_total)", &exposition),
            ["no metric of the expression has the grouping label `hop`"]
        );
        assert_eq!(missing("vector(1)", &exposition), ["reads no metric"]);
    }
}
