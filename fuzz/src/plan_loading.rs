//! A mutation fuzzer of plan loading on the stable toolchain.
//!
//! Why not cargo-fuzz: it needs a nightly toolchain, which the project's
//! machines cannot install. Why not AFL++ (`cargo afl`): it needs AFL++
//! built on the machine, and a separate process per run of its harness.
//! This fuzzer runs in-process on stable Rust, with no other dependency:
//!
//! - seed corpus: every YAML file under `tests/fixtures/validate/`,
//!   `plans/` and `fuzz/regressions/` (not `fuzz/regressions/open/`, the
//!   inputs of bugs still open);
//! - mutations: bit flips, interesting bytes, deletions, duplications,
//!   repetitions (deep nesting, long lines), YAML tokens (anchors, aliases,
//!   merge keys, tags, block scalars, document markers, BOMs, CR, tabs,
//!   bidi controls), line swaps and re-indentation, splices of two inputs;
//! - guidance: an input whose outcome (valid or not, the set of diagnostic
//!   codes, the lines they point at) was never seen joins the corpus;
//! - the target: `validate::check` as a named and as a discovered file, then
//!   every rendering of the report (human, JSON, GitHub, summary);
//! - oracles: a panic, an input taking longer than `--timeout-ms`, the
//!   process growing past `--max-rss-mib`, or a report whose `line`/`column`
//!   lies outside the file. Each finding is written to `fuzz/findings/`
//!   and the run exits non-zero; keep it as a regression input by moving it
//!   to `fuzz/regressions/`, where every later run and `cargo test` load it.
//!
//! ```text
//! cargo run --release --manifest-path fuzz/Cargo.toml -- --seconds 600 [--seed N]
//! ```

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use failback::diagnostics::render::{self, HumanStyle};
use failback::validate::{self, Checked, Origin};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Options {
    seconds: u64,
    seed: u64,
    timeout_ms: u64,
    max_rss_mib: u64,
    max_len: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        seconds: 60,
        seed: rand::rng().random(),
        timeout_ms: 2_000,
        max_rss_mib: 2_048,
        max_len: 64 * 1024,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--seconds" => o.seconds = n,
            "--seed" => o.seed = n,
            "--timeout-ms" => o.timeout_ms = n,
            "--max-rss-mib" => o.max_rss_mib = n,
            "--max-len" => o.max_len = usize::try_from(n).map_err(|e| e.to_string())?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            // `open/` holds inputs of bugs not fixed yet: not seeds.
            if p.file_name().is_some_and(|n| n == "open") {
                continue;
            }
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// The seed corpus.
fn seeds() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in ["tests/fixtures/validate", "plans", "fuzz/regressions"] {
        yaml_files(&root().join(dir), &mut files);
    }
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "<<: ",
    "!!binary ",
    "!!str ",
    "!!map ",
    "!!int ",
    "!<tag:yaml.org,2002:str> ",
    "? ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "|\n",
    "|-\n",
    ">+\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "'",
    "\"",
    "#",
    "\u{FEFF}",
    "\r\n",
    "\r",
    "\t",
    "null",
    "~",
    "0x1F",
    "1e400",
    "-.inf",
    ".nan",
    "99999999999999999999999",
    "-0",
    "0o17",
    "yes",
    "on",
    "kind: FailbackPlan\n",
    "apiVersion: failback/v1\n",
    "spec:\n",
    "groups:\n",
    "  - name: g\n    vms:\n",
    "vms: []\n",
    "host: hv-01\n",
    "vswitch: Production\n",
    "encryption:\n  certificate: { env: X }\n",
    "timeout: 1h\n",
    "é",
    "\u{202E}",
    "\u{200B}",
    "\u{0085}",
    "\u{2028}",
    "𝔘",
    "  ",
    "\n",
    "\0",
    "-----BEGIN CERTIFICATE-----\n",
    "MIIB",
    "verify: { command: [] }\n",
    "parallelism: 65536\n",
];

const INTERESTING: &[u8] = &[
    0, 0xff, 0x7f, 0x80, 0xc0, 0xef, 0xbb, 0xbf, b'\n', b'\r', b'\t', b' ', b':', b'-', b'"',
    b'\'', b'&', b'*', b'!', b'{', b'}', b'[', b']', b'#', b'|', b'>', b'%', b'@', b'`', b',',
    b'?',
];

fn range(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let a = rng.random_range(0..len);
    let n = rng.random_range(1..=32.min(len - a));
    (a, a + n)
}

fn lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

