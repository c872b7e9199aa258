#!/usr/bin/env python3
"""Generates the benchmark data of performance.md §7.2 in two forms: a zone file for NSD and
Knot, and Kubernetes objects (JSON) for muster-dns, plus the dnsperf query files.

Data: hs1/hs10/hs100/hs250.default.svc with 1/10/100/250 A records, and 10,000 headless
services svc<N>.ns<N%100>.svc with 10 ready endpoints each (100,361 A records in all).
Usage: gen.py OUTDIR
"""
import json
import os
import random
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)
random.seed(1)


def ip(n):
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


zone = [
    "$ORIGIN cluster.local.",
    "$TTL 5",
    "@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",
    "@ IN NS ns.dns.cluster.local.",
    "ns.dns IN A 10.96.0.10",
]
namespaces = [{"metadata": {"name": "default"}}] + [
    {"metadata": {"name": f"ns{i}"}} for i in range(100)
]
services, slices = [], []
counter = 1


def add(ns, name, count):
    global counter
    ips = []
    for _ in range(count):
        ips.append(ip(counter))
        counter += 1
    rel = f"{name}.{ns}.svc"
    zone.extend(f"{rel} IN A {a}" for a in ips)
    services.append({"metadata": {"name": name, "namespace": ns},
                     "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}})
    slices.append({
        "metadata": {"name": f"{name}-abcde", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in ips],
    })


for n in (1, 10, 100, 250):
    add("default", f"hs{n}", n)
for s in range(10000):
    add(f"ns{s % 100}", f"svc{s}", 10)

with open(os.path.join(out, "cluster.local.zone"), "w") as f:
    f.write("\n".join(zone) + "\n")
with open(os.path.join(out, "objects.json"), "w") as f:
    json.dump({"namespaces": namespaces, "services": services, "slices": slices}, f)
with open(os.path.join(out, "qmix.txt"), "w") as f:
    for _ in range(100000):
        s = random.randrange(10000)
        f.write(f"svc{s}.ns{s % 100}.svc.cluster.local A\n")


def binary_query(name, bufsize=4096):
    """One query with an EDNS0 OPT record, prefixed by its length (dnsperf -B)."""
    m = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 1)
    m += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    m += struct.pack(">HH", 1, 1)
    m += b"\0" + struct.pack(">HHIH", 41, bufsize, 0, 0)
    return struct.pack(">H", len(m)) + m


for n in (1, 10, 100, 250):
    with open(os.path.join(out, f"q{n}_edns4096.bin"), "wb") as f:
        f.write(binary_query(f"hs{n}.default.svc.cluster.local"))
print(f"{counter - 1} A records, {len(services)} services")
