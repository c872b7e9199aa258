#!/usr/bin/env python3
"""Writes src/protobuf/messages.rs: one `message!` line per k8s-pb prost struct reachable from the
kinds muster decodes, pairing each Rust field with its JSON name.

Field names and types come from the k8s-pb sources. JSON names and Go's omission rules come
from the Go types (the struct tags of kubernetes/api and kubernetes/apimachinery, matched by
protobuf tag number): a non-pointer scalar tagged `omitempty` is marked `omitempty` (Go's
protobuf encoding always writes it, Go's JSON leaves its zero value out); pointers keep zeros.
Without the Go sources, JSON names fall back to k8s-openapi's serde tables, then lowerCamelCase.
Run from crates/muster-api after a build has fetched both crates:
    API=<kubernetes/api git dir> APIMACHINERY=<kubernetes/apimachinery git dir> \
        python3 testdata/gen_protobuf_messages.py > src/protobuf/messages.rs
"""
import glob, os, re, subprocess, sys

REG = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))[0]
PB = REG + "k8s-pb-0.9.0/src/"
OPENAPI = REG + "k8s-openapi-0.29.0/src/v1_33/"

ROOTS = [
    ("api::core::v1", k) for k in
    ["Namespace", "Service", "ConfigMap", "Secret", "ServiceAccount", "Pod", "Endpoints", "Event", "Node"]
] + [("api::apps::v1", k) for k in ["Deployment", "ReplicaSet", "StatefulSet", "ControllerRevision"]] + [
    ("api::discovery::v1", "EndpointSlice"),
    ("api::coordination::v1", "Lease"),
    ("api::events::v1", "Event"),
]
# Converted by hand in convert.rs.
SPECIAL = {"Time", "MicroTime", "IntOrString", "Quantity", "Duration", "RawExtension", "FieldsV1"}


GO_DIRS = {
    "api::core::v1": ("API", "core/v1"),
    "api::apps::v1": ("API", "apps/v1"),
    "api::discovery::v1": ("API", "discovery/v1"),
    "api::coordination::v1": ("API", "coordination/v1"),
    "api::events::v1": ("API", "events/v1"),
    "apimachinery::pkg::apis::meta::v1": ("APIMACHINERY", "pkg/apis/meta/v1"),
}


def go_fields(module):
    """{lowercased struct name: {protobuf tag: (json name, pointer, omitempty)}}"""
    repo_var, directory = GO_DIRS.get(module, (None, None))
    repo = os.environ.get(repo_var or "", "")
    if not repo:
        return {}
    git = ["git", "--git-dir", repo]
    names = subprocess.run(git + ["ls-tree", "--name-only", "HEAD", directory + "/"],
                           capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for name in names:
        if not name.endswith(".go") or name.endswith("_test.go") or "generated" in name:
            continue
        src = subprocess.run(git + ["show", "HEAD:" + name], capture_output=True, text=True, check=True).stdout
        for m in re.finditer(r"^type (\w+) struct \{(.*?)^\}", src, re.S | re.M):
            fields = {}
            for ty, tags in re.findall(r"^\s*(?:\w+\s+)?(\S+)\s+`([^`]*)`", m.group(2), re.M):
                js = re.search(r'json:"([^"]*)"', tags)
                pb = re.search(r'protobuf:"\w+,(\d+),', tags)
                if js and pb:
                    json_name, *opts = js.group(1).split(",")
                    fields[pb.group(1)] = (json_name, ty.startswith("*"), "omitempty" in opts)
            out[m.group(1).lower()] = fields
    return out


def parse_module(module):
    src = open(PB + module.replace("::", "/") + "/mod.rs").read()
    src = re.sub(r"^\s*///.*\n", "", src, flags=re.M)
    structs = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S):
        body = re.sub(r"\s+", " ", m.group(2))
        structs[m.group(1)] = re.findall(r"#\[prost\((.*?)\)\] pub (r#)?(\w+): (.+?),(?= #\[|\s*$)", body)
    return structs


def resolve(module, path):
    parts = module.split("::")
    segs = path.split("::")
    while segs and segs[0] == "super":
        parts.pop()
        segs.pop(0)
    if len(segs) == 1:
        return module, segs[0]
    return "::".join(parts + segs[:-1]), segs[-1]


def json_names():
    table = {}
    for f in glob.glob(OPENAPI + "**/*.rs", recursive=True):
        for json_name, rust in re.findall(r'"([A-Za-z0-9$]+)" => Field::Key_(\w+)', open(f).read()):
            table.setdefault(rust, set()).add(json_name)
    return table


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def main():
    modules, names, go = {}, json_names(), {}
    todo, seen, out = list(ROOTS), set(), []
    while todo:
        module, name = todo.pop()
        if (module, name) in seen or name in SPECIAL:
            continue
        seen.add((module, name))
        structs = modules.setdefault(module, None) or parse_module(module)
        modules[module] = structs
        go_struct = go.setdefault(module, None) or go_fields(module)
        go[module] = go_struct
        go_struct = go_struct.get(name.lower(), {})
        fields = []
        for attr, raw, field, ty in structs[name]:
            tag = re.search(r'tag = "(\d+)"', attr).group(1)
            if "oneof" in attr:
                sys.exit(f"oneof in {module}::{name}.{field}")
            for ref in re.findall(r"((?:super::)*(?:\w+::)*[A-Z]\w*)", ty):
                if ref.split("::")[-1] in ("Option", "Vec", "String", "BTreeMap", "HashMap"):
                    continue
                todo.append(resolve(module, ref.replace("::prost::alloc::", "").lstrip(":")))
            candidates = names.get(field, set())
            json_name = camel(field)
            if len(candidates) == 1:
                json_name = next(iter(candidates))
            elif json_name not in candidates and candidates:
                sys.exit(f"ambiguous JSON name for {name}.{field}: {candidates}")
            flag = ""
            if tag in go_struct:
                json_name, pointer, omitempty = go_struct[tag]
                plain = re.sub(r"::(core::option|prost::alloc::string)::", "", ty)
                scalar = re.fullmatch(r"Option<(String|i32|i64|bool|f64)>", plain)
                if json_name == "":
                    json_name, flag = "", " inline"
                elif scalar and omitempty and not pointer:
                    flag = " omitempty"
            elif go_struct:
                sys.stderr.write(f"no Go field for {name}.{field} (tag {tag})\n")
            fields.append(f'{raw}{field}: "{json_name}"{flag}' if flag != " inline" else f"{raw}{field}: inline")
        out.append(f"message!(k8s_pb::{module}::{name} {{ {', '.join(fields)} }});")
    print("// @generated by testdata/gen_protobuf_messages.py: field lists of the k8s-pb messages")
    print("// muster decodes, with their Kubernetes JSON names.")
    print("#![cfg_attr(rustfmt, rustfmt_skip)]\n")
    print("use super::convert::message;\n")
    for line in sorted(out):
        print(line)


main()
