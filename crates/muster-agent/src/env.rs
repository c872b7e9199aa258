//! Container environment: `env`/`envFrom` with the Downward API, and Kubernetes' `$(VAR)`
//! expansion in env values, `command` and `args`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Expands `$(NAME)` references as Kubernetes does (third_party/forked/golang/expansion):
/// a defined name is replaced, an undefined one is left as written, `$$` is an escaped `$`,
/// and an unterminated `$(` is kept literally.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$x`: both characters kept as they are
                    let ch = rest.chars().next().expect("non-empty");
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// What the Downward API can read about a running pod, besides the pod object itself.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub node_name: Option<String>,
}

/// ConfigMap and Secret data a pod's env refers to, fetched by the caller.
pub trait EnvSources {
    fn config_map(&self, name: &str) -> Option<&HashMap<String, String>>;
    fn secret(&self, name: &str) -> Option<&HashMap<String, String>>;
}

#[derive(Debug, Default, Clone)]
pub struct StaticEnvSources {
    pub config_maps: HashMap<String, HashMap<String, String>>,
    pub secrets: HashMap<String, HashMap<String, String>>,
}

impl EnvSources for StaticEnvSources {
    fn config_map(&self, name: &str) -> Option<&HashMap<String, String>> {
        self.config_maps.get(name)
    }
    fn secret(&self, name: &str) -> Option<&HashMap<String, String>> {
        self.secrets.get(name)
    }
}

