//! `failback validate [PATH]...`: checks plan files, in parallel.

use std::path::{Path, PathBuf};

use clap::Args;
use rayon::prelude::*;
use serde_json::json;

use crate::diagnostics::FileReport;
use crate::diagnostics::render::{self, HumanStyle};
use crate::validate::{self, Checked, Origin};

use super::load::read_capped;
use super::{Exit, Format, GlobalArgs, output};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Plan files, or directories searched recursively for `*.yaml` / `*.yml`
    /// files holding `kind: FailbackPlan` (other YAML files are skipped).
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Treat warnings as errors (exit 65 when there are any).
    #[arg(long)]
    pub deny_warnings: bool,
}

/// A file to check and how it was found.
struct Candidate {
    path: PathBuf,
    origin: Origin,
}

enum Outcome {
    Report(Box<FileReport>),
    Skipped(PathBuf),
    Unreadable(PathBuf, String),
}

pub fn run(global: &GlobalArgs, args: &ValidateArgs) -> Exit {
    let mut problems = Vec::new();
    let mut candidates = Vec::new();
    for path in &args.paths {
        collect(path, &mut candidates, &mut problems);
    }
    let outcomes: Vec<Outcome> = candidates.par_iter().map(check_one).collect();

    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Report(r) => reports.push(*r),
            Outcome::Skipped(p) => skipped.push(p.display().to_string()),
            Outcome::Unreadable(p, e) => {
                problems.push(format!("cannot read '{}': {e}", p.display()))
            }
        }
    }
    if reports.is_empty() && problems.is_empty() {
        let shown: Vec<String> = args
            .paths
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect();
        problems.push(format!(
            "no FailbackPlan files found in {}",
            shown.join(", ")
        ));
    }
    let invalid = reports
        .iter()
        .filter(|r| !r.is_valid(args.deny_warnings))
        .count();

    match global.format {
        Format::Json => {
            let files: Vec<_> = reports
                .iter()
                .map(|r| render::json_file(r, args.deny_warnings))
                .collect();
            output::out_json(&json!({
                "version": 1,
                "files": files,
                "skipped": skipped,
                "errors": problems,
                "summary": { "files": reports.len(), "valid": reports.len() - invalid, "invalid": invalid, "skipped": skipped.len() },
            }));
        }
        Format::Github => {
            for r in &reports {
                output::out(&render::github(r));
            }
        }
        Format::Human => {
            let style = HumanStyle {
                color: global.stderr_color(),
                unicode: true,
                width: 100,
            };
            for r in &reports {
                if !r.diagnostics.is_empty() {
                    output::err(&render::human(r, style));
                }
            }
            for r in &reports {
                output::out_line(&render::summary_line(r, args.deny_warnings));
            }
            output::out_line(&format!(
                "{} plan file{} checked: {} valid, {invalid} invalid; {} other YAML file{} skipped",
                reports.len(),
                if reports.len() == 1 { "" } else { "s" },
                reports.len() - invalid,
                skipped.len(),
                if skipped.len() == 1 { "" } else { "s" },
            ));
        }
    }
    for p in &problems {
        output::err_line(&format!("error: {p}"));
    }
    if !problems.is_empty() {
        Exit::NoInput
    } else if invalid > 0 {
        Exit::Invalid
    } else {
        Exit::Success
    }
}

fn collect(path: &Path, out: &mut Vec<Candidate>, problems: &mut Vec<String>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("cannot read '{}': {e}", path.display()));
            return;
        }
    };
    if !meta.is_dir() {
        out.push(Candidate {
            path: path.to_owned(),
            origin: Origin::Named,
        });
        return;
    }
    let walker = walkdir::WalkDir::new(path)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_file() && is_yaml(e.path()) => {
                out.push(Candidate {
                    path: e.into_path(),
                    origin: Origin::Discovered,
                });
            }
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "cannot read '{}': {e}",
                e.path().unwrap_or(path).display()
            )),
        }
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn check_one(c: &Candidate) -> Outcome {
    let bytes = match read_capped(&c.path) {
        Ok(b) => b,
        Err(e) => return Outcome::Unreadable(c.path.clone(), e.to_string()),
    };
    match validate::check(&c.path.display().to_string(), &bytes, c.origin) {
        Checked::Plan(report, _) => Outcome::Report(report),
        Checked::NotAPlan => Outcome::Skipped(c.path.clone()),
    }
}
