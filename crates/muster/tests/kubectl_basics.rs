//! The everyday kubectl commands, asserting on what kubectl prints: each transcript runs
//! against `muster apiserver` with the embedded store, and the ones that exercise storage also
//! through two `muster apiserver --store etcd` processes on a three-member etcd cluster.

mod common;

use common::etcd::Etcd;
use common::{DEPLOYMENT, SERVICE, Server, configmap, pod, server, tools_present};

/// One `#[test]` per transcript, each on its own `muster apiserver` with the embedded store.
macro_rules! on_the_embedded_store {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(s) = server(false) {
                    transcript::$name(&s);
                }
            }
        )*
    };
}

on_the_embedded_store!(
    get_watch_streams_new_objects,
    version_reports_kubernetes_1_33,
    api_resources_lists_short_names_and_groups,
    bootstrap_namespaces_and_services_exist,
    create_get_and_describe_a_deployment,
    apply_twice_says_unchanged_then_configured,
    apply_and_delete_multi_document_files_and_directories,
    replace_patch_label_annotate_and_edit,
    output_formats,
    label_and_field_selectors_and_all_namespaces,
    get_all_lists_each_type_in_the_all_category,
    server_side_apply_creates_then_updates,
    diff_shows_changes_and_exits_1,
    server_dry_run_stores_nothing,
    scale_changes_replicas_through_the_scale_subresource,
    deleting_a_namespace_terminates_it_and_blocks_new_content,
    a_pod_on_a_node_stays_terminating_until_the_final_delete,
    paginated_lists_return_every_object_once,
    events_are_served_in_both_groups,
    explain_describes_fields_from_the_openapi_schemas,
);

/// The transcripts that go through the store (writes and their preconditions, patches,
/// server-side apply, watches, paginated lists, dry runs, finalizers and graceful deletion,
/// bootstrap by two servers at once), each on its own pair of `muster apiserver --store etcd`
/// processes under its own key prefix of one three-member etcd cluster. kubectl commands
/// alternate between the two API servers, so each step reads what the other one wrote. The
/// others (version, discovery, tables, explain, diff) do not touch the store and would only
/// repeat the embedded store's runs.
#[test]
fn storage_transcripts_through_two_apiservers_on_etcd() {
    use transcript::*;
    if !tools_present(false) {
        return;
    }
    let Some(etcd) = Etcd::start(3) else { return };
    type Transcript = fn(&Server);
    let transcripts: &[(&str, Transcript)] = &[
        ("bootstrap", bootstrap_namespaces_and_services_exist),
        ("create", create_get_and_describe_a_deployment),
        ("apply", apply_twice_says_unchanged_then_configured),
        (
            "multi",
            apply_and_delete_multi_document_files_and_directories,
        ),
        ("edit", replace_patch_label_annotate_and_edit),
        ("selectors", label_and_field_selectors_and_all_namespaces),
        ("watch", get_watch_streams_new_objects),
        ("ssa", server_side_apply_creates_then_updates),
        ("dryrun", server_dry_run_stores_nothing),
        (
            "scale",
            scale_changes_replicas_through_the_scale_subresource,
        ),
        (
            "namespace",
            deleting_a_namespace_terminates_it_and_blocks_new_content,
        ),
        (
            "graceful",
            a_pod_on_a_node_stays_terminating_until_the_final_delete,
        ),
        ("pages", paginated_lists_return_every_object_once),
    ];
    // A few at a time: each runs two muster processes and many kubectl commands.
    let endpoints = etcd.endpoints();
    let mut failures = Vec::new();
    for batch in transcripts.chunks(4) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|(name, transcript)| {
                    let endpoints = &endpoints;
                    let handle = scope.spawn(move || {
                        let pair = Server::start_pair_on_etcd(endpoints, &format!("/t-{name}"));
                        transcript(&pair);
                    });
                    (name, handle)
                })
                .collect();
            for (name, handle) in running {
                if handle.join().is_err() {
                    failures.push(*name);
                }
            }
        });
    }
    assert!(
        failures.is_empty(),
        "failed on etcd: {failures:?} (see the panics above)"
    );
}

mod transcript {
    use super::*;

