#!/bin/bash
# Records the bodies of kubectl's generator commands into testdata/protobuf/<fixture>.bin
# (<fixture>.request.json where kubectl sends JSON, as `kubectl run` does), with
# the JSON `--dry-run=client -o json` prints for the same command as <fixture>.json.
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
    fixture=$1; shift
    k "$@"
    if [ -e "$OUT/last.bin" ]; then
        mv "$OUT/last.bin" "$OUT/$fixture.bin"
    else
        mv "$OUT/last.request.json" "$OUT/$fixture.request.json"
    fi
    # The flags go before any `-- command`.
    k "$1" "$2" --dry-run=client -o json "${@:3}" > "$OUT/$fixture.json"
}
run namespace create namespace x
run deployment create deployment web --image=nginx --replicas=2 --port=80
run deployment-two-images create deployment pair --image=nginx:1.25 --image=busybox --replicas=0
run service-clusterip create service clusterip s --tcp=80:8080
run service-nodeport create service nodeport np --tcp=5678:8080 --node-port=30080
run service-headless create service clusterip h --clusterip=None --tcp=53:53
run configmap create configmap c --from-literal=a=b --from-literal=empty=
run secret create secret generic s --from-literal=a=b
run secret-docker create secret docker-registry reg --docker-server=r.example --docker-username=u --docker-password=p
run serviceaccount create serviceaccount sa
run pod-run run dnsutils --image=tutum/dnsutils --labels=app=dns,tier=t --env=A=1 --port=53 --command -- sleep infinity
