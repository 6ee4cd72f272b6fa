#!/usr/bin/env python3
"""Deterministic data for benches/validate/run.sh.

Writes into OUT (default: benches/validate/data):
  plan-10k.yaml   one valid FailbackPlan: 200 hosts, 20 groups x 500 VMs
  plan-10k.json   the same document as JSON (for the JSON Schema peers)
  small/          1,000 small valid plans, varied in shape and style
  small-json/     the same 1,000 plans as JSON (for the peers)

The JSON is serialised from the same Python structure as the YAML, so both
hold the same document. No third-party modules: the YAML is emitted by hand
(plain scalars only, every one safe unquoted under YAML 1.2).
"""

import argparse
import json
import os
import random
import shutil

SWITCHES = ["Production", "Backup", "Storage", "Management", "Replica", "DMZ"]
ROLES = ["sql", "app", "web", "cache", "mq", "file", "dc", "etl", "api", "rpt"]


def host_switches(rng, n_min=1, n_max=4):
    k = rng.randint(n_min, n_max)
    first = ["Production"]
    rest = rng.sample(SWITCHES[1:], k - 1)
    return first + rest


def make_vm(rng, name, host, switches, i):
    vm = {"name": name, "host": host}
    k = 1 if len(switches) == 1 or rng.random() < 0.6 else 2
    chosen = rng.sample(switches, k)
    nets = []
    for n, sw in enumerate(chosen):
        net = {"vswitch": sw}
        if rng.random() < 0.7:
            net = {"adapter": f"nic{n}", "vswitch": sw}
        nets.append(net)
    vm["networks"] = nets
    full = i % 7 == 3
    if full:
        vm["sync"] = "full"
    elif i % 13 == 5:
        vm["completion"] = "manual"
    if i % 11 == 2:
        vm["commit"] = "auto"
        vm["verify"] = {
            "command": ["./checks/health.sh", "--vm", name],
            "timeout": rng.choice(["30s", "2m", "5m", "1h 30m"]),
        }
    elif i % 17 == 9:
        vm["commit"] = "never"
    if i % 19 == 4:
        vm["createIfMissing"] = True
    if i % 23 == 6:
        vm["reverseReplicate"] = False
    return vm


def make_plan(rng, name, n_hosts, n_groups, vms_per_group, vm_prefix="vm", extras=True):
    hosts = []
    for h in range(n_hosts):
        hosts.append({"name": f"hv-{h + 1:03d}", "vswitches": host_switches(rng)})
    groups = []
    i = 0
    for g in range(n_groups):
        vms = []
        for _ in range(vms_per_group):
            host = hosts[rng.randrange(n_hosts)]
            role = ROLES[i % len(ROLES)]
            vms.append(make_vm(rng, f"{vm_prefix}-{role}-{i + 1:05d}", host["name"], host["vswitches"], i))
            i += 1
        groups.append({"name": f"wave-{g + 1:02d}", "vms": vms})
    plan = {
        "apiVersion": "failback/v1",
        "kind": "FailbackPlan",
        "metadata": {"name": name},
        "spec": {
            "primary": {"site": "contoso-dc1", "hosts": hosts},
            "recovery": {"site": "azure-westeurope"},
        },
    }
    if extras:
        plan["metadata"]["description"] = f"Benchmark plan {name}"
        plan["metadata"]["labels"] = {"team": "platform", "tier": "bench"}
        plan["spec"]["recovery"]["vault"] = (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dr-rg"
            "/providers/Microsoft.RecoveryServices/vaults/dr-vault"
        )
        plan["spec"]["defaults"] = {"sync": "delta", "completion": "auto", "commit": "manual"}
        plan["spec"]["parallelism"] = 16
    plan["spec"]["groups"] = groups
    return plan


# --- a small YAML emitter: block style, flow style for short lists/maps ----

def scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    # Every string the generator makes is plain-safe except ones with ": " or
    # a leading special character; quote those (and anything unusual) in JSON
    # style, which YAML accepts as a double-quoted scalar.
    safe = s and s[0] not in "-?:,[]{}#&*!|>'\"%@`/ " or s.startswith("./") or s.startswith("/subscriptions")
    if not safe or ": " in s or " #" in s or s in ("true", "false", "null", "~") or s[-1] == " ":
        return json.dumps(s)
    return s


def is_flowable(v):
    if isinstance(v, list):
        return all(not isinstance(x, (dict, list)) for x in v)
    if isinstance(v, dict):
        return all(not isinstance(x, (dict, list)) for x in v.values()) and len(v) <= 2
    return False


def flow(v):
    if isinstance(v, list):
        return "[" + ", ".join(scalar(x) for x in v) + "]"
    return "{ " + ", ".join(f"{k}: {scalar(x)}" for k, x in v.items()) + " }"


def emit(v, indent, out, flow_maps):
    pad = " " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)):
                if isinstance(x, list) and is_flowable(x) or flow_maps and isinstance(x, dict) and is_flowable(x):
                    out.append(f"{pad}{k}: {flow(x)}")
                elif flow_maps and isinstance(x, list) and all(isinstance(e, dict) and is_flowable(e) for e in x):
                    out.append(f"{pad}{k}: [" + ", ".join(flow(e) for e in x) + "]")
                else:
                    out.append(f"{pad}{k}:")
                    emit(x, indent + 2, out, flow_maps)
            else:
                out.append(f"{pad}{k}: {scalar(x)}")
    else:
        for x in v:
            if isinstance(x, dict):
                lines = []
                emit(x, indent + 2, lines, flow_maps)
                lines[0] = pad + "- " + lines[0][indent + 2:]
                out.extend(lines)
            else:
                out.append(f"{pad}- {scalar(x)}")


def to_yaml(plan, header, flow_maps=True):
    out = [f"# {line}" if line else "#" for line in header]
    emit(plan, 0, out, flow_maps)
    return "\n".join(out) + "\n"


def small_plan(rng, n):
    """A small plan of varied shape: 1-4 hosts, 1-4 groups, 1-12 VMs each."""
    name = f"app-{n:04d}"
    plan = make_plan(
        rng,
        name,
        n_hosts=rng.randint(1, 4),
        n_groups=rng.randint(1, 4),
        vms_per_group=rng.randint(1, 12),
        vm_prefix=f"a{n:04d}",
        extras=rng.random() < 0.5,
    )
    if rng.random() < 0.3:
        plan["spec"]["primary"]["management"] = rng.choice(["hyperv-site", "vmm"])
    return plan


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "data"))
    ap.add_argument("--small", type=int, default=1000, help="number of small plans")
    args = ap.parse_args()

    rng = random.Random(20240601)
    big = make_plan(rng, "bench-10k", n_hosts=200, n_groups=20, vms_per_group=500)
    os.makedirs(args.out, exist_ok=True)
    header = ["Generated by benches/validate/gen.py: 200 hosts, 20 groups x 500 VMs.", "Do not edit."]
    with open(os.path.join(args.out, "plan-10k.yaml"), "w", encoding="utf-8") as f:
        f.write(to_yaml(big, header))
    with open(os.path.join(args.out, "plan-10k.json"), "w", encoding="utf-8") as f:
        json.dump(big, f, indent=2)
        f.write("\n")

    small_dir = os.path.join(args.out, "small")
    json_dir = os.path.join(args.out, "small-json")
    for d in (small_dir, json_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    for n in range(1, args.small + 1):
        plan = small_plan(rng, n)
        text = to_yaml(plan, ["Generated by benches/validate/gen.py."], flow_maps=rng.random() < 0.5)
        name = plan["metadata"]["name"]
        with open(os.path.join(small_dir, f"{name}.yaml"), "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.join(json_dir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(plan, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
