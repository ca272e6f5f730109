"""A minimal stand-in for the Kubernetes API, enough for Helm's install action to render a chart.

There is no Kubernetes cluster (and no ``helm`` binary) here; helm-sdkpy carries Helm's Go
library, whose install action talks to an API server before and after rendering. This server
answers the version and discovery calls and the release-history lookup, records the release
Secret Helm writes (it holds the rendered manifest) and refuses everything else, so an install
stops right after rendering: a render error comes back as Helm's own error message, a good
render leaves its manifests in :attr:`KubeApi.releases`.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

_RELEASE = re.compile(rb"H4sI[A-Za-z0-9+/=]+")
_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}
_CORE = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": n, "namespaced": True, "kind": k, "verbs": ["create", "get", "list", "delete"]}
    for n, k in (("secrets", "Secret"), ("configmaps", "ConfigMap"), ("services", "Service"),
                 ("pods", "Pod"), ("serviceaccounts", "ServiceAccount"),
                 ("persistentvolumeclaims", "PersistentVolumeClaim"))]}
_GROUPS = {"apps/v1": [("deployments", "Deployment"), ("statefulsets", "StatefulSet")],
           "batch/v1": [("jobs", "Job")],
           "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy"), ("ingresses", "Ingress")],
           # the Prometheus Operator's CRD, as in a cluster with kube-prometheus-stack
           "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor")]}


class KubeApi:
    """Start with :meth:`start`; write a kubeconfig with :meth:`kubeconfig`; stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.releases: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/version":
                    return self._send(200, _VERSION)
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/api/v1":
                    return self._send(200, _CORE)
                if path == "/apis":
                    groups = [{"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": "v1"}],
                               "preferredVersion": {"groupVersion": gv, "version": "v1"}} for gv in _GROUPS]
                    return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
                for gv, resources in _GROUPS.items():
                    if path == f"/apis/{gv}":
                        return self._send(200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                            {"name": n, "namespaced": True, "kind": k, "verbs": ["create", "get", "list"]}
                            for n, k in resources]})
                if path.endswith("/secrets"):
                    return self._send(200, {"kind": "SecretList", "apiVersion": "v1", "items": [],
                                            "metadata": {"resourceVersion": "1"}})
                return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404, "message": f"{path} not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                # client-go sends protobuf; Helm's release record is base64(gzip(JSON)) inside it.
                found = _RELEASE.search(body) if self.path.split("?")[0].endswith("/secrets") else None
                if found:
                    api.releases.append(json.loads(gzip.decompress(base64.b64decode(found.group(0)))))
                    return self._send(201, {"kind": "Secret", "apiVersion": "v1",
                                            "metadata": {"name": "release", "resourceVersion": "2"}})
                return self._send(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "Forbidden", "code": 403,
                                        "message": "this stand-in API server stores nothing but the release"})

            def do_PUT(self) -> None:
                self.do_POST()

            def do_DELETE(self) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": "not found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "edge",
            "clusters": [{"name": "edge", "cluster": {"server": self.url}}],
            "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "edge"}}],
            "users": [{"name": "edge", "user": {}}],
        }))
        return path

    def manifests(self) -> list[dict[str, Any]]:
        """The Kubernetes objects of the last rendered release (hooks included)."""
        rel = self.releases[-1]
        docs = [rel.get("manifest", "")] + [h.get("manifest", "") for h in rel.get("hooks") or []]
        return [d for text in docs for d in yaml.safe_load_all(text) if d]
