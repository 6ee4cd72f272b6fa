//! Times each phase of `failback::validate::check` on one plan, in process,
//! so that start-up is left out and each phase is timed on its own:
//! the YAML parse into position-carrying nodes, their conversion to JSON,
//! the schema check and the typed read; the semantic rules and the secret
//! scan are what the whole check spends beyond these. For comparison, the
//! same text parsed by serde-saphyr straight into `serde_json::Value`
//! (no positions), which is what jsonschema-cli does with a YAML instance.
//!
//! Usage: failback-validate-phases PLAN.yaml [ROUNDS]

use std::hint::black_box;
use std::time::{Duration, Instant};

use failback::plan::{FailbackPlan, plan_schema};
use failback::validate::yaml::Node;
use failback::validate::{self, Checked, Origin};
use serde_json::Value;

/// The options of `failback::validate::parse_options` that change the work
/// done (the budget only bounds it).
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// `failback::validate::parse_options` as it stands (private there), with
/// its resource budget.
fn budget_options() -> serde_saphyr::Options {
    let budget = serde_saphyr::budget! {
        max_depth: 32,
        flow_nesting_limit: 32,
        max_documents: 1,
        max_aliases: 1_000,
        max_anchors: 1_000,
        max_nodes: 2_000_000,
        max_events: 4_000_000,
        max_total_scalar_bytes: 4 * 1024 * 1024,
        max_recorded_anchor_events: 100_000,
        max_recorded_anchor_bytes: 1 << 20,
    };
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    alias_limits.max_replay_stack_depth = 16;
    serde_saphyr::options! {
        budget: budget,
        alias_limits: alias_limits,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// The median of `rounds` timings of `f`.
fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t0 = Instant::now();
            let out = f();
            let t = t0.elapsed();
            drop(black_box(out));
            t
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// The median of `rounds` timings that `f` takes itself (to leave set-up out).
fn time_inner(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..rounds).map(|_| f()).collect();
    times.sort();
    times[times.len() / 2]
}

/// Runs `f` on a thread with the parser's 16 MiB stack, as failback does.
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn_scoped(s, f)
            .map(|h| h.join())
    })
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| std::process::exit(2))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: {} PLAN.yaml [ROUNDS]", args[0]);
        std::process::exit(64);
    };
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(15);
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(66)
    });
    let text = std::str::from_utf8(&bytes).unwrap_or_else(|_| std::process::exit(65));

    let parse_spanned =
        || on_big_stack(|| serde_saphyr::from_str_with_options::<Node>(text, options()));
    let node = match parse_spanned() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("parse error: {e}");
            std::process::exit(65)
        }
    };
    let value = node.to_json(&mut String::new(), &mut Vec::new());
    let schema = plan_schema();

    let mut rows: Vec<(&str, Duration)> = Vec::new();
    rows.push((
        "whole check: failback::validate::check",
        time(rounds, || {
            match validate::check(path, &bytes, Origin::Named) {
                Checked::Plan(report, plan) => (report.diagnostics.len(), plan.is_some()),
                Checked::NotAPlan => (0, false),
            }
        }),
    ));
    rows.push((
        "  control-character scan of the text",
        time(rounds, || {
            text.chars()
                .any(|c| (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FEFF}')
        }),
    ));
    rows.push((
        "  YAML -> spanned Node tree (serde-saphyr + Spanned)",
        time(rounds, parse_spanned),
    ));
    rows.push((
        "  the same with failback's budget options",
        time(rounds, || {
            on_big_stack(|| serde_saphyr::from_str_with_options::<Node>(text, budget_options()))
        }),
    ));
    rows.push((
        "  the same, without the 16 MiB-stack thread",
        time(rounds, || {
            serde_saphyr::from_str_with_options::<Node>(text, budget_options())
        }),
    ));
    rows.push((
        "  Node tree -> serde_json::Value (to_json)",
        time(rounds, || node.to_json(&mut String::new(), &mut Vec::new())),
    ));
    rows.push((
        "  schema: build the validator (once per process)",
        time(rounds, || {
            jsonschema::options()
                .with_pattern_options(jsonschema::PatternOptions::regex())
                .build(&schema)
                .is_ok()
        }),
    ));
    let validator = jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&schema)
        .unwrap_or_else(|_| std::process::exit(2));
    rows.push((
        "  schema: iter_errors over the instance (as failback)",
        time(rounds, || validator.iter_errors(&value).count()),
    ));
    rows.push((
        "  schema: is_valid (for comparison)",
        time(rounds, || validator.is_valid(&value)),
    ));
    rows.push((
        "  serde_json::Value -> FailbackPlan (from_value)",
        time_inner(rounds, || {
            let v = value.clone();
            let t0 = Instant::now();
            let plan = black_box(serde_json::from_value::<FailbackPlan>(v));
            let t = t0.elapsed();
            drop(plan);
            t
        }),
    ));
    rows.push((
        "  drop of the Node tree",
        time_inner(rounds, || {
            let n = node.clone();
            let t0 = Instant::now();
            drop(black_box(n));
            t0.elapsed()
        }),
    ));
    rows.push((
        "comparison: YAML -> serde_json::Value directly, no spans",
        time(rounds, || {
            on_big_stack(|| serde_saphyr::from_str_with_options::<Value>(text, options()).is_ok())
        }),
    ));
    rows.push(
        ("comparison: JSON text -> serde_json::Value (serde_json)", {
            let json = serde_json::to_string(&value).unwrap_or_default();
            time(rounds, move || serde_json::from_str::<Value>(&json).is_ok())
        }),
    );

    println!("{path}: {} bytes, median of {rounds} rounds", bytes.len());
    println!("{:<62} {:>10}", "phase", "ms");
    for (label, d) in rows {
        println!("{label:<62} {:>10.3}", ms(d));
    }
}
