#!/usr/bin/env python3
"""Times the validation cases for run.sh, prints the results as Markdown and,
unless --no-doc, puts them into docs/performance.md between the markers

    <!-- bench:validate:begin -->  ...  <!-- bench:validate:end -->

of its "Validation" section (the rest of the file is left as it is).

Wall time: hyperfine (-N, no shell) when it is on PATH, else a loop of
fork/exec/wait timed with time.perf_counter. Peak RSS: /usr/bin/time -f %M
when it exists, else the rusage that wait4 returns for the child; the largest
of --rss-runs runs. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BEGIN = "<!-- bench:validate:begin -->"
END = "<!-- bench:validate:end -->"


def run_quiet(cmd):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def times_hyperfine(cmd, runs, warmup, tmp):
    out = os.path.join(tmp, "hyperfine.json")
    subprocess.run(
        ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
         "--export-json", out, "--", shlex.join(cmd)],
        stdout=subprocess.DEVNULL, check=True,
    )
    with open(out, encoding="utf-8") as f:
        r = json.load(f)["results"][0]
    return r["times"], r["user"] + r["system"]


def times_loop(cmd, runs, warmup):
    """Wall times, and the mean CPU time (user + system) of the runs."""
    for _ in range(warmup):
        run_quiet(cmd)
    times = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        t0 = time.perf_counter()
        run_quiet(cmd)
        times.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return times, cpu / runs


def peak_rss_kib(cmd, tmp):
    if os.access("/usr/bin/time", os.X_OK):
        out = os.path.join(tmp, "rss.txt")
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out, *cmd],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        with open(out, encoding="utf-8") as f:
            return int(f.read().strip().splitlines()[-1])
    pid = os.fork()
    if pid == 0:  # child: exec the command with its output discarded
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), cmd)
    return usage.ru_maxrss  # KiB on Linux


def load1():
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_for_quiet(limit, seconds):
    """Waits until the 1-minute load average is below `limit` (a build or
    install that just finished still weighs on it), at most `seconds`."""
    deadline = time.monotonic() + seconds
    if load1() >= limit:
        print(f"  waiting up to {seconds} s for the load average to drop below {limit} "
              f"(now {load1():.2f}) ...", file=sys.stderr, flush=True)
    while load1() >= limit and time.monotonic() < deadline:
        time.sleep(5)


def fmt_ms(seconds):
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:,.1f}"


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = ""
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()) if shutil.which("nproc") is None
        else subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": mem,
        "load": load,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True, help="JSON file: list of {id, tool, input, cmd}")
    ap.add_argument("--versions", required=True, help="JSON file: {tool: version}")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rss-runs", type=int, default=3)
    ap.add_argument("--results", required=True, help="where to write the results as JSON")
    ap.add_argument("--markdown", required=True, help="where to write the Markdown block")
    ap.add_argument("--doc", help="docs/performance.md to update")
    ap.add_argument("--quiet-load", type=float, default=1.0,
                    help="wait for the 1-minute load average to drop below this before timing")
    ap.add_argument("--quiet-wait", type=int, default=180, help="at most this many seconds")
    args = ap.parse_args()

    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)
    with open(args.versions, encoding="utf-8") as f:
        versions = json.load(f)
    timer = "hyperfine" if shutil.which("hyperfine") else "loop"
    wait_for_quiet(args.quiet_load, args.quiet_wait)
    host = machine()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            print(f"  timing {case['id']}: {case['tool']} on {case['input']} ...", file=sys.stderr, flush=True)
            cmd = case["cmd"]
            if timer == "hyperfine":
                times, cpu = times_hyperfine(cmd, args.runs, args.warmup, tmp)
            else:
                times, cpu = times_loop(cmd, args.runs, args.warmup)
            rss = max(peak_rss_kib(cmd, tmp) for _ in range(args.rss_runs))
            results[case["id"]] = {
                **case,
                "times": times,
                "mean": statistics.mean(times),
                "sd": statistics.stdev(times) if len(times) > 1 else 0.0,
                "min": min(times),
                "cpu": cpu,
                "rss_kib": rss,
            }

    rows = [
        "| # | Tool | Input | Wall time, mean ± sd (ms) | Min (ms) | CPU, user + sys (ms) | Peak RSS (MiB) |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for n, case in enumerate(cases, 1):
        r = results[case["id"]]
        rows.append(
            f"| {n} | {r['tool']} | {r['input']} | {fmt_ms(r['mean'])} ± {fmt_ms(r['sd'])} "
            f"| {fmt_ms(r['min'])} | {fmt_ms(r['cpu'])} | {r['rss_kib'] / 1024:.1f} |"
        )

    # (label, failback case, peer case, target ratio or None for context only)
    comparisons = [
        # Another input format: jsonschema-cli given the JSON copy, failback the
        # YAML. Context only: the target compares both on the same file (next row).
        ("10k-VM plan: failback (YAML) / jsonschema-cli (JSON copy)", "fb-10k", "js-10k-json", None),
        ("10k-VM plan: failback / jsonschema-cli, YAML", "fb-10k", "js-10k-yaml", 1.0),
        ("10k-VM plan: failback / ajv-cli, JSON", "fb-10k", "ajv-10k-json", 0.5),
        ("10k-VM plan: failback / ajv-cli, YAML", "fb-10k", "ajv-10k-yaml", 0.5),
        ("1,000 plans: failback / jsonschema-cli", "fb-1k", "js-1k", None),
        ("1,000 plans: failback / ajv-cli", "fb-1k", "ajv-1k", None),
    ]
    targets = []
    for label, a, b, limit in comparisons:
        if a in results and b in results:
            x = results[a]["mean"] / results[b]["mean"]
            if limit is None:
                targets.append((label, f"{x:.2f}", "(context)", None))
            elif limit == 1.0:
                targets.append((label, f"{x:.2f}", "< 1.00 (faster)", x < 1.0))
            else:
                targets.append((label, f"{x:.2f}", f"≤ {limit:.2f} ({1 / limit:.0f}× faster)", x <= limit))
    if "fb-1k" in results:
        x = results["fb-1k"]["mean"]
        targets.insert(4, ("1,000 plans: failback wall time", f"{x * 1000:,.0f} ms", "< 1,000 ms", x < 1.0))
    trows = ["| Comparison (mean wall time) | Ratio or time | Target | Met |", "| --- | ---: | --- | --- |"]
    for name, value, target, met in targets:
        trows.append(f"| {name} | {value} | {target} | {'—' if met is None else ('yes' if met else '**no**')} |")

    timing = (f"hyperfine {versions.get('hyperfine', '')}".strip() + ", `-N`" if timer == "hyperfine"
              else "a Python loop of fork/exec/wait and `time.perf_counter`")
    rss_how = "`/usr/bin/time -f %M`" if os.access("/usr/bin/time", os.X_OK) else "`wait4` rusage"
    tools = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "hyperfine")
    lines = [
        BEGIN,
        f"Measured {started} with `benches/validate/run.sh` ({args.runs} timed runs after "
        f"{args.warmup} warm-up runs per case, timed with {timing}; peak RSS is the largest of "
        f"{args.rss_runs} runs under {rss_how}).",
        "",
        f"- Machine: {host['cpu']}, `nproc` = {host['nproc']}, {host['memory']} memory, {host['kernel']}; "
        f"load average (1, 5, 15 min) when timing started: {host['load']}",
        f"- Versions: {tools}",
        "",
        *rows,
        "",
        *trows,
        END,
    ]
    block = "\n".join(lines) + "\n"
    with open(args.markdown, "w", encoding="utf-8") as f:
        f.write(block)
    with open(args.results, "w", encoding="utf-8") as f:
        json.dump({"machine": host, "versions": versions, "timer": timer, "started": started,
                   "results": results}, f, indent=2)
    print()
    print(block)

    if args.doc:
        update_doc(args.doc, block)
        print(f"updated {os.path.relpath(args.doc)}", file=sys.stderr)


def update_doc(path, block):
    """Replaces the marked block; creates the file or the section if missing."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if BEGIN in text and END in text:
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        if not text:
            text = "# Performance\n"
        text = text.rstrip("\n") + "\n\n## Validation\n\n" + block
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
