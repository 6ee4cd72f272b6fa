#!/usr/bin/env python3
"""Hostile inputs for benches/validate/hostile.sh.

Writes into OUT (default: benches/validate/data/hostile) one file per input
of `cases()` in tests/hostile.rs, built the same way from the same minimal
plan (tests/fixtures/validate/valid/minimal.yaml), plus the 50 MiB file of
`a_50_mib_file_is_refused` (the minimal plan, then zeros up to 50 MiB,
written sparse as the test does), and a manifest, `cases.json`: for each
input its name, file, size and the exit code `failback validate` must give
(65 when the test expects an error, 0 for the valid ones).

Keep it in step with tests/hostile.rs: a case added there belongs here.
Python 3, standard library only.
"""

import argparse
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MINIMAL = os.path.join(ROOT, "tests", "fixtures", "validate", "valid", "minimal.yaml")

# `validate::MAX_PLAN_BYTES`: the largest plan the validator decodes.
MAX_PLAN_BYTES = 4 << 20
ERROR = 65
VALID = 0
NAMES = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]


def minimal_plan():
    with open(MINIMAL, encoding="utf-8", newline="") as f:
        return f.read()


def insert_after(plan, after, line):
    """The plan with `line` inserted after the first line equal to `after`."""
    out = []
    done = False
    for l in plan.split("\n")[:-1] if plan.endswith("\n") else plan.split("\n"):
        out.append(l + "\n")
        if not done and l == after:
            out.append(line + "\n")
            done = True
    if not done:
        raise SystemExit(f"no line {after!r} in the minimal plan")
    return "".join(out)


def replace_line(plan, old, new):
    if old not in plan:
        raise SystemExit(f"{old!r} is not in the minimal plan")
    return plan.replace(old, new, 1)


