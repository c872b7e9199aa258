//! A loopback etcd cluster owned by one test, made of real etcd processes (the Debian
//! `etcd-server` package) on free 127.0.0.1 ports, and throwaway TLS files for it.
//!
//! Shared by the store's etcd tests and, through `#[path]`, by the `muster` binary's
//! multi-node tests, so that both start and kill members the same way.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    name: String,
    client_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

pub struct Etcd {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Finds etcd, installing the Debian package once if we are root and it is missing.
pub fn etcd_binary() -> Option<&'static str> {
    static FOUND: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let path = "/usr/bin/etcd";
        if Path::new(path).exists() {
            return Some(path);
        }
        let root = Command::new("id").arg("-u").output().ok().map(|o| o.stdout);
        if root.as_deref() == Some(b"0\n".as_slice()) {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "etcd-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
        }
        Path::new(path).exists().then_some(path)
    })
}

impl Etcd {
    /// Starts `size` members and waits until each is healthy. `None` (with the reason printed)
    /// only when etcd is not installed and cannot be.
    pub fn start(size: usize) -> Option<Etcd> {
        Etcd::start_with(size, None)
    }

    /// Like [`Etcd::start`]; with `tls`, clients must connect over HTTPS with a certificate
    /// signed by the CA in it.
    pub fn start_with(size: usize, tls: Option<&TlsFiles>) -> Option<Etcd> {
        let Some(binary) = etcd_binary() else {
            eprintln!("SKIP: /usr/bin/etcd is missing and could not be installed (etcd-server)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = dir.path().join(&name);
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "muster-test",
                // Progress events for idle watches, quickly enough for a test.
                "--experimental-watch-progress-notify-interval",
                "100ms",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut args = args;
            if let Some(tls) = tls {
                for (flag, path) in [
                    ("--cert-file", &tls.server_cert),
                    ("--key-file", &tls.server_key),
                    ("--trusted-ca-file", &tls.ca),
                ] {
                    args.push(flag.into());
                    args.push(path.to_str().unwrap().into());
                }
                args.push("--client-cert-auth".into());
            }
            let mut member = Member {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_url,
                args,
                child: None,
            };
            member.spawn(binary);
            members.push(member);
        }
        let etcd = Etcd { members, _dir: dir };
        for i in 0..size {
            etcd.wait_healthy(i);
        }
        Some(etcd)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn wait_healthy(&self, index: usize) {
        let member = &self.members[index];
        let tls = member.client_url.starts_with("https://");
        let address = member
            .client_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Over TLS a listening port is enough; the test's connect retries until ready.
            if (tls && TcpStream::connect(&address).is_ok()) || (!tls && health(&address)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&member.log).unwrap_or_default();
        panic!(
            "etcd member {} not healthy in 20 s; log:\n{log}",
            member.name
        );
    }

    /// SIGKILLs one member (by the PID we started).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member with its data directory.
    pub fn restart(&mut self, index: usize) {
        let binary = etcd_binary().expect("etcd ran before");
        self.members[index].spawn(binary);
        self.wait_healthy(index);
    }

    pub fn pause(&self, index: usize, stop: bool) {
        let pid = self.members[index].child.as_ref().expect("running").id();
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Member {
    fn spawn(&mut self, binary: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log file");
        let child = Command::new(binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // A paused member must be continued to die cleanly; SIGKILL works either way.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// etcd's /health over plain HTTP/1.0 on loopback.
pub fn health(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains(r#""health":"true""#)
}

/// PEM files of a throwaway CA, an etcd serving certificate for 127.0.0.1 and a client
/// certificate, all made with rcgen.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here, to check that etcd's certificate is verified.
    pub other_ca: PathBuf,
}

pub fn make_tls_files(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.clone().self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("muster-test-etcd-ca");
    let (other_ca_pem, _) = ca("unrelated-ca");
    let leaf = |usage: ExtendedKeyUsagePurpose, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth, "localhost");
    let (client_pem, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth, "muster");
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    TlsFiles {
        ca: write("ca.crt", &ca_pem),
        server_cert: write("server.crt", &server_pem),
        server_key: write("server.key", &server_key),
        client_cert: write("client.crt", &client_pem),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.crt", &other_ca_pem),
    }
}
