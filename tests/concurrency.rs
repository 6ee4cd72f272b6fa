//! One actor per plan (issue 4, docs/reliability.md): 50 `apply`s of one
//! plan started at once: exactly one acts, the 49 others exit 75 naming the
//! owner's pid, without waiting for the lock; after `kill -9` of an owner
//! mid-run, the next `apply` takes over at once and converges.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::reliability::{Variant, check_events};
use crate::support::{Case, stderr, stdout};

const RACERS: usize = 50;

fn journal(case: &Case) -> Vec<Value> {
    std::fs::read_to_string(case.state_dir().join("reliability/journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The pid in the owner record of the plan's run lock, once written.
fn lock_owner(case: &Case) -> Option<u32> {
    let text = std::fs::read_to_string(case.state_dir().join("reliability/run.lock")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Waits for `child` on a thread; returns its output and when it exited.
fn watch(child: Child) -> std::thread::JoinHandle<(Output, Instant)> {
    std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        (out, Instant::now())
    })
}

#[test]
fn fifty_applies_at_once_one_acts_the_others_exit_75_naming_it() {
    let case = Case::new(&Variant::Delta.plan());
    // Every simulated site operation takes 250 ms: the owner runs for
    // seconds, long enough for every racer to start and give up.
    case.init(&["--latency", "250"]);
    let started = Instant::now();
    let children: Vec<(u32, Instant, _)> = (0..RACERS)
        .map(|_| {
            let child = case
                .cmd(&["apply", case.plan_path()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (child.id(), Instant::now(), watch(child))
        })
        .collect();
    let spawned = started.elapsed();
    let results: Vec<(u32, Instant, Output, Instant)> = children
        .into_iter()
        .map(|(pid, at, h)| {
            let (out, end) = h.join().unwrap();
            (pid, at, out, end)
        })
        .collect();

    let winners: Vec<_> = results
        .iter()
        .filter(|(_, _, out, _)| out.status.code() == Some(0))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one apply acts; exit codes: {:?}",
        results
            .iter()
            .map(|r| r.2.status.code())
            .collect::<Vec<_>>()
    );
    let (owner, _, owner_out, owner_end) = winners[0];
    assert!(
        stderr(owner_out).contains("applying plan"),
        "{}",
        stderr(owner_out)
    );
    let mut slowest = Duration::ZERO;
    for (pid, at, out, end) in &results {
        if pid == owner {
            continue;
        }
        assert_eq!(
            out.status.code(),
            Some(75),
            "pid {pid}: {}{}",
            stdout(out),
            stderr(out)
        );
        assert!(
            stderr(out).contains(&format!("pid {owner} ")),
            "pid {pid} names the owner (pid {owner}): {}",
            stderr(out)
        );
        assert!(
            stdout(out).is_empty(),
            "a loser printed a result: {}",
            stdout(out)
        );
        // They do not wait for the lock: each is gone before the owner is done.
        assert!(
            end < owner_end,
            "pid {pid} exited after the owner finished: it waited for the lock"
        );
        slowest = slowest.max(end.duration_since(*at));
    }
    // Exactly one acted: one run in the journal, one power-on per VM.
    let journal = journal(&case);
    let runs = journal
        .iter()
        .filter(|e| e["event"] == "run-started")
        .count();
    assert_eq!(runs, 1, "one run-started in the journal");
    assert!(journal.iter().any(|e| e["event"] == "step-started"));
    let events = case.events();
    let power_ons = events.iter().filter(|e| e["event"] == "power-on").count();
    assert_eq!(power_ons, 3, "one power-on per VM");
    check_events(&events, "fifty applies");
    case.assert_converged_as("fifty applies");
    let owner_ran = owner_end.duration_since(started);
    println!(
        "concurrency: {RACERS} applies spawned in {spawned:?}; the owner ran {owner_ran:?}; \
         the slowest of {} losers exited {slowest:?} after its start",
        RACERS - 1
    );
}

#[test]
fn after_kill_9_of_the_owner_the_next_apply_takes_over_at_once() {
    let case = Case::new(&Variant::Delta.plan());
    case.init(&["--latency", "100"]);
    let mut owner = case
        .cmd(&["apply", case.plan_path()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = owner.id();
    // Wait (without sleeping) until the owner's record is in the lock file
    // and it started a step: it is mid-run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock_owner(&case) != Some(pid)
        || !journal(&case).iter().any(|e| e["event"] == "step-started")
    {
        assert!(owner.try_wait().unwrap().is_none(), "the owner ended early");
        assert!(Instant::now() < deadline, "the owner never took the lock");
        std::thread::yield_now();
    }
    // While it runs, another apply is refused and names it.
    let refused = case.apply_with(&[]);
    assert_eq!(refused.status.code(), Some(75), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&format!("pid {pid} ")),
        "{}",
        stderr(&refused)
    );

    owner.kill().unwrap(); // SIGKILL
    let status = owner.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");

    // The lock of a killed holder is free at once: the very next apply
    // takes it (never 75), finishes the failback, and names itself.
    let killed_at = Instant::now();
    let mut next = case
        .cmd(&["apply", case.plan_path()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let next_pid = next.id();
    while lock_owner(&case) != Some(next_pid) {
        if let Some(status) = next.try_wait().unwrap() {
            panic!("the next apply ended ({status}) without taking the lock");
        }
        std::thread::yield_now();
    }
    let took_over = killed_at.elapsed();
    let out = next.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    case.assert_converged_as("after kill -9");
    let events = case.events();
    assert!(!events.is_empty(), "the lab logged nothing");
    check_events(&events, "after kill -9");
    println!("concurrency: after kill -9, the next apply held the lock {took_over:?} later");
}
