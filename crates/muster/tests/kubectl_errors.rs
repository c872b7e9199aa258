//! Bad input gets Kubernetes' Status errors, as kubectl prints them, and changes nothing.

mod common;

use common::{Server, configmap, server};

/// The store revision, as a list reports it: unchanged means nothing was written.
fn revision(s: &Server) -> String {
    s.kubectl(&[
        "get",
        "configmaps",
        "-A",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
    .ok()
    .stdout
}

#[track_caller]
fn check_fails_and_changes_nothing(
    s: &Server,
    args: &[&str],
    stdin: Option<&str>,
    want_stderr: &[&str],
) {
    let before = revision(s);
    let out = match stdin {
        Some(input) => s.kubectl_stdin(args, input),
        None => s.kubectl(args),
    }
    .failed();
    for want in want_stderr {
        assert!(
            out.stderr.contains(want),
            "{args:?}: want {want:?} in:\n{}",
            out.stderr
        );
    }
    assert_eq!(revision(s), before, "{args:?} wrote something");
}

#[test]
fn kubectl_errors_match_kubernetes_and_write_nothing() {
    if let Some(s) = server(false) {
        errors_match_kubernetes_and_write_nothing(&s);
    }
}

/// The same through two `muster apiserver --store etcd` in turn, on an etcd of its own (the
/// check that nothing was written compares etcd's revision, which any other writer would move).
#[test]
fn kubectl_errors_match_kubernetes_and_write_nothing_on_etcd() {
    if !common::tools_present(false) {
        return;
    }
    let Some(etcd) = common::etcd::Etcd::start(1) else {
        return;
    };
    let pair = Server::start_pair_on_etcd(&etcd.endpoints(), "/errors");
    errors_match_kubernetes_and_write_nothing(&pair);
}

fn errors_match_kubernetes_and_write_nothing(s: &Server) {
    s.kubectl_stdin(&["create", "-f", "-"], &configmap("a", "1"))
        .ok();
    let stale = s.kubectl(&["get", "cm", "a", "-o", "yaml"]).ok().stdout;
    s.kubectl(&["label", "cm", "a", "x=y"]).ok();
    let invalid_pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: invalid\nspec:\n  containers:\n  - name: c\n";
    let unknown_field =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\nspec:\n  foo: 1\n";
    let cases: &[(&[&str], Option<&str>, &[&str])] = &[
        (
            &["get", "pod", "nosuch"],
            None,
            &["Error from server (NotFound): pods \"nosuch\" not found"],
        ),
        (
            &["get", "deploy", "nosuch"],
            None,
            &["Error from server (NotFound): deployments.apps \"nosuch\" not found"],
        ),
        (
            &["create", "-f", "-"],
            Some(&configmap("a", "2")),
            &[
                "Error from server (AlreadyExists)",
                "configmaps \"a\" already exists",
            ],
        ),
        (
            &["create", "-f", "-"],
            Some(invalid_pod),
            &[
                "The Pod \"invalid\" is invalid",
                "spec.containers[0].image: Required value",
            ],
        ),
        (
            &["replace", "-f", "-"],
            Some(&stale),
            &[
                "Error from server (Conflict)",
                "Operation cannot be fulfilled on configmaps \"a\": the object has been modified",
            ],
        ),
        (
            &["apply", "-f", "-"],
            Some("kind: ConfigMap\nmetadata: [unclosed\n"),
            &["error"],
        ),
        (
            &["apply", "--validate=false", "-f", "-"],
            Some("apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: x\n"),
            &["no matches for kind \"Frobnicator\" in version \"v1\""],
        ),
        (
            &["apply", "-f", "-"],
            Some(unknown_field),
            &["strict decoding error: unknown field \"spec\""],
        ),
        (
            &["get", "frobnicators"],
            None,
            &["the server doesn't have a resource type \"frobnicators\""],
        ),
        (&["create", "namespace", "Not_Valid"], None, &["Invalid"]),
    ];
    for (args, stdin, want) in cases {
        check_fails_and_changes_nothing(s, args, *stdin, want);
    }
}

#[test]
fn oversized_bodies_are_413() {
    let Some(s) = server(false) else { return };
    let big = s.file("big.txt", &"x".repeat(3 * 1024 * 1024 + 10));
    let before = revision(&s);
    let out = s
        .kubectl(&[
            "create",
            "configmap",
            "big",
            &format!("--from-file={}", big.display()),
        ])
        .failed();
    assert!(
        out.stderr.contains("RequestEntityTooLarge")
            || out.stderr.contains("Request entity too large"),
        "{}",
        out.stderr
    );
    assert_eq!(revision(&s), before);
}

#[test]
fn raw_http_errors_are_statuses() {
    let Some(s) = server(true) else { return };
    let path = "/api/v1/namespaces/default/configmaps";
    let before = revision(&s);
    // (method, path, content type, body, with token, status code, text in the Status)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a [u8]>,
        bool,
        u16,
        &'a str,
    );
    let cases: &[Case] = &[
        ("GET", path, None, None, false, 401, "Unauthorized"),
        ("POST", path, Some("text/plain"), Some(b"hello"), true, 415, "UnsupportedMediaType"),
        ("POST", path, Some("application/json"), Some(b"{not json"), true, 400, "BadRequest"),
        ("POST", path, Some("application/json"), Some(b"[1,2]"), true, 400, "BadRequest"),
        (
            "POST",
            path,
            Some("application/json"),
            Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}"#),
            true,
            400,
            "does not match the namespace",
        ),
        (
            "POST",
            "/api/v1/namespaces/nosuch/configmaps",
            Some("application/json"),
            Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#),
            true,
            404,
            "namespaces \\\"nosuch\\\" not found",
        ),
        ("PUT", path, Some("application/json"), Some(b"{}"), true, 405, "MethodNotAllowed"),
        ("GET", "/api/v1/frobnicators", None, None, true, 404, "NotFound"),
        ("GET", "/apis/nosuch.example/v1", None, None, true, 404, "NotFound"),
    ];
    for (method, p, ct, body, token, code, want) in cases {
        let (got, text) = s.curl(method, p, *ct, *body, *token);
        assert_eq!(got, *code, "{method} {p}: {text}");
        assert!(text.contains(want), "{method} {p}: want {want:?} in {text}");
        assert!(text.contains("\"kind\":\"Status\""), "{method} {p}: {text}");
    }
    let big = vec![b' '; 3 * 1024 * 1024 + 1];
    let (code, text) = s.curl("POST", path, Some("application/json"), Some(&big), true);
    assert_eq!(code, 413, "{text}");
    assert_eq!(revision(&s), before, "a failed request wrote something");
    // Health and version are anonymous, as in Kubernetes.
    for (p, want) in [
        ("/readyz", "ok"),
        ("/livez", "ok"),
        ("/healthz", "ok"),
        ("/version", "v1.33"),
    ] {
        let (code, text) = s.curl("GET", p, None, None, false);
        assert_eq!(code, 200, "{p}");
        assert!(text.contains(want), "{p}: {text}");
    }
}

