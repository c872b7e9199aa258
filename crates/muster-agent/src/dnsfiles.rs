//! The pod's own `/etc/resolv.conf`, `/etc/hosts` and host name, rendered as a kubelet does.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// The parts of the host's resolv.conf that `dnsPolicy: Default` (and host search paths) use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl HostDns {
    /// Parses resolv.conf text (`nameserver`, `search`/`domain`, `options`; comments ignored).
    pub fn parse(text: &str) -> HostDns {
        let mut dns = HostDns::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
                // the last search/domain line wins, as in the resolver
                Some("search") | Some("domain") => {
                    dns.searches = words.map(str::to_string).collect()
                }
                Some("options") => dns.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        dns
    }

    pub fn from_host() -> HostDns {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| HostDns::parse(&t))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub nameserver: IpAddr,
    pub domain: String,
}

/// Kubernetes' limits (pkg/apis/core/validation): at most 3 nameservers, 32 search paths.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// Renders the pod's resolv.conf for its `dnsPolicy` and `dnsConfig`.
pub fn render_resolv_conf(pod: &Pod, cluster: &ClusterDns, host: &HostDns) -> String {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    // ClusterFirst on the host network falls back to Default, as kubelet does.
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let (mut nameservers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        if cluster_first {
            let d = &cluster.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{d}"),
                format!("svc.{d}"),
                d.to_string(),
            ];
            searches.extend(host.searches.iter().cloned());
            (
                vec![cluster.nameserver.to_string()],
                searches,
                vec!["ndots:5".to_string()],
            )
        } else if policy == "None" {
            (vec![], vec![], vec![])
        } else {
            (
                host.nameservers.clone(),
                host.searches.clone(),
                host.options.clone(),
            )
        };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        nameservers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let rendered = match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            // dnsConfig options replace same-named ones
            options.retain(|o| o.split(':').next() != Some(name));
            options.push(rendered);
        }
    }
    dedup(&mut nameservers);
    dedup(&mut searches);
    nameservers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);

    let mut out = String::new();
    for ns in &nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// The pod's host name: `spec.hostname`, else its name, cut to 63 characters (without a
/// trailing `-` or `.`), as kubelet does.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

/// `<hostname>.<subdomain>.<namespace>.svc.<domain>` when the pod has a subdomain.
pub fn pod_fqdn(pod: &Pod, domain: &str) -> Option<String> {
    let subdomain = pod
        .spec
        .as_ref()?
        .subdomain
        .as_deref()
        .filter(|s| !s.is_empty())?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!(
        "{}.{subdomain}.{namespace}.svc.{domain}",
        pod_hostname(pod)
    ))
}

/// Renders the pod's /etc/hosts: loopback lines, the pod IP with its names, then hostAliases.
pub fn render_hosts(pod: &Pod, pod_ip: Option<IpAddr>, domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let hostname = pod_hostname(pod);
    if let Some(ip) = pod_ip {
        match pod_fqdn(pod, domain) {
            Some(fqdn) => out.push_str(&format!("{ip}\t{fqdn}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default();
            if names.is_empty() {
                continue;
            }
            out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameserver: "10.96.0.10".parse().unwrap(),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn resolv_conf_table() {
        let host = HostDns::parse(
            "# host\nnameserver 192.0.2.53\nnameserver 192.0.2.54 ; x\nsearch corp.example\noptions edns0 ndots:1\n",
        );
        let check = |spec: serde_json::Value, want: &str| {
            let p = pod(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec}));
            assert_eq!(
                render_resolv_conf(&p, &cluster(), &host),
                want,
                "spec {spec}"
            );
        };
        check(
            json!({"containers": []}),
            "nameserver 10.96.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n",
        );
        check(
            json!({"containers": [], "dnsPolicy": "ClusterFirst", "hostNetwork": true}),
            "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0 ndots:1\n",
        );
        check(
            json!({"containers": [], "dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": true}),
            "nameserver 10.96.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n",
        );
        check(
            json!({"containers": [], "dnsPolicy": "Default"}),
            "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0 ndots:1\n",
        );
        check(
            json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 edns0\n",
        );
        check(
            json!({"containers": [], "dnsConfig": {
                "nameservers": ["10.96.0.10", "1.1.1.1", "2.2.2.2", "3.3.3.3"],
                "searches": ["svc.cluster.local", "extra.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "2"}]}}),
            "nameserver 10.96.0.10\nnameserver 1.1.1.1\nnameserver 2.2.2.2\n\
             search team.svc.cluster.local svc.cluster.local cluster.local corp.example extra.example\n\
             options ndots:1 timeout:2\n",
        );
        check(json!({"containers": [], "dnsPolicy": "None"}), "");
    }

    #[test]
    fn hosts_table() {
        let ip: Option<IpAddr> = Some("10.244.0.7".parse().unwrap());
        let check = |meta: serde_json::Value, spec: serde_json::Value, tail: &str| {
            let p = pod(json!({"metadata": meta, "spec": spec}));
            let text = render_hosts(&p, ip, "cluster.local");
            assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
            let after = text.split("ip6-allrouters\n").nth(1).unwrap();
            assert_eq!(after, tail, "{meta} {spec}");
        };
        check(
            json!({"name": "web-0", "namespace": "default"}),
            json!({"containers": []}),
            "10.244.0.7\tweb-0\n",
        );
        check(
            json!({"name": "web-0", "namespace": "default"}),
            json!({"containers": [], "subdomain": "web"}),
            "10.244.0.7\tweb-0.web.default.svc.cluster.local\tweb-0\n",
        );
        check(
            json!({"name": "x", "namespace": "ns1"}),
            json!({"containers": [], "hostname": "db", "subdomain": "store",
                   "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
                                   {"ip": "10.1.2.3", "hostnames": []}]}),
            "10.244.0.7\tdb.store.ns1.svc.cluster.local\tdb\n\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n",
        );
    }

    #[test]
    fn hostname_rules() {
        let check = |meta: serde_json::Value, spec: serde_json::Value, want: &str| {
            let p = pod(json!({"metadata": meta, "spec": spec}));
            assert_eq!(pod_hostname(&p), want);
        };
        check(json!({"name": "a"}), json!({"containers": []}), "a");
        check(
            json!({"name": "a"}),
            json!({"containers": [], "hostname": "h"}),
            "h",
        );
        let long = format!("{}-{}", "x".repeat(62), "y");
        check(
            json!({"name": long}),
            json!({"containers": []}),
            &"x".repeat(62),
        );
    }
}
