#!/usr/bin/env python3
"""Records the request bodies kubectl sends, for protobuf fixtures.

A loopback HTTP server that answers just enough discovery for kubectl's generator commands and
saves every POST body as <outdir>/last.bin (protobuf) or <outdir>/last.request.json (echoing it back as the created object).
    python3 capture.py PORT OUTDIR
Regenerate the fixtures with testdata/capture.sh.
"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

OUT = "."
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resource(plural, kind, singular, namespaced, group="", short=()):
    return {"resource": plural, "responseKind": {"group": group, "version": "v1", "kind": kind},
            "scope": "Namespaced" if namespaced else "Cluster", "singularResource": singular,
            "verbs": VERBS, "shortNames": list(short)}


CORE = [resource("namespaces", "Namespace", "namespace", False, short=["ns"]),
        resource("services", "Service", "service", True, short=["svc"]),
        resource("configmaps", "ConfigMap", "configmap", True, short=["cm"]),
        resource("secrets", "Secret", "secret", True),
        resource("serviceaccounts", "ServiceAccount", "serviceaccount", True, short=["sa"]),
        resource("pods", "Pod", "pod", True, short=["po"])]
APPS = [resource("deployments", "Deployment", "deployment", True, "apps", ["deploy"])]
DISCOVERY_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def discovery(items):
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": items}


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.1", "platform": "linux/amd64"})
        elif path == "/api":
            self.reply(200, discovery([{"metadata": {}, "versions": [
                {"version": "v1", "freshness": "Current", "resources": CORE}]}]), DISCOVERY_TYPE)
        elif path == "/apis":
            self.reply(200, discovery([{"metadata": {"name": "apps"}, "versions": [
                {"version": "v1", "freshness": "Current", "resources": APPS}]}]), DISCOVERY_TYPE)
        else:
            self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                             "reason": "NotFound", "message": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        protobuf = self.headers.get("Content-Type") == "application/vnd.kubernetes.protobuf"
        with open(os.path.join(OUT, "last.bin" if protobuf else "last.request.json"), "wb") as f:
            f.write(body)
        sys.stderr.write(f"POST {self.path} {self.headers.get('Content-Type')} {len(body)} bytes\n")
        self.reply(201, body, self.headers.get("Content-Type", "application/json"))

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    OUT = sys.argv[2]
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
