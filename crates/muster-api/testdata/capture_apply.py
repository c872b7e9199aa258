#!/usr/bin/env python3
"""Records the strategic merge patches `kubectl apply` (client-side) sends, for SMP fixtures.

    python3 capture_apply.py PORT OUTDIR

A loopback server holding one object per URL. POST stores the body (plus server-set fields);
PATCH saves the live object and the patch as OUTDIR/last.live.json and OUTDIR/last.patch.json,
then stores what the patch should produce: the manifest from the last-applied annotation, with
the annotation and the same server-set fields. That expected object is OUTDIR/last.want.json.
"""
import json, os, sys
from http.server import HTTPServer

import capture

OBJECTS = {}
SERVER_FIELDS = {"uid": "6f1c1a52-0000-4000-8000-000000000001", "resourceVersion": "7",
                 "creationTimestamp": "2026-01-01T00:00:00Z"}


def stored(obj):
    obj = json.loads(json.dumps(obj))
    obj["metadata"].update(SERVER_FIELDS)
    obj["status"] = {"observedGeneration": 1}
    return obj


def from_annotation(patch):
    annotation = patch["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    obj = json.loads(annotation)
    obj["metadata"].setdefault("annotations", {})[
        "kubectl.kubernetes.io/last-applied-configuration"] = annotation
    return stored(obj)


def save(name, obj):
    with open(os.path.join(capture.OUT, name), "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


class Handler(capture.Handler):
    def do_GET(self):
        path = self.path.split("?")[0]
        if path in OBJECTS:
            self.reply(200, OBJECTS[path])
        else:
            super().do_GET()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self.path.split("?")[0] + "/" + body["metadata"]["name"]
        OBJECTS[path] = stored(body)
        self.reply(201, OBJECTS[path])

    def do_PATCH(self):
        patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self.path.split("?")[0]
        save("last.live.json", OBJECTS[path])
        save("last.patch.json", patch)
        OBJECTS[path] = from_annotation(patch)
        save("last.want.json", OBJECTS[path])
        sys.stderr.write(f"PATCH {self.path} {self.headers.get('Content-Type')}\n")
        self.reply(200, OBJECTS[path])


if __name__ == "__main__":
    capture.OUT = sys.argv[2]
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