#[test]
fn wrong_token_is_unauthorized() {
    let Some(s) = server(false) else { return };
    let out = s.kubectl(&["get", "pods", "--token=wrong"]).failed();
    assert!(
        out.stderr
            .contains("error: You must be logged in to the server"),
        "{}",
        out.stderr
    );
}

#[test]
fn kubeconfig_and_secrets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let Some(s) = server(false) else { return };
    for f in ["kubeconfig", "pki/token", "pki/ca.key"] {
        let mode = std::fs::metadata(s.data_dir().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

#[test]
fn explicit_cluster_ips_are_checked() {
    let Some(s) = server(false) else { return };
    let svc = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"
        )
    };
    let taken = s
        .kubectl_stdin(&["create", "-f", "-"], &svc("dup", "10.96.0.10"))
        .failed();
    assert!(
        taken
            .stderr
            .contains("failed to allocate IP 10.96.0.10: provided IP is already allocated"),
        "{}",
        taken.stderr
    );
    let outside = s
        .kubectl_stdin(&["create", "-f", "-"], &svc("far", "192.168.1.1"))
        .failed();
    assert!(
        outside.stderr.contains("not in the valid range"),
        "{}",
        outside.stderr
    );
    s.kubectl_stdin(&["create", "-f", "-"], &svc("mine", "10.96.0.55"))
        .ok();
    s.kubectl_stdin(&["create", "-f", "-"], &svc("again", "10.96.0.55"))
        .failed();
    s.kubectl(&["delete", "svc", "mine"]).ok();
    s.kubectl_stdin(&["create", "-f", "-"], &svc("again", "10.96.0.55"))
        .ok();
    let headless = s
        .kubectl_stdin(&["create", "-f", "-"], &svc("headless", "None"))
        .ok();
    assert!(headless.stdout.contains("service/headless created"));
    let ip = s
        .kubectl(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .stdout;
    assert_eq!(ip, "None");
}