def billion_laughs():
    text = (
        "apiVersion: failback/v1\nkind: FailbackPlan\nmetadata:\n  name: laughs\n  labels:\n"
        "    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    )
    for prev, cur in zip(NAMES, NAMES[1:]):
        refs = ", ".join([f"*{prev}"] * 10)
        text += f"    {cur}: &{cur} [{refs}]\n"
    return text


def merge_key_laughs():
    text = (
        "apiVersion: failback/v1\nkind: FailbackPlan\nmetadata:\n  name: merges\n  labels:\n"
        "    a: &a {k: v}\n"
    )
    for prev, cur in zip(NAMES, NAMES[1:]):
        refs = ", ".join([f"*{prev}"] * 10)
        text += f"    {cur}: &{cur}\n      <<: [{refs}]\n      k{cur}: v\n"
    return text


def deep_block_mappings():
    parts = []
    size = 0
    depth = 0
    while True:
        line = " " * depth + "k:\n"
        if size + len(line) > MAX_PLAN_BYTES:
            break
        parts.append(line)
        size += len(line)
        depth += 1
    return "".join(parts)


def utf16(text, big):
    return text.encode("utf-16-be" if big else "utf-16-le")


def utf32(text, big):
    return text.encode("utf-32-be" if big else "utf-32-le")


def cases():
    """(name, bytes or str, expected exit code), as `cases()` in tests/hostile.rs."""
    plan = minimal_plan()
    c = []

    def add(name, data, exit_code=ERROR):
        c.append((name, data, exit_code))

    # Resource exhaustion.
    add("billion-laughs", billion_laughs())
    add("merge-key-laughs", merge_key_laughs())
    add("flow-sequences-10000-deep", "[" * 10_000 + "]" * 10_000 + "\n")
    add("flow-sequences-10000-unclosed", "[" * 10_000)
    add("flow-mappings-10000-deep", "{a: " * 10_000 + "x" + "}" * 10_000 + "\n")
    add("block-sequences-10000-on-one-line", "- " * 10_000 + "x\n")
    add("block-mappings-as-deep-as-4-mib", deep_block_mappings())
    add("over-1000-aliases", "a: &a x\nb: [" + ", ".join(["*a"] * 1_500) + "]\n")
    add("over-1000-anchors", "b: [" + ", ".join(f"&a{i} x" for i in range(1_500)) + "]\n")
    # Several documents.
    add("two-documents", f"{plan}---\n{plan}")
    add("document-end-then-another", f"{plan}...\n---\nkind: x\n")
    add("two-empty-documents", "---\n---\n")
    # Encodings and bytes.
    add("utf16-le-bom", b"\xff\xfe" + utf16(plan, False))
    add("utf16-be-bom", b"\xfe\xff" + utf16(plan, True))
    add("utf32-le-bom", b"\xff\xfe\x00\x00" + utf32(plan, False))
    add("utf32-be-bom", b"\x00\x00\xfe\xff" + utf32(plan, True))
    add("utf16-be-without-bom", utf16(plan, True))
    add("utf32-le-without-bom", utf32(plan, False))
    add(
        "invalid-utf8",
        replace_line(plan, "  name: minimal\n", "  name: minimal\n  description: caf\x01\n")
        .encode()
        .replace(b"\x01", b"\xe9"),
    )
    add("truncated-utf8-sequence", f"{plan}# caf\u00e9".encode()[: len(plan) + 6])
    add("nul-byte", replace_line(plan, "name: app-01", "name: app\x0001"))
    add("nul-bytes-only", b"\x00" * 4096)
    add("bell", replace_line(plan, "site: dc1", "site: dc1\x07"))
    add("bom-inside-the-text", replace_line(plan, "site: azure", "site: \ufeffazure"))
    add("bidi-override", replace_line(plan, "host: hv-01\n", "host: hv-\u202e10\n"))
    # Whitespace and layout.
    add("tab-indentation", replace_line(plan, "  name: minimal", "\tname: minimal"))
    add("tab-after-spaces", replace_line(plan, "    site: dc1", "  \tsite: dc1"))
    add("empty-file", "")
    add("only-whitespace", " \n\n   \n")
    add("comments-only", "# a plan\n# that was never written\n")
    add("only-a-document-marker", "---\n")
    add("only-null", "~\n")
    # Shapes.
    add("a-list-instead-of-a-plan", "- apiVersion: failback/v1\n- kind: FailbackPlan\n")
    add("a-scalar-instead-of-a-plan", "FailbackPlan\n")
    add("complex-key", "? [a, b]\n: c\n")
    add("unknown-key-at-root", insert_after(plan, "kind: FailbackPlan", "kinds: x"))
    add("wrong-type-for-spec", replace_line(plan, "spec:\n  primary:", "spec: [primary]\nx:\n  primary:"))
    add("float-parallelism", insert_after(plan, "    site: azure", "  parallelism: 4.0"))
    # Tags.
    add("unknown-tag", replace_line(plan, "site: dc1", "site: !Ref dc1"))
    add("binary-tag", replace_line(plan, "site: azure", "site: !!binary YXp1cmU="))
    add("non-finite-float", insert_after(plan, "  recovery:", "    vault: .nan"))
    # Old Mac line ends, and CRLF.
    unknown_host = plan.replace("host: hv-01", "host: hv-02")
    add("carriage-returns-only", unknown_host.replace("\n", "\r"))
    add("crlf", unknown_host.replace("\n", "\r\n"))
    # Unknown keys deeper down.
    add("unknown-key-in-a-vm", insert_after(plan, "          host: hv-01", "          hots: hv-01"))
    add("unknown-key-in-metadata", insert_after(plan, "  name: minimal", "  nmae: typo"))
    # A duplicate key at every level.
    for level, after, line in [
        ("root", "kind: FailbackPlan", "kind: FailbackPlan"),
        ("metadata", "  name: minimal", "  name: other"),
        ("spec", "    site: azure", "  recovery: {site: b}"),
        ("host", "        vswitches: [Production]", "        vswitches: [Backup]"),
        ("vm", "          host: hv-01", "          host: hv-02"),
    ]:
        add(f"duplicate-key-in-{level}", insert_after(plan, after, line))
    add(
        "duplicate-key-in-network",
        insert_after(
            plan,
            "          host: hv-01",
            "          networks:\n            - vswitch: Production\n              vswitch: Backup",
        ),
    )
    add("duplicate-key-quoted-differently", insert_after(plan, "  name: minimal", "  'name': quoted"))
    add("duplicate-key-in-flow-mapping", insert_after(plan, "  name: minimal", "  labels: {a: x, a: y}"))
    # YAML 1.1 scalars in typed positions.
    for key, value in [
        ("reverseReplicate", "yes"),
        ("reverseReplicate", "no"),
        ("createIfMissing", "on"),
        ("createIfMissing", "off"),
        ("createIfMissing", "Y"),
        ("reverseReplicate", "ON"),
    ]:
        add(f"{key}-{value}", insert_after(plan, "          host: hv-01", f"          {key}: {value}"))
    for name, value in [("0755", "0755"), ("1:30", "1:30"), ("1_000", "1_000"), ("quoted", '"4"')]:
        add(f"parallelism-{name}", insert_after(plan, "    site: azure", f"  parallelism: {value}"))
    for value in ["0x10", "0o17"]:
        add(f"parallelism-{value}", insert_after(plan, "    site: azure", f"  parallelism: {value}"), VALID)
    add("parallelism-huge", insert_after(plan, "    site: azure", "  parallelism: 99999999999999999999"))
    for value in ["true", "True", "FALSE"]:
        add(
            f"reverseReplicate-{value}",
            insert_after(plan, "          host: hv-01", f"          reverseReplicate: {value}"),
            VALID,
        )
    add(
        "yaml-1.1-words-as-names",
        plan.replace("name: app-01", "name: no")
        .replace("- name: hv-01", '- name: "0755"')
        .replace("host: hv-01", "host: 0755")
        .replace("[Production]", "[on, off, yes, 1:30]")
        .replace("- name: app", "- name: off")
        .replace("site: dc1", "site: 1:30"),
        VALID,
    )
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "data", "hostile"))
    args = ap.parse_args()

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    manifest = []
    for name, data, exit_code in cases():
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if len(raw) > MAX_PLAN_BYTES:
            raise SystemExit(f"{name}: {len(raw)} bytes, over the 4 MiB the test bounds its inputs to")
        path = os.path.join(args.out, f"{name}.yaml")
        with open(path, "wb") as f:
            f.write(raw)
        manifest.append({"name": name, "file": path, "size": len(raw), "exit": exit_code})

    # The 50 MiB file of `a_50_mib_file_is_refused`: a plan, then zeros,
    # sparse (the disk holds one block; the binary still sees 50 MiB).
    path = os.path.join(args.out, "50-mib-file.yaml")
    with open(path, "wb") as f:
        f.write(minimal_plan().encode("utf-8"))
        f.truncate(50 << 20)
    manifest.append({"name": "50-mib-file", "file": path, "size": 50 << 20, "exit": ERROR})

    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest)} hostile inputs in {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
