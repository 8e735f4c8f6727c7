"""Checks of the rendered Kubernetes manifests that kubernetes-validate cannot make.

    check-manifests.py rule <alerts.yaml> <prometheus-rule.yaml> [--write]
        The PrometheusRule must carry exactly the groups of the promtool-tested rules
        file; --write makes it so.
    check-manifests.py split <rendered.yaml> <core.yaml> <custom.yaml>
        Splits a render into core kinds (for kubernetes-validate) and the operators'
        custom resources.
    check-manifests.py custom <rendered.yaml>
        The fields the KEDA and Prometheus Operator controllers require, and that what
        the custom resources point at exists in the render; prints what was rendered.
"""

import sys
from collections import Counter

import yaml

CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def rule(alerts_path, rule_path, write):
    with open(alerts_path) as f:
        groups = yaml.safe_load(f)["groups"]
    wanted = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "headhunter", "labels": {"app.kubernetes.io/name": "headhunter"}},
        "spec": {"groups": groups},
    }
    header = (
        "# Made from deploy/prometheus/alerts.yaml (the rules promtool tests) by\n"
        "# `scripts/check-deploy.sh --write`; edit that file, not this one.\n"
    )
    text = header + yaml.safe_dump(wanted, sort_keys=False, width=120, allow_unicode=True)
    try:
        with open(rule_path) as f:
            current = f.read()
    except FileNotFoundError:
        current = ""
    if current == text:
        return 0
    if write:
        with open(rule_path, "w") as f:
            f.write(text)
        print(f"wrote {rule_path}")
        return 0
    print(f"{rule_path} differs from {alerts_path}: run scripts/check-deploy.sh --write", file=sys.stderr)
    return 1


def split(rendered, core_path, custom_path):
    docs = load_all(rendered)
    core = [d for d in docs if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
    custom = [d for d in docs if d["apiVersion"].startswith(CUSTOM_GROUPS)]
    for path, part in ((core_path, core), (custom_path, custom)):
        with open(path, "w") as f:
            yaml.safe_dump_all(part, f, sort_keys=False)
    return 0


def custom(rendered):
    docs = load_all(rendered)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    for name, so in by_kind.get("ScaledObject", {}).items():
        spec = so.get("spec", {})
        target = spec.get("scaleTargetRef", {}).get("name")
        need(target in by_kind.get("Deployment", {}), f"ScaledObject {name}: no Deployment {target!r}")
        need(0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), f"ScaledObject {name}: min > max")
        triggers = spec.get("triggers") or []
        need(triggers, f"ScaledObject {name}: no triggers")
        for t in triggers:
            need(t.get("type"), f"ScaledObject {name}: a trigger without type")
            meta = t.get("metadata", {})
            kind = t.get("type")
            if kind in ("redis-streams", "redis-sentinel-streams"):
                for key in ("stream", "consumerGroup"):
                    need(meta.get(key), f"ScaledObject {name}: {kind} trigger without {key}")
                if kind == "redis-sentinel-streams":
                    need(meta.get("sentinelMaster"), f"ScaledObject {name}: {kind} trigger without sentinelMaster")
                need(
                    any(k in meta for k in ("lagCount", "pendingEntriesCount", "streamLength")),
                    f"ScaledObject {name}: {kind} trigger without a target count",
                )
                auth = (t.get("authenticationRef") or {}).get("name")
                address = "addresses" if kind == "redis-sentinel-streams" else "address"
                params = {
                    r.get("parameter")
                    for r in (by_kind.get("TriggerAuthentication", {}).get(auth) or {}).get("spec", {}).get(
                        "secretTargetRef", []
                    )
                }
                need(
                    address in params or meta.get(address) or meta.get(f"{address}FromEnv"),
                    f"ScaledObject {name}: no Redis {address} (metadata or TriggerAuthentication {auth!r})",
                )
    for name, ta in by_kind.get("TriggerAuthentication", {}).items():
        refs = ta.get("spec", {}).get("secretTargetRef") or []
        need(refs, f"TriggerAuthentication {name}: no secretTargetRef")
        for r in refs:
            need(r.get("parameter") and r.get("name") and r.get("key"), f"TriggerAuthentication {name}: incomplete ref {r}")
    services = by_kind.get("Service", {})
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        spec = sm.get("spec", {})
        labels = spec.get("selector", {}).get("matchLabels", {})
        need(labels, f"ServiceMonitor {name}: no selector")
        picked = [s for s in services.values() if labels.items() <= (s["metadata"].get("labels") or {}).items()]
        need(picked, f"ServiceMonitor {name}: selects no Service")
        ports = {p.get("name") for s in picked for p in s["spec"].get("ports", [])}
        for ep in spec.get("endpoints") or []:
            need(ep.get("port") in ports, f"ServiceMonitor {name}: no selected Service has a port {ep.get('port')!r}")
        need(spec.get("endpoints"), f"ServiceMonitor {name}: no endpoints")
    for name, pr in by_kind.get("PrometheusRule", {}).items():
        groups = pr.get("spec", {}).get("groups") or []
        need(groups, f"PrometheusRule {name}: no groups")
        for g in groups:
            need(g.get("name"), f"PrometheusRule {name}: a group without name")
            for r in g.get("rules") or []:
                need((r.get("alert") or r.get("record")) and r.get("expr"), f"PrometheusRule {name}: rule {r}")
    if problems:
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    counts = Counter(d["kind"] for d in docs)
    print(f"  {len(docs)} resources: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "rule":
        return rule(argv[1], argv[2], "--write" in argv[3:])
    if len(argv) == 4 and argv[0] == "split":
        return split(*argv[1:])
    if len(argv) == 2 and argv[0] == "custom":
        return custom(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
