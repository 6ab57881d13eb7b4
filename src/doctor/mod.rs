//! `gpu-slicer doctor`: one read-only pass over a live cluster, and every finding that keeps sliced GPU
//! pods from running, each with the object, the evidence and the fix.
//!
//! - [`snapshot`]: what was read, digested ([`ClusterSnapshot`]);
//! - [`read`]: reading it through [`crate::cluster::kubeapi`] (the only part that touches the network);
//! - [`checks`]: the checks, pure functions of a snapshot and the clock, one file each behind one
//!   trait ([`checks::Check`]), run in the order of [`checks::ALL`];
//! - here: findings, their order, the table and the JSON.
//!
//! The check IDs (the names of [`checks::ALL`]) are a contract: scripts and alerts key on them.
//!
//! Imports: the core, [`crate::input`], [`crate::terminal`], [`crate::cluster`],
//! [`crate::policy_source`], [`crate::controller`] and [`crate::webhook`] (the manifests it checks
//! against); never its peers (planner, report, usage) or the CLI.

pub mod checks;
pub mod read;
pub mod snapshot;

use serde::Serialize;

pub use checks::Options;
pub use snapshot::ClusterSnapshot;

/// How bad a finding is. Ordered worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    /// `error` | `warning` | `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One thing doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's ID, e.g. `nodeclaim-resource-not-registered`.
    pub check: &'static str,
    pub severity: Severity,
    /// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object.
    pub object: String,
    pub message: String,
    pub fix: String,
}

/// Counts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub error: usize,
    pub warning: usize,
    pub info: usize,
}

/// The findings, worst first, and their counts: `--output json` prints exactly this.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnosis {
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Diagnosis {
    /// Orders findings (severity, check, object) and counts them.
    pub fn new(mut findings: Vec<Finding>) -> Diagnosis {
        findings.sort_by(|a, b| {
            (a.severity, a.check, &a.object, &a.message)
                .cmp(&(b.severity, b.check, &b.object, &b.message))
        });
        findings.dedup();
        let mut summary = Summary::default();
        for f in &findings {
            match f.severity {
                Severity::Error => summary.error += 1,
                Severity::Warning => summary.warning += 1,
                Severity::Info => summary.info += 1,
            }
        }
        Diagnosis { findings, summary }
    }

    /// Exit status: 1 when there is an error, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.error > 0)
    }

    /// The table: grouped by severity, worst first, ending with the summary line.
    pub fn table(&self) -> String {
        use crate::terminal::escape_controls;
        let mut out = String::new();
        let mut current = None;
        for f in &self.findings {
            if current != Some(f.severity) {
                if current.is_some() {
                    out.push('\n');
                }
                current = Some(f.severity);
                let n = self
                    .findings
                    .iter()
                    .filter(|g| g.severity == f.severity)
                    .count();
                out.push_str(&format!("{} ({n})\n", f.severity.as_str().to_uppercase()));
            }
            // Objects and messages carry names from the cluster: escaped, so they cannot drive the
            // terminal.
            out.push_str(&format!("  {}  {}\n", f.check, escape_controls(&f.object)));
            out.push_str(&format!("      {}\n", escape_controls(&f.message)));
            if !f.fix.is_empty() {
                out.push_str(&format!("      fix: {}\n", escape_controls(&f.fix)));
            }
        }
        if !self.findings.is_empty() {
            out.push('\n');
        }
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        out.push_str(&format!(
            "{}, {}, {} info\n",
            plural(self.summary.error, "error"),
            plural(self.summary.warning, "warning"),
            self.summary.info
        ));
        out
    }
}

/// Runs every check on a snapshot.
pub fn diagnose(snapshot: &ClusterSnapshot, options: &Options) -> Diagnosis {
    Diagnosis::new(checks::run_all(snapshot, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(check: &'static str, severity: Severity, object: &str) -> Finding {
        Finding {
            check,
            severity,
            object: object.into(),
            message: format!("{check} on {object}"),
            fix: if severity == Severity::Info {
                String::new()
            } else {
                "do it".into()
            },
        }
    }

    #[test]
    fn the_table_groups_worst_first_and_ends_with_the_summary() {
        let report = Diagnosis::new(vec![
            f("pod-not-rewritten", Severity::Warning, "Pod/a/b"),
            f(
                "policy-cluster-mismatch",
                Severity::Info,
                "ConfigMap/gpu-slicer/gpu-slicer-policy",
            ),
            f("mig-config-failed", Severity::Error, "Node/n2"),
            f("mig-config-failed", Severity::Error, "Node/n1"),
        ]);
        assert_eq!(
            report.summary,
            Summary {
                error: 2,
                warning: 1,
                info: 1
            }
        );
        assert_eq!(report.exit_code(), 1);
        assert_eq!(
            report.table(),
            "ERROR (2)
  mig-config-failed  Node/n1
      mig-config-failed on Node/n1
      fix: do it
  mig-config-failed  Node/n2
      mig-config-failed on Node/n2
      fix: do it

WARNING (1)
  pod-not-rewritten  Pod/a/b
      pod-not-rewritten on Pod/a/b
      fix: do it

INFO (1)
  policy-cluster-mismatch  ConfigMap/gpu-slicer/gpu-slicer-policy
      policy-cluster-mismatch on ConfigMap/gpu-slicer/gpu-slicer-policy

2 errors, 1 warning, 1 info
"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["summary"],
            serde_json::json!({"error": 2, "warning": 1, "info": 1})
        );
        assert_eq!(
            json["findings"][0],
            serde_json::json!({"check": "mig-config-failed", "severity": "error", "object": "Node/n1", "message": "mig-config-failed on Node/n1", "fix": "do it"})
        );
        assert_eq!(
            Diagnosis::new(Vec::new()).table(),
            "0 errors, 0 warnings, 0 info\n"
        );
        assert_eq!(Diagnosis::new(Vec::new()).exit_code(), 0);
    }

    /// Objects and messages quote the cluster (names, annotations, events): an `ESC [2J` in them is
    /// shown escaped, never sent to the terminal; the JSON keeps it as it is.
    #[test]
    fn escape_sequences_from_the_cluster_are_escaped_in_the_table() {
        let mut finding = f("pod-not-rewritten", Severity::Warning, "Pod/a/b\x1b[2J");
        finding.message = "annotation says \x1b]0;owned\x07".into();
        finding.fix = "\u{9b}31m".into();
        let report = Diagnosis::new(vec![finding]);
        let table = report.table();
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(
            table.contains("  pod-not-rewritten  Pod/a/b\\x1b[2J\n"),
            "{table}"
        );
        assert!(
            table.contains("annotation says \\x1b]0;owned\\x07\n"),
            "{table}"
        );
        assert!(table.contains("fix: \\u{9b}31m\n"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["findings"][0]["object"], "Pod/a/b\x1b[2J");
    }
}
