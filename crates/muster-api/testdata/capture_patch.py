#!/usr/bin/env python3
"""Records the patches of kubectl's editing commands (set image, set env, rollout restart, ...).

    python3 capture_patch.py PORT OUTDIR

Like capture_apply.py, but PATCH leaves the object alone and saves the patch as
OUTDIR/last.patch.json with its content type in OUTDIR/last.type, so every command patches the
same live object (saved by the driver script).
"""
import json, os, sys
from http.server import HTTPServer

import capture
import capture_apply


class Handler(capture_apply.Handler):
    def do_PATCH(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(os.path.join(capture.OUT, "last.patch.json"), "wb") as f:
            f.write(body)
        with open(os.path.join(capture.OUT, "last.type"), "w") as f:
            f.write(self.headers.get("Content-Type", ""))
        self.reply(200, capture_apply.OBJECTS[self.path.split("?")[0]])


if __name__ == "__main__":
    capture.OUT = sys.argv[2]
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
