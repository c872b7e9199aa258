#!/bin/bash
# Records `kubectl apply` strategic merge patches for each step of testdata/smp/manifests
# (<case>-0.yaml creates, each later step patches) as testdata/smp/<case>-<n>.{live,patch,want}.json.
set -eu
cd "$(dirname "$0")"
PORT=${PORT:-18932}
OUT=smp
CACHE=$(mktemp -d)
cat > "$CACHE/kubeconfig" <<CFG
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:$PORT"}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
CFG
python3 capture_apply.py "$PORT" "$OUT" &
SERVER=$!
trap 'kill $SERVER; rm -rf "$CACHE"' EXIT
sleep 1
for first in "$OUT"/manifests/*-0.yaml; do
    case=$(basename "$first" -0.yaml)
    for step in "$OUT/manifests/$case"-*.yaml; do
        n=$(basename "$step" .yaml)
        kubectl --kubeconfig "$CACHE/kubeconfig" --cache-dir "$CACHE" apply --validate=false -f "$step"
        if [ -e "$OUT/last.patch.json" ]; then
            for part in live patch want; do mv "$OUT/last.$part.json" "$OUT/$n.$part.json"; done
        fi
    done
done