/// Names of the ConfigMaps and Secrets the container's env refers to.
pub fn referenced_sources(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        config_maps.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    for var in container.env.iter().flatten() {
        let Some(source) = &var.value_from else {
            continue;
        };
        config_maps.extend(source.config_map_key_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(source.secret_key_ref.as_ref().map(|r| r.name.clone()));
    }
    (config_maps, secrets)
}

/// Why a container's env cannot be built (kubelet: `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EnvError(pub String);

/// The container's environment, in order, with values expanded against earlier entries.
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    sources: &dyn EnvSources,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (data, kind, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                sources.config_map(&r.name),
                "configmap",
                &r.name,
                r.optional,
            )
        } else if let Some(r) = &from.secret_ref {
            (sources.secret(&r.name), "secret", &r.name, r.optional)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                let mut keys: Vec<_> = data.iter().collect();
                keys.sort();
                for (k, v) in keys {
                    set(&mut vars, format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional == Some(true) => {}
            None => return Err(EnvError(format!("{kind} \"{name}\" not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                Some(field_value(pod, namespace, facts, &field.field_path)?)
            } else if let Some(r) = &source.config_map_key_ref {
                key_value(
                    sources.config_map(&r.name),
                    "ConfigMap",
                    namespace,
                    &r.name,
                    &r.key,
                    r.optional,
                )?
            } else if let Some(r) = &source.secret_key_ref {
                key_value(
                    sources.secret(&r.name),
                    "Secret",
                    namespace,
                    &r.name,
                    &r.key,
                    r.optional,
                )?
            } else {
                return Err(EnvError(format!(
                    "env {}: resourceFieldRef is not supported by this node",
                    var.name
                )));
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            let snapshot = vars.clone();
            Some(expand(&raw, &|n| {
                snapshot
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            }))
        };
        if let Some(value) = value {
            set(&mut vars, var.name.clone(), value);
        }
    }
    Ok(vars)
}

fn key_value(
    data: Option<&HashMap<String, String>>,
    kind: &str,
    namespace: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, EnvError> {
    match data.map(|d| d.get(key)) {
        Some(Some(v)) => Ok(Some(v.clone())),
        _ if optional == Some(true) => Ok(None),
        Some(None) => Err(EnvError(format!(
            "couldn't find key {key} in {kind} {namespace}/{name}"
        ))),
        None => Err(EnvError(format!(
            "{} \"{name}\" not found",
            kind.to_lowercase()
        ))),
    }
}

fn field_value(
    pod: &Pod,
    namespace: &str,
    facts: &PodFacts,
    path: &str,
) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(namespace.to_string()),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .or_else(|| facts.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .or(Some("default".to_string())),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        other => {
            if let Some(key) = bracket_key(other, "metadata.labels") {
                meta.labels.as_ref().and_then(|l| l.get(key).cloned())
            } else if let Some(key) = bracket_key(other, "metadata.annotations") {
                meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
            } else {
                return Err(EnvError(format!("unsupported fieldRef {other:?}")));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

/// `metadata.labels['key']` -> `key`
fn bracket_key<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// `command` + `args` after expansion with the container's env. `None` when the container
/// gives neither (it runs the built-in default workload).
pub fn expanded_argv(container: &Container, env: &[(String, String)]) -> Option<Vec<String>> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    if command.is_empty() && args.is_empty() {
        return None;
    }
    // With no image there is no ENTRYPOINT: `args` alone are the command line.
    Some(
        command
            .iter()
            .chain(args.iter())
            .map(|a| expand(a, &lookup))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_table() {
        let vars: HashMap<&str, &str> = [("A", "alpha"), ("B", "beta"), ("EMPTY", "")].into();
        let check = |input: &str, want: &str| {
            let got = expand(input, &|n| vars.get(n).map(|v| v.to_string()));
            assert_eq!(got, want, "input {input:?}");
        };
        check("", "");
        check("plain", "plain");
        check("$(A)", "alpha");
        check("x$(A)y$(B)z", "xalphaybetaz");
        check("$(EMPTY)-", "-");
        check("$(MISSING)", "$(MISSING)");
        check("$$(A)", "$(A)");
        check("$$$(A)", "$alpha");
        check("$$", "$");
        check("$(A", "$(A");
        check("$A", "$A");
        check("trailing$", "trailing$");
        check("$(A)$(B)", "alphabeta");
        check("é$(A)ü", "éalphaü");
        check("$é", "$é");
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "prod", "uid": "u-1",
                          "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": []}
        }))
        .unwrap()
    }

    fn container(env: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "env": env})).unwrap()
    }

    #[test]
    fn env_table() {
        let facts = PodFacts {
            pod_ip: Some("10.244.0.9".into()),
            host_ip: Some("127.0.0.1".into()),
            node_name: None,
        };
        let mut sources = StaticEnvSources::default();
        sources
            .config_maps
            .insert("cm".into(), [("k".to_string(), "v".to_string())].into());
        let check = |env: serde_json::Value, want: Result<Vec<(&str, &str)>, &str>| {
            let got = resolve_env(&pod(), &container(env.clone()), &facts, &sources);
            let got = got.map(|v| v.into_iter().collect::<Vec<_>>());
            match want {
                Ok(w) => {
                    let w: Vec<(String, String)> = w
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect();
                    assert_eq!(got.unwrap(), w, "{env}");
                }
                Err(e) => assert_eq!(got.unwrap_err().0, e, "{env}"),
            }
        };
        let field = |p: &str| json!({"fieldRef": {"fieldPath": p}});
        check(
            json!([
                {"name": "POD", "valueFrom": field("metadata.name")},
                {"name": "NS", "valueFrom": field("metadata.namespace")},
                {"name": "IP", "valueFrom": field("status.podIP")},
                {"name": "HOST", "valueFrom": field("status.hostIP")},
                {"name": "NODE", "valueFrom": field("spec.nodeName")},
                {"name": "UID", "valueFrom": field("metadata.uid")},
                {"name": "SA", "valueFrom": field("spec.serviceAccountName")},
                {"name": "APP", "valueFrom": field("metadata.labels['app']")},
                {"name": "URL", "value": "http://$(IP):80/$(POD)/$(NOPE)"},
            ]),
            Ok(vec![
                ("POD", "web-1"),
                ("NS", "prod"),
                ("IP", "10.244.0.9"),
                ("HOST", "127.0.0.1"),
                ("NODE", "n1"),
                ("UID", "u-1"),
                ("SA", "sa"),
                ("APP", "web"),
                ("URL", "http://10.244.0.9:80/web-1/$(NOPE)"),
            ]),
        );
        check(
            json!([{"name": "A", "value": "1"}, {"name": "A", "value": "$(A)2"}]),
            Ok(vec![("A", "12")]),
        );
        check(
            json!([{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]),
            Ok(vec![("K", "v")]),
        );
        check(
            json!([{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "x"}}}]),
            Err("couldn't find key x in ConfigMap prod/cm"),
        );
        check(
            json!([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "x", "optional": true}}}]),
            Ok(vec![]),
        );
        check(
            json!([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "x"}}}]),
            Err("secret \"s\" not found"),
        );
        check(
            json!([{"name": "K", "valueFrom": field("spec.bogus")}]),
            Err("unsupported fieldRef \"spec.bogus\""),
        );
    }

    #[test]
    fn argv_table() {
        let env = vec![("MSG".to_string(), "hi".to_string())];
        let check = |c: serde_json::Value, want: Option<Vec<&str>>| {
            let c: Container = serde_json::from_value(c).unwrap();
            let got = expanded_argv(&c, &env);
            assert_eq!(got, want.map(|w| w.iter().map(|s| s.to_string()).collect()));
        };
        check(json!({"name": "c"}), None);
        check(
            json!({"name": "c", "command": ["echo", "$(MSG)"], "args": ["$$(MSG)"]}),
            Some(vec!["echo", "hi", "$(MSG)"]),
        );
        check(
            json!({"name": "c", "args": ["sleep", "1"]}),
            Some(vec!["sleep", "1"]),
        );
    }
}
