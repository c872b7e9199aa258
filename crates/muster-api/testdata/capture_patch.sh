#!/bin/bash
# Records the patches kubectl's editing commands send against testdata/smp/manifests/deploy-1.yaml
# as testdata/patches/<name>.patch.json (+ <name>.type); the live object is patches/live.json.
set -eu
cd "$(dirname "$0")"
PORT=${PORT:-18935}
OUT=patches
mkdir -p "$OUT"
CACHE=$(mktemp -d)
cat > "$CACHE/kubeconfig" <<CFG
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:$PORT"}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
CFG
python3 capture_patch.py "$PORT" "$OUT" &
SERVER=$!
trap 'kill $SERVER; rm -rf "$CACHE"' EXIT
sleep 1
k() { kubectl --kubeconfig "$CACHE/kubeconfig" --cache-dir "$CACHE" "$@"; }
k apply --validate=false -f smp/manifests/deploy-1.yaml
k get deploy web -o json > "$OUT/live.json"
run() {
    name=$1; shift
    k "$@"
    mv "$OUT/last.patch.json" "$OUT/$name.patch.json"
    mv "$OUT/last.type" "$OUT/$name.type"
}
run set-image set image deploy/web nginx=nginx:1.27 sidecar=busybox:1.36
run set-env set env deploy/web -c nginx BAZ=3 FOO=changed
run unset-env set env deploy/web -c nginx FOO-
run set-resources set resources deploy/web -c nginx --limits=cpu=200m,memory=64Mi
run rollout-restart rollout restart deploy/web
run rollout-pause rollout pause deploy/web
run label label deploy web tier=backend --overwrite
run unlabel label deploy web tier-
run annotate annotate deploy web note=hello
run patch-json patch deploy web --type=json -p '[{"op":"replace","path":"/spec/replicas","value":5}]'
run patch-merge patch deploy web --type=merge -p '{"spec":{"minReadySeconds":7}}'
run patch-strategic patch deploy web -p '{"spec":{"template":{"spec":{"containers":[{"name":"extra","image":"redis"}]}}}}'