    pub fn version_reports_kubernetes_1_33(s: &Server) {
        let out = s.kubectl(&["version"]).ok();
        assert!(
            out.stdout.contains("Server Version: v1.33."),
            "{}",
            out.stdout
        );
    }

    pub fn api_resources_lists_short_names_and_groups(s: &Server) {
        let out = s.kubectl(&["api-resources"]).ok().stdout;
        for (name, short) in [
            ("pods", "po"),
            ("services", "svc"),
            ("endpoints", "ep"),
            ("deployments", "deploy"),
            ("replicasets", "rs"),
            ("statefulsets", "sts"),
            ("namespaces", "ns"),
        ] {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"));
            assert!(line.split_whitespace().any(|w| w == short), "{line}");
        }
        for gv in [
            "apps/v1",
            "discovery.k8s.io/v1",
            "events.k8s.io/v1",
            "coordination.k8s.io/v1",
        ] {
            assert!(out.contains(gv), "{gv} missing:\n{out}");
        }
    }

    pub fn bootstrap_namespaces_and_services_exist(s: &Server) {
        let ns = s.kubectl(&["get", "ns", "-o", "name"]).ok().stdout;
        for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(ns.contains(&format!("namespace/{n}\n")), "{ns}");
        }
        let svc = s.kubectl(&["get", "svc", "-A"]).ok().stdout;
        let kubernetes = svc
            .lines()
            .find(|l| l.contains(" kubernetes "))
            .expect(&svc);
        assert!(
            kubernetes.contains("10.96.0.1 ") && kubernetes.contains("443/TCP"),
            "{kubernetes}"
        );
        let dns = svc.lines().find(|l| l.contains(" kube-dns ")).expect(&svc);
        assert!(
            dns.contains("10.96.0.10") && dns.contains("53/UDP,53/TCP,9153/TCP"),
            "{dns}"
        );
    }

    pub fn create_get_and_describe_a_deployment(s: &Server) {
        let f = s.file("deploy.yaml", DEPLOYMENT);
        let out = s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();
        assert_eq!(out.stdout, "deployment.apps/nginx created\n");
        let get = s.kubectl(&["get", "deploy"]).ok().stdout;
        let header: Vec<&str> = get.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
        assert!(get.lines().nth(1).unwrap().starts_with("nginx "), "{get}");
        let describe = s.kubectl(&["describe", "deployment", "nginx"]).ok().stdout;
        assert!(describe.contains("Name:"), "{describe}");
        assert!(describe.contains("nginx:1.25"), "{describe}");
        assert!(
            describe.contains("RollingUpdate"),
            "defaulted strategy:\n{describe}"
        );
    }

    pub fn apply_twice_says_unchanged_then_configured(s: &Server) {
        let f = s.file("deploy.yaml", DEPLOYMENT);
        let path = f.to_str().unwrap();
        assert_eq!(
            s.kubectl(&["apply", "-f", path]).ok().stdout,
            "deployment.apps/nginx created\n"
        );
        assert_eq!(
            s.kubectl(&["apply", "-f", path]).ok().stdout,
            "deployment.apps/nginx unchanged\n"
        );
        s.file(
            "deploy.yaml",
            &DEPLOYMENT.replace("replicas: 2", "replicas: 3"),
        );
        assert_eq!(
            s.kubectl(&["apply", "-f", path]).ok().stdout,
            "deployment.apps/nginx configured\n"
        );
        let replicas = s
            .kubectl(&[
                "get",
                "deploy",
                "nginx",
                "-o",
                "jsonpath={.spec.replicas} {.metadata.generation}",
            ])
            .ok()
            .stdout;
        assert_eq!(replicas, "3 2");
    }

    pub fn apply_and_delete_multi_document_files_and_directories(s: &Server) {
        let multi = format!("{}---\n{}", configmap("a", "1"), configmap("b", "2"));
        s.file("dir/multi.yaml", &multi);
        s.file("dir/svc.yaml", SERVICE);
        let dir = s.data_dir().join("files/dir");
        let out = s
            .kubectl(&["apply", "-f", dir.to_str().unwrap()])
            .ok()
            .stdout;
        assert!(
            out.contains("configmap/a created")
                && out.contains("configmap/b created")
                && out.contains("service/nginx created"),
            "{out}"
        );
        let out = s
            .kubectl(&["delete", "-f", dir.to_str().unwrap()])
            .ok()
            .stdout;
        assert!(
            out.contains("configmap \"a\" deleted") && out.contains("service \"nginx\" deleted"),
            "{out}"
        );
        let left = s.kubectl(&["get", "cm", "a"]).failed();
        assert!(left.stderr.contains("NotFound"), "{}", left.stderr);
    }

    pub fn replace_patch_label_annotate_and_edit(s: &Server) {
        s.kubectl_stdin(&["create", "-f", "-"], DEPLOYMENT).ok();
        // replace
        let f = s.file("d.yaml", &DEPLOYMENT.replace("nginx:1.25", "nginx:1.26"));
        assert_eq!(
            s.kubectl(&["replace", "-f", f.to_str().unwrap()])
                .ok()
                .stdout,
            "deployment.apps/nginx replaced\n"
        );
        // strategic merge patch merges containers by name
        s.kubectl(&[
        "patch",
        "deploy",
        "nginx",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ])
    .ok();
        let c = s.kubectl(&["get", "deploy", "nginx", "-o", "jsonpath={.spec.template.spec.containers[*].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]).ok().stdout;
        assert_eq!(c, "nginx:1.27 80");
        // merge and JSON patches
        s.kubectl(&[
            "patch",
            "deploy",
            "nginx",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ])
        .ok();
        s.kubectl(&[
            "patch",
            "deploy",
            "nginx",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/minReadySeconds","value":5}]"#,
        ])
        .ok();
        // label and annotate
        assert_eq!(
            s.kubectl(&["label", "deploy", "nginx", "tier=web"])
                .ok()
                .stdout,
            "deployment.apps/nginx labeled\n"
        );
        assert_eq!(
            s.kubectl(&["annotate", "deploy", "nginx", "note=hi"])
                .ok()
                .stdout,
            "deployment.apps/nginx annotated\n"
        );
        // edit through an EDITOR script
        let editor = s.file(
            "editor.sh",
            "#!/bin/sh\nsed -i 's/replicas: 4/replicas: 6/' \"$1\"\n",
        );
        std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = s
            .kubectl_env(
                &["edit", "deploy", "nginx"],
                &[("EDITOR", editor.to_str().unwrap())],
            )
            .ok();
        assert_eq!(out.stdout, "deployment.apps/nginx edited\n");
        let got = s.kubectl(&["get", "deploy", "nginx", "-o", "jsonpath={.spec.replicas} {.spec.minReadySeconds} {.metadata.labels.tier} {.metadata.annotations.note}"]).ok().stdout;
        assert_eq!(got, "6 5 web hi");
    }

    pub fn output_formats(s: &Server) {
        s.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT).ok();
        s.kubectl_stdin(&["apply", "-f", "-"], SERVICE).ok();
        let wide = s.kubectl(&["get", "deploy", "-o", "wide"]).ok().stdout;
        assert!(
            wide.lines().next().unwrap().contains("CONTAINERS   IMAGES"),
            "{wide}"
        );
        assert!(
            wide.contains("nginx:1.25") && wide.contains("app=nginx"),
            "{wide}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &s.kubectl(&["get", "deploy", "nginx", "-o", "json"])
                .ok()
                .stdout,
        )
        .unwrap();
        assert_eq!(json["kind"], "Deployment");
        assert!(
            json["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36)
        );
        assert!(
            json["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|r| r.parse::<u64>().is_ok())
        );
        let yaml = s
            .kubectl(&["get", "svc", "nginx", "-o", "yaml"])
            .ok()
            .stdout;
        assert!(
            yaml.contains("kind: Service") && yaml.contains("targetPort: 80"),
            "{yaml}"
        );
        assert_eq!(
            s.kubectl(&["get", "deploy", "-o", "name"]).ok().stdout,
            "deployment.apps/nginx\n"
        );
        let ip = s
            .kubectl(&["get", "svc", "nginx", "-o", "jsonpath={.spec.clusterIP}"])
            .ok()
            .stdout;
        assert!(
            ip.starts_with("10.") && ip.parse::<std::net::Ipv4Addr>().is_ok(),
            "{ip}"
        );
        let cc = s
            .kubectl(&[
                "get",
                "svc",
                "-o",
                "custom-columns=NAME:.metadata.name,IP:.spec.clusterIP",
            ])
            .ok()
            .stdout;
        assert!(
            cc.contains(&format!("nginx        {ip}"))
                || cc
                    .lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["nginx", ip.as_str()]),
            "{cc}"
        );
    }

    pub fn label_and_field_selectors_and_all_namespaces(s: &Server) {
        s.kubectl(&["create", "namespace", "other"]).ok();
        s.kubectl_stdin(&["apply", "-f", "-"], &pod("web-1", "app: web"))
            .ok();
        s.kubectl_stdin(&["apply", "-f", "-"], &pod("db-1", "app: db"))
            .ok();
        s.kubectl_stdin(
            &["apply", "-n", "other", "-f", "-"],
            &pod("web-2", "app: web"),
        )
        .ok();
        let names = |args: &[&str]| -> Vec<String> {
            s.kubectl(args)
                .ok()
                .stdout
                .lines()
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            names(&["get", "pods", "-l", "app=web", "-o", "name"]),
            ["pod/web-1"]
        );
        assert_eq!(
            names(&["get", "pods", "-l", "app in (web,db)", "-o", "name"]),
            ["pod/db-1", "pod/web-1"]
        );
        assert_eq!(
            names(&["get", "pods", "-l", "app!=web", "-o", "name"]),
            ["pod/db-1"]
        );
        assert_eq!(
            names(&[
                "get",
                "pods",
                "--field-selector",
                "metadata.name=db-1",
                "-o",
                "name"
            ]),
            ["pod/db-1"]
        );
        let all = s
            .kubectl(&["get", "pods", "-A", "-l", "app=web"])
            .ok()
            .stdout;
        let rows: Vec<Vec<&str>> = all
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(2).collect())
            .collect();
        assert_eq!(
            rows,
            [vec!["default", "web-1"], vec!["other", "web-2"]],
            "{all}"
        );
        let bad = s
            .kubectl(&["get", "pods", "--field-selector", "spec.nosuch=x"])
            .failed();
        assert!(
            bad.stderr.contains("field label not supported"),
            "{}",
            bad.stderr
        );
    }

    pub fn get_all_lists_each_type_in_the_all_category(s: &Server) {
        let empty = s.kubectl(&["get", "all", "-n", "kube-public"]).ok();
        assert!(
            empty
                .stderr
                .contains("No resources found in kube-public namespace."),
            "{}",
            empty.stderr
        );
        s.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT).ok();
        s.kubectl_stdin(&["apply", "-f", "-"], &pod("p1", "app: x"))
            .ok();
        let out = s.kubectl(&["get", "all"]).ok().stdout;
        for want in ["pod/p1", "service/kubernetes", "deployment.apps/nginx"] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
    }

    pub fn get_watch_streams_new_objects(s: &Server) {
        use std::io::{BufRead, BufReader};
        s.kubectl_stdin(&["apply", "-f", "-"], &configmap("first", "1"))
            .ok();
        let mut child = s.kubectl_spawn(&["get", "configmaps", "-w"]);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next = || {
            rx.recv_timeout(std::time::Duration::from_secs(20))
                .expect("a watch line")
        };
        assert!(next().starts_with("NAME"));
        let mut seen = vec![next()];
        s.kubectl_stdin(&["apply", "-f", "-"], &configmap("second", "2"))
            .ok();
        while !seen.iter().any(|l| l.starts_with("second ")) {
            seen.push(next());
        }
        assert!(seen.iter().any(|l| l.starts_with("first ")), "{seen:?}");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn server_side_apply_creates_then_updates(s: &Server) {
        let f = s.file("d.yaml", DEPLOYMENT);
        let out = s
            .kubectl(&["apply", "--server-side", "-f", f.to_str().unwrap()])
            .ok();
        assert_eq!(out.stdout, "deployment.apps/nginx serverside-applied\n");
        s.file("d.yaml", &DEPLOYMENT.replace("replicas: 2", "replicas: 5"));
        s.kubectl(&["apply", "--server-side", "-f", f.to_str().unwrap()])
            .ok();
        let got = s
            .kubectl(&[
                "get",
                "deploy",
                "nginx",
                "-o",
                "jsonpath={.spec.replicas} {.metadata.managedFields[0].manager}",
            ])
            .ok()
            .stdout;
        assert_eq!(got, "5 kubectl");
    }

    pub fn diff_shows_changes_and_exits_1(s: &Server) {
        let f = s.file("d.yaml", DEPLOYMENT);
        s.kubectl(&["apply", "-f", f.to_str().unwrap()]).ok();
        let same = s.kubectl(&["diff", "-f", f.to_str().unwrap()]);
        assert_eq!(same.code, 0, "{same:?}");
        s.file("d.yaml", &DEPLOYMENT.replace("nginx:1.25", "nginx:1.26"));
        let diff = s.kubectl(&["diff", "-f", f.to_str().unwrap()]);
        assert_eq!(diff.code, 1, "{diff:?}");
        assert!(
            diff.stdout.contains("-      - image: nginx:1.25")
                && diff.stdout.contains("+      - image: nginx:1.26"),
            "{}",
            diff.stdout
        );
        // diff is a dry run: nothing changed.
        let image = s
            .kubectl(&[
                "get",
                "deploy",
                "nginx",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .ok()
            .stdout;
        assert_eq!(image, "nginx:1.25");
    }

    pub fn server_dry_run_stores_nothing(s: &Server) {
        let out = s
            .kubectl_stdin(
                &["create", "--dry-run=server", "-f", "-"],
                &configmap("dry", "1"),
            )
            .ok();
        assert_eq!(out.stdout, "configmap/dry created (server dry run)\n");
        s.kubectl(&["get", "cm", "dry"]).failed();
        s.kubectl_stdin(&["apply", "-f", "-"], &configmap("real", "1"))
            .ok();
        s.kubectl(&["delete", "cm", "real", "--dry-run=server"])
            .ok();
        s.kubectl(&["get", "cm", "real"]).ok();
    }

    pub fn scale_changes_replicas_through_the_scale_subresource(s: &Server) {
        s.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT).ok();
        assert_eq!(
            s.kubectl(&["scale", "deploy", "nginx", "--replicas=4"])
                .ok()
                .stdout,
            "deployment.apps/nginx scaled\n"
        );
        s.kubectl(&[
            "scale",
            "deploy",
            "nginx",
            "--current-replicas=4",
            "--replicas=1",
        ])
        .ok();
        let stale = s
            .kubectl(&[
                "scale",
                "deploy",
                "nginx",
                "--current-replicas=4",
                "--replicas=2",
            ])
            .failed();
        assert!(stale.stderr.contains("4"), "{}", stale.stderr);
        let scale = s
            .kubectl(&[
                "get",
                "--raw",
                "/apis/apps/v1/namespaces/default/deployments/nginx/scale",
            ])
            .ok()
            .stdout;
        let v: serde_json::Value = serde_json::from_str(&scale).unwrap();
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["status"]["selector"], "app=nginx");
    }

    pub fn deleting_a_namespace_terminates_it_and_blocks_new_content(s: &Server) {
        s.kubectl(&["create", "namespace", "doomed"]).ok();
        s.kubectl(&["delete", "namespace", "doomed", "--wait=false"])
            .ok();
        let phase = s
            .kubectl(&["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"])
            .ok()
            .stdout;
        assert_eq!(phase, "Terminating");
        let out = s
            .kubectl_stdin(
                &["create", "-n", "doomed", "-f", "-"],
                &configmap("late", "1"),
            )
            .failed();
        assert!(
            out.stderr.contains("Forbidden")
                && out.stderr.contains("because it is being terminated"),
            "{}",
            out.stderr
        );
        // The namespace controller's last step: finalize with no finalizers removes it.
        let finalize = s.file(
        "finalize.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"doomed"},"spec":{"finalizers":[]}}"#,
    );
        s.kubectl(&[
            "replace",
            "--raw",
            "/api/v1/namespaces/doomed/finalize",
            "-f",
            finalize.to_str().unwrap(),
        ])
        .ok();
        let gone = s.kubectl(&["get", "ns", "doomed"]).failed();
        assert!(
            gone.stderr.contains("namespaces \"doomed\" not found"),
            "{}",
            gone.stderr
        );
        let default = s.kubectl(&["delete", "namespace", "default"]).failed();
        assert!(
            default.stderr.contains("this namespace may not be deleted"),
            "{}",
            default.stderr
        );
    }

    pub fn a_pod_on_a_node_stays_terminating_until_the_final_delete(s: &Server) {
        s.kubectl_stdin(&["apply", "-f", "-"], &pod("unbound", "app: x"))
            .ok();
        s.kubectl(&["delete", "pod", "unbound", "--wait=false"])
            .ok();
        s.kubectl(&["get", "pod", "unbound"]).failed();

        s.kubectl_stdin(&["apply", "-f", "-"], &pod("bound", "app: x"))
            .ok();
        let binding = s.file(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"bound"},"target":{"kind":"Node","name":"node-1"}}"#,
    );
        s.kubectl(&[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/bound/binding",
            "-f",
            binding.to_str().unwrap(),
        ])
        .ok();
        let node = s
            .kubectl(&["get", "pod", "bound", "-o", "jsonpath={.spec.nodeName}"])
            .ok()
            .stdout;
        assert_eq!(node, "node-1");
        // No agent registered node-1 (no Node object): logs fail with a Status that says so.
        let logs = s.kubectl(&["logs", "bound"]).failed();
        assert!(
            logs.stderr
                .contains("Error from server (ServiceUnavailable)")
                && logs.stderr.contains("agent endpoint"),
            "{}",
            logs.stderr
        );
        s.kubectl(&["delete", "pod", "bound", "--wait=false"]).ok();
        let held = s
            .kubectl(&[
                "get",
                "pod",
                "bound",
                "-o",
                "jsonpath={.metadata.deletionGracePeriodSeconds}",
            ])
            .ok()
            .stdout;
        assert_eq!(held, "30");
        s.kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"])
            .ok();
        s.kubectl(&["get", "pod", "bound"]).failed();
    }

    pub fn paginated_lists_return_every_object_once(s: &Server) {
        let many: Vec<String> = (0..7).map(|i| configmap(&format!("cm-{i}"), "v")).collect();
        s.kubectl_stdin(&["apply", "-f", "-"], &many.join("---\n"))
            .ok();
        let paged = s
            .kubectl(&["get", "cm", "--chunk-size=2", "-o", "name"])
            .ok()
            .stdout;
        let names: Vec<&str> = paged.lines().collect();
        let want: Vec<String> = (0..7).map(|i| format!("configmap/cm-{i}")).collect();
        assert_eq!(names, want);
    }

    pub fn events_are_served_in_both_groups(s: &Server) {
        let event = r#"apiVersion: v1
kind: Event
metadata:
  name: ev1
involvedObject:
  kind: Pod
  name: web
  namespace: default
reason: Testing
message: hello from core
type: Normal
source:
  component: test
firstTimestamp: "2026-01-01T00:00:00Z"
lastTimestamp: "2026-01-01T00:00:00Z"
count: 1
"#;
        s.kubectl_stdin(&["create", "-f", "-"], event).ok();
        let v1: serde_json::Value = serde_json::from_str(
            &s.kubectl(&["get", "events.v1.events.k8s.io", "ev1", "-o", "json"])
                .ok()
                .stdout,
        )
        .unwrap();
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["note"], "hello from core");
        assert_eq!(v1["regarding"]["name"], "web");
        let by_field = s
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=web,involvedObject.kind=Pod",
                "-o",
                "name",
            ])
            .ok()
            .stdout;
        assert_eq!(by_field, "event/ev1\n");
    }

    pub fn explain_describes_fields_from_the_openapi_schemas(s: &Server) {
        let out = s
            .kubectl(&["explain", "deployment.spec.replicas"])
            .ok()
            .stdout;
        assert!(
            out.contains("GROUP:      apps") && out.contains("FIELD: replicas <integer>"),
            "{out}"
        );
        let out = s.kubectl(&["explain", "pod.spec.containers"]).ok().stdout;
        assert!(
            out.contains("FIELD: containers <[]Container>") && out.contains("image\t<string>"),
            "{out}"
        );
        let out = s.kubectl(&["explain", "svc.spec.nosuch"]).failed();
        assert!(
            out.stderr.contains("field \"nosuch\" does not exist"),
            "{}",
            out.stderr
        );
    }
}
