//! Benchmark records and where they go: `<target>/crew-bench/<suite>.json`
//! (an array of `{"suite","case","unit","median","min","max","runs"}`), a
//! markdown table beside it, and the same table on stdout.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::harness::{Measured, Summary, fmt, summarize};

/// One figure: a case of a suite, in a unit, over `runs` rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) suite: String,
    pub(crate) case: String,
    pub(crate) unit: String,
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: usize,
}

impl Record {
    /// A record from a summary.
    pub(crate) fn new(suite: &str, case: &str, unit: &str, s: Summary) -> Record {
        Record {
            suite: suite.into(),
            case: case.into(),
            unit: unit.into(),
            median: s.median,
            min: s.min,
            max: s.max,
            runs: s.runs,
        }
    }

    /// A record of measured rounds, divided by the work per run and scaled
    /// to the unit (1e6 for µs, 1e3 for ms).
    pub(crate) fn from_measured(suite: &str, m: &Measured, unit: &str, scale: f64) -> Record {
        Record::new(suite, &m.name, unit, summarize(&m.scaled(scale)))
    }
}

/// The folder the reports go to: `<target>/crew-bench`.
pub(crate) fn bench_dir(target: &Path) -> PathBuf {
    target.join("crew-bench")
}

/// Writes `records` as `<dir>/<suite>.json`; returns the path.
pub(crate) fn write_json(dir: &Path, suite: &str, records: &[Record]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{suite}.json"));
    let text = serde_json::to_string_pretty(records)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The records as a markdown table; `notes` go into an extra column.
pub(crate) fn markdown(title: &str, records: &[Record], notes: &[(String, String)]) -> String {
    let mut out = format!("### {title}\n\n");
    let unit = records.first().map_or("", |r| r.unit.as_str());
    let with_notes = !notes.is_empty();
    out.push_str(&format!("| case | median {unit} | min | max | runs |"));
    out.push_str(if with_notes { " note |\n" } else { "\n" });
    out.push_str("|---|---:|---:|---:|---:|");
    out.push_str(if with_notes { "---|\n" } else { "\n" });
    for r in records {
        let unit_note = if r.unit != unit {
            format!(" ({})", r.unit)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {}{unit_note} | {} | {} | {} | {} |",
            r.case,
            fmt(r.median),
            fmt(r.min),
            fmt(r.max),
            r.runs
        ));
        if with_notes {
            let note = notes
                .iter()
                .find(|(c, _)| *c == r.case)
                .map_or("", |(_, n)| n.as_str());
            out.push_str(&format!(" {note} |"));
        }
        out.push('\n');
    }
    out
}
