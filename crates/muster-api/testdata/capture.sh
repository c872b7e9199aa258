#!/bin/sh
# Records kubectl's protobuf bodies into testdata/protobuf/<resource>.bin, with the JSON
# `--dry-run=client -o json` gives for the same command as <resource>.json.
set -eu
cd "$(dirname "$0")"
PORT=${PORT:-18931}
OUT=protobuf
CACHE=$(mktemp -d)
KUBECONFIG_FILE=$CACHE/kubeconfig
cat > "$KUBECONFIG_FILE" <<CFG
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:$PORT"}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
CFG
python3 capture.py "$PORT" "$OUT" &
SERVER=$!
trap 'kill $SERVER; rm -rf "$CACHE"' EXIT
sleep 1
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$CACHE" "$@"; }
run() {
    resource=$1; shift
    k create "$@"
    k create "$@" --dry-run=client -o json > "$OUT/$resource.json"
}
run namespaces namespace x
run deployments deployment web --image=nginx --replicas=2 --port=80
run services service clusterip s --tcp=80:8080
run configmaps configmap c --from-literal=a=b
run secrets secret generic s --from-literal=a=b
run serviceaccounts serviceaccount sa
