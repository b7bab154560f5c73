//! Python anchor rows for `crew bench overhead --python`: runs the anchors'
//! `python/overhead.py` (which appends one JSON line per method to
//! `$ANCHORS_JSONL`) and turns its figures into `python.<method>` records.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::report::Record;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct PythonOptions {
    /// The anchors folder (`shared/anchors`), holding `python/overhead.py`.
    pub(crate) anchors: PathBuf,
    pub(crate) tasks: usize,
    pub(crate) rounds: usize,
    /// `overhead.py` method names (`serial`, `mp_map_default`, …).
    pub(crate) methods: Vec<String>,
    /// Where the JSON lines go.
    pub(crate) jsonl: PathBuf,
}

/// The methods run by default: the ones that need only the standard library
/// plus joblib where it is installed.
pub(crate) const DEFAULT_METHODS: &[&str] = &[
    "serial",
    "mp_map_default",
    "mp_apply_async",
    "tpe_submit",
    "ppe_submit",
    "joblib_loky",
];

/// One line `overhead.py` appends to `$ANCHORS_JSONL`.
#[derive(Debug, Deserialize)]
struct Line {
    case: String,
    unit: String,
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

fn has_module(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the Python overhead anchors and returns `(record, Python label)`
/// per method, or why it could not (no python3, no script, a failed run).
pub(crate) fn overhead_rows(o: &PythonOptions) -> Result<Vec<(Record, String)>, String> {
    let script = o.anchors.join("python").join("overhead.py");
    if !script.is_file() {
        return Err(format!(
            "{} not found (pass --anchors DIR, the anchors folder of shared/)",
            script.display()
        ));
    }
    if !Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Err("python3 not found".into());
    }
    // A method whose library is missing would stop the whole script.
    let mut methods = Vec::new();
    for m in &o.methods {
        let needs = if m.starts_with("joblib") {
            Some("joblib")
        } else if m.starts_with("mpire") {
            Some("mpire")
        } else {
            None
        };
        match needs {
            Some(module) if !has_module(module) => {
                eprintln!("python: skipping {m} ({module} is not installed)");
            }
            _ => methods.push(m.clone()),
        }
    }
    if methods.is_empty() {
        return Err("no Python method left to run".into());
    }
    if let Some(dir) = o.jsonl.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_file(&o.jsonl);
    eprintln!(
        "python: {} --n {} --rounds {} --only {}",
        script.display(),
        o.tasks,
        o.rounds,
        methods.join(",")
    );
    let status = Command::new("python3")
        .arg(&script)
        .args(["--n", &o.tasks.to_string()])
        .args(["--rounds", &o.rounds.to_string()])
        .args(["--only", &methods.join(",")])
        .env("ANCHORS_JSONL", &o.jsonl)
        // The script's own table goes to stderr, beside its progress lines.
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("running python3: {e}"))?;
    if !status.success() {
        return Err(format!("{} exited with {status}", script.display()));
    }
    let text = std::fs::read_to_string(&o.jsonl)
        .map_err(|e| format!("reading {}: {e}", o.jsonl.display()))?;
    let lines: Vec<Line> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("parsing {}: {e}", o.jsonl.display()))?;
    // The script reports the methods in the order given to `--only`, under
    // their human labels; match them up by position.
    if lines.len() != methods.len() {
        return Err(format!(
            "expected {} figures, got {}",
            methods.len(),
            lines.len()
        ));
    }
    Ok(methods
        .iter()
        .zip(lines)
        .map(|(m, l)| {
            let record = Record {
                suite: "overhead".into(),
                case: format!("python.{m}"),
                unit: l.unit,
                median: l.median,
                min: l.min,
                max: l.max,
                runs: l.runs,
            };
            (record, l.case)
        })
        .collect())
}

/// One line `seeds.py` appends to `$ANCHORS_JSONL`.
#[derive(Debug, Deserialize)]
struct SeedLine {
    case: String,
    unit: String,
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

/// A case label as a record name: lowercase words joined by `_`.
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// Runs the Python seed anchors (`python/seeds.py <which> --rounds N`) for
/// each workload and returns `(record, Python label)` per case, named
/// `python.<which>.<case>`; or why it could not (no python3, no numpy or
/// joblib, which the script imports: `pip install joblib numpy`).
pub(crate) fn seeds_rows(
    anchors: &std::path::Path,
    which: &[&str],
    rounds: usize,
    jsonl: &std::path::Path,
) -> Result<Vec<(Record, String)>, String> {
    let script = anchors.join("python").join("seeds.py");
    if !script.is_file() {
        return Err(format!(
            "{} not found (pass --anchors DIR)",
            script.display()
        ));
    }
    for module in ["numpy", "joblib"] {
        if !has_module(module) {
            return Err(format!(
                "python3 has no {module} (pip install joblib numpy)"
            ));
        }
    }
    if let Some(dir) = jsonl.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut rows = Vec::new();
    for w in which {
        let _ = std::fs::remove_file(jsonl);
        eprintln!("python: {} {w} --rounds {rounds}", script.display());
        let status = Command::new("python3")
            .arg(&script)
            .arg(w)
            .args(["--rounds", &rounds.to_string()])
            .env("ANCHORS_JSONL", jsonl)
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .map_err(|e| format!("running python3: {e}"))?;
        if !status.success() {
            return Err(format!("{} {w} exited with {status}", script.display()));
        }
        let text = std::fs::read_to_string(jsonl)
            .map_err(|e| format!("reading {}: {e}", jsonl.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let l: SeedLine =
                serde_json::from_str(line).map_err(|e| format!("parsing {line}: {e}"))?;
            let record = Record {
                suite: "seeds".into(),
                case: format!("python.{w}.{}", slug(&l.case)),
                unit: l.unit,
                median: l.median,
                min: l.min,
                max: l.max,
                runs: l.runs,
            };
            rows.push((record, l.case));
        }
    }
    Ok(rows)
}
