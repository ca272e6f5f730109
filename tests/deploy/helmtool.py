"""Run Helm's Go library (helm-sdkpy) in a child process and print the outcome as JSON.

``python -m tests.deploy.helmtool lint CHART`` → Helm lint's messages (severity, path);
``python -m tests.deploy.helmtool render CHART VALUES.json`` → ``{"error": …, "manifests": […]}``:
Helm's install action against the stand-in API server of :mod:`tests.deploy.kubeapi`, which
stops it right after rendering. Run apart from pytest so the Go runtime's signal handlers never
share a process with chDB.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_sdkpy as helm

from tests.deploy.kubeapi import KubeApi

SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


def lint(chart: str) -> dict[str, Any]:
    result = asyncio.run(helm.Lint(helm.Configuration()).run(chart))
    return {"messages": [{"severity": SEVERITY.get(m["Severity"], str(m["Severity"])), "path": m["Path"]}
                         for m in result.get("Messages") or []],
            "errors": len(result.get("Errors") or [])}


def render(chart: str, values: dict[str, Any], namespace: str = "plant") -> dict[str, Any]:
    api = KubeApi().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = helm.Configuration(namespace=namespace, kubeconfig=str(api.kubeconfig(Path(tmp) / "kc")))
            error = None
            try:
                asyncio.run(helm.Install(config).run("edge", chart, values=values, wait=False, timeout=30))
            except helm.HelmError as exc:
                error = str(exc)
        rendered = bool(api.releases)
        return {"error": error, "rendered": rendered,
                "manifests": api.manifests() if rendered else [],
                "notes": api.releases[-1].get("info", {}).get("notes", "") if rendered else ""}
    finally:
        api.stop()


def main(argv: list[str]) -> int:
    if argv[0] == "lint":
        out = lint(argv[1])
    elif argv[0] == "render":
        out = render(argv[1], json.loads(Path(argv[2]).read_text()))
    else:
        print(f"unknown command {argv[0]!r}: use lint or render", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