/// One random mutation of `data` (`other` is a second input to splice).
fn mutate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.random_range(0..11) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        2 => {
            let (a, b) = range(rng, len);
            data.drain(a..b);
        }
        3 => {
            let (a, b) = range(rng, len);
            let chunk = data[a..b].to_vec();
            let at = rng.random_range(0..=data.len());
            data.splice(at..at, chunk);
        }
        4 | 5 => {
            let t = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
            let at = rng.random_range(0..=len);
            data.splice(at..at, t.iter().copied());
        }
        6 => {
            // Repetition: deep nesting, long keys and lines, many anchors.
            let (a, b) = range(rng, len);
            let chunk = if rng.random_bool(0.5) || a == b {
                TOKENS[rng.random_range(0..TOKENS.len())]
                    .as_bytes()
                    .to_vec()
            } else {
                data[a..b].to_vec()
            };
            let most = [8, 64, 512, 4096][rng.random_range(0..4)];
            let times = rng.random_range(2..=most);
            let at = rng.random_range(0..=len);
            let rep: Vec<u8> = chunk
                .iter()
                .copied()
                .cycle()
                .take(chunk.len() * times)
                .collect();
            data.splice(at..at, rep);
        }
        7 => {
            let ls = lines(data);
            if ls.len() >= 2 {
                let (a0, a1) = ls[rng.random_range(0..ls.len())];
                let (b0, b1) = ls[rng.random_range(0..ls.len())];
                let (x, y) = if a0 <= b0 {
                    ((a0, a1), (b0, b1))
                } else {
                    ((b0, b1), (a0, a1))
                };
                if x.1 <= y.0 {
                    let first = data[x.0..x.1].to_vec();
                    let second = data[y.0..y.1].to_vec();
                    let mut out = data[..x.0].to_vec();
                    out.extend_from_slice(&second);
                    out.extend_from_slice(&data[x.1..y.0]);
                    out.extend_from_slice(&first);
                    out.extend_from_slice(&data[y.1..]);
                    *data = out;
                }
            }
        }
        8 => {
            let ls = lines(data);
            if !ls.is_empty() {
                let (a, _) = ls[rng.random_range(0..ls.len())];
                if rng.random_bool(0.5) {
                    data.splice(a..a, *b"  ");
                } else if data.get(a..a + 2) == Some(b"  ") {
                    data.drain(a..a + 2);
                }
            }
        }
        9 => {
            let ls = lines(data);
            if !ls.is_empty() {
                let (a, b) = ls[rng.random_range(0..ls.len())];
                let line = data[a..b].to_vec();
                data.splice(b..b, line);
            }
        }
        _ => {
            if !other.is_empty() {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
}

/// What an input did: its signature for novelty, or a broken oracle.
fn target(data: &[u8]) -> Result<u64, String> {
    let mut h = DefaultHasher::new();
    for origin in [Origin::Named, Origin::Discovered] {
        match validate::check("fuzz.yaml", data, origin) {
            Checked::NotAPlan => "not-a-plan".hash(&mut h),
            Checked::Plan(report, plan) => {
                plan.is_some().hash(&mut h);
                let total_lines = yaml_lines(data);
                for d in &report.diagnostics {
                    let v = serde_json::to_value(d).map_err(|e| e.to_string())?;
                    v["code"].as_str().hash(&mut h);
                    let line = v["line"].as_u64();
                    if let Some(line) = line
                        && (line == 0 || line as usize > total_lines)
                    {
                        return Err(format!(
                            "diagnostic {} points at line {line} of a {total_lines}-line file",
                            v["code"]
                        ));
                    }
                    if v["column"].as_u64() == Some(0) {
                        return Err(format!("diagnostic {} at column 0", v["code"]));
                    }
                    line.map(|l| l.min(8)).hash(&mut h);
                }
                let style = HumanStyle {
                    color: false,
                    unicode: true,
                    width: 100,
                };
                let human = render::human(&report, style);
                // The human rendering shows the first diagnostic's position
                // as `[path:line:column]`: the JSON report must agree.
                if let (Some(first), Some(shown)) =
                    (report.diagnostics.first(), shown_position(&human))
                {
                    let v = serde_json::to_value(first).map_err(|e| e.to_string())?;
                    if let (Some(line), Some(column)) = (v["line"].as_u64(), v["column"].as_u64())
                        && (line, column) != shown
                    {
                        return Err(format!(
                            "position: diagnostic {} is at {line}:{column} in JSON but {}:{} in the human report",
                            v["code"], shown.0, shown.1
                        ));
                    }
                }
                let _ = render::json_file(&report, false);
                let _ = render::github(&report);
                let _ = render::summary_line(&report, true);
                (human.len() / 512).hash(&mut h);
            }
        }
    }
    Ok(h.finish())
}

/// Lines as YAML counts them: LF, CRLF and a lone CR each end one.
fn yaml_lines(data: &[u8]) -> usize {
    let mut n = 1;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\n' => n += 1,
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                n += 1;
                i += 1;
            }
            b'\r' => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

fn lone_cr(data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\r' && data.get(i + 1) != Some(&b'\n'))
}

/// The first `line:column` a human report shows: a snippet's
/// `[fuzz.yaml:L:C]` header, or the `at fuzz.yaml:L:C` line under a
/// diagnostic whose line is too long to show. (Only the first of both
/// forms belongs to the first diagnostic: the `[` of a later one is not its.)
fn shown_position(human: &str) -> Option<(u64, u64)> {
    let header = human.find("[fuzz.yaml:").map(|i| (i + "[fuzz.yaml:".len(), ']'));
    let at_line = human.find("at fuzz.yaml:").map(|i| (i + "at fuzz.yaml:".len(), ' '));
    let (at, close) = match (header, at_line) {
        (Some(h), Some(a)) => h.min(a),
        (h, a) => h.or(a)?,
    };
    let rest = &human[at..];
    let end = rest.find(close)?;
    let (line, column) = rest[..end].split_once(':')?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

fn rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn save_finding(kind: &str, data: &[u8], why: &str) -> PathBuf {
    let dir = root().join("fuzz/findings");
    let _ = std::fs::create_dir_all(&dir);
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    let path = dir.join(format!("{kind}-{:016x}.yaml", h.finish()));
    let _ = std::fs::write(&path, data);
    let _ = std::fs::write(path.with_extension("txt"), why);
    path
}

fn main() -> std::process::ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut corpus = seeds();
    if corpus.is_empty() {
        eprintln!("error: no seed found under tests/fixtures/validate, plans, fuzz/regressions");
        return std::process::ExitCode::from(66);
    }
    println!(
        "plan-loading fuzzer: seed {}, {} s, {} seed inputs",
        o.seed,
        o.seconds,
        corpus.len()
    );
    // Panics are findings; their messages are reported once, below.
    std::panic::set_hook(Box::new(|_| {}));

    // The watchdog: an input running too long, or the process growing too
    // large, is saved and ends the run (a hang cannot be unwound).
    let current = Arc::new(Mutex::new(Vec::<u8>::new()));
    let started_ms = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let max_rss = Arc::new(AtomicU64::new(0));
    {
        let (current, started_ms, busy, max_rss) = (
            Arc::clone(&current),
            Arc::clone(&started_ms),
            Arc::clone(&busy),
            Arc::clone(&max_rss),
        );
        let (timeout, limit) = (o.timeout_ms, o.max_rss_mib);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let rss = rss_mib().unwrap_or(0);
                max_rss.fetch_max(rss, Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                let running = busy.load(Ordering::SeqCst)
                    && now.saturating_sub(started_ms.load(Ordering::SeqCst)) > timeout * 5;
                if running || rss > limit {
                    let data = current.lock().map(|d| d.clone()).unwrap_or_default();
                    let kind = if running { "timeout" } else { "oom" };
                    let path = save_finding(kind, &data, &format!("{kind}: rss {rss} MiB"));
                    println!("FINDING {kind}: {}", path.display());
                    let _ = std::io::stdout().flush();
                    std::process::exit(3);
                }
            }
        });
    }

    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut findings = 0u32;
    let mut by_kind: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut execs = 0u64;
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    // Every seed runs once, unmutated, first.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    while Instant::now() < deadline {
        let input = match queue.pop() {
            Some(input) => input,
            None => {
                let mut data = corpus[rng.random_range(0..corpus.len())].clone();
                let other = &corpus[rng.random_range(0..corpus.len())];
                for _ in 0..rng.random_range(1..=8) {
                    mutate(&mut rng, &mut data, other);
                }
                if data.len() > o.max_len && !rng.random_bool(0.01) {
                    data.truncate(o.max_len);
                }
                data
            }
        };
        if let Ok(mut c) = current.lock() {
            c.clone_from(&input);
        }
        started_ms.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        busy.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        let outcome = std::panic::catch_unwind(|| target(&input));
        let took = t0.elapsed();
        busy.store(false, Ordering::SeqCst);
        execs += 1;
        slowest = slowest.max(took);
        let problem = match outcome {
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned());
                // Known, open: the human report of a diagnostic past column
                // 65535 of its line (fuzz/regressions/open/).
                let kind = if message.contains("Formatting argument out of range") {
                    "crash-wide-line"
                } else {
                    "crash"
                };
                Some((kind, message))
            }
            // A class of its own: a lone CR once ended a line for YAML and
            // for the human report, not for the JSON position (fixed; see
            // docs/reliability.md).
            Ok(Err(why)) if why.starts_with("position: ") && lone_cr(&input) => {
                Some(("position-mismatch-lone-cr", why))
            }
            Ok(Err(why)) if why.starts_with("position: ") => Some(("position-mismatch", why)),
            Ok(Err(why)) => Some(("wrong-report", why)),
            Ok(Ok(_)) if took > Duration::from_millis(o.timeout_ms) => {
                Some(("slow", format!("took {took:?}")))
            }
            Ok(Ok(signature)) => {
                if seen.insert(signature) && corpus.len() < 20_000 {
                    corpus.push(input.clone());
                }
                None
            }
        };
        if let Some((kind, why)) = problem {
            findings += 1;
            let count = by_kind.entry(kind).or_insert(0u32);
            *count += 1;
            // The first few of each kind are kept; the rest only counted.
            if *count <= 10 {
                let path = save_finding(kind, &input, &why);
                println!("FINDING {kind}: {} ({why})", path.display());
            }
        }
    }
    let secs = o.seconds.max(1);
    println!(
        "plan-loading fuzzer: seed {}: {execs} inputs in {secs} s ({} /s), corpus {} ({} outcomes seen), \
         slowest input {slowest:?}, peak RSS {} MiB, {findings} findings {by_kind:?}",
        o.seed,
        execs / secs,
        corpus.len(),
        seen.len(),
        max_rss.load(Ordering::Relaxed),
    );
    if findings > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
