//! The built-in default workload: what a container with neither `command` nor `args` runs
//! (there is no image to take an entrypoint from). It listens on every declared
//! `containerPort` and answers with the pod's name: HTTP requests get `200 OK` with the name
//! as the body, other TCP clients get the name and a newline, UDP datagrams get the name back.
//!
//! The agent starts it by re-executing its own binary (`std::env::current_exe()`) as
//! `<exe> default-workload --pod-name NAME [--port 8080/TCP]... [--bind IP]`; the `muster`
//! binary maps that hidden subcommand to [`default_workload_main`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The hidden subcommand of the `muster` binary that runs the default workload.
pub const DEFAULT_WORKLOAD_SUBCOMMAND: &str = "default-workload";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadArgs {
    pub pod_name: String,
    pub ports: Vec<(u16, Protocol)>,
    /// Address to listen on (the pod IP in the non-root fallback, where pods share the host
    /// network); all addresses otherwise.
    pub bind: Option<IpAddr>,
}

impl WorkloadArgs {
    /// The arguments after the executable (starting with the subcommand).
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = vec![
            DEFAULT_WORKLOAD_SUBCOMMAND.to_string(),
            "--pod-name".into(),
            self.pod_name.clone(),
        ];
        for (port, proto) in &self.ports {
            let p = match proto {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
            };
            argv.extend(["--port".to_string(), format!("{port}/{p}")]);
        }
        if let Some(ip) = self.bind {
            argv.extend(["--bind".to_string(), ip.to_string()]);
        }
        argv
    }

    /// Parses the arguments after the subcommand.
    pub fn parse(args: &[String]) -> Result<WorkloadArgs, String> {
        let mut pod_name = None;
        let mut ports = Vec::new();
        let mut bind = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--pod-name" => pod_name = Some(value()?.clone()),
                "--port" => {
                    let v = value()?;
                    let (num, proto) = v.split_once('/').unwrap_or((v.as_str(), "TCP"));
                    let port: u16 = num.parse().map_err(|_| format!("bad port {v:?}"))?;
                    let proto = match proto.to_ascii_uppercase().as_str() {
                        "TCP" => Protocol::Tcp,
                        "UDP" => Protocol::Udp,
                        _ => return Err(format!("unsupported protocol in {v:?}")),
                    };
                    ports.push((port, proto));
                }
                "--bind" => {
                    let v = value()?;
                    bind = Some(v.parse().map_err(|_| format!("bad address {v:?}"))?);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(WorkloadArgs {
            pod_name: pod_name.ok_or("--pod-name is required")?,
            ports,
            bind,
        })
    }
}

/// Runs the default workload until it is killed.
pub fn default_workload_main(args: &WorkloadArgs) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(serve(args.clone())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("default workload: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// Serves every port; returns only on a bind error.
pub async fn serve(args: WorkloadArgs) -> std::io::Result<()> {
    let ip = args.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut tasks = tokio::task::JoinSet::new();
    for (port, proto) in &args.ports {
        let addr = SocketAddr::new(ip, *port);
        let name = args.pod_name.clone();
        match proto {
            Protocol::Tcp => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("listen on {addr}/TCP: {e}"))
                })?;
                println!("{name}: listening on {addr}/TCP");
                tasks.spawn(async move {
                    loop {
                        let Ok((stream, peer)) = listener.accept().await else {
                            continue;
                        };
                        let name = name.clone();
                        tokio::spawn(answer_tcp(stream, peer, name));
                    }
                });
            }
            Protocol::Udp => {
                let socket = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("listen on {addr}/UDP: {e}"))
                })?;
                println!("{name}: listening on {addr}/UDP");
                tasks.spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let reply = format!("{name}\n");
                    loop {
                        if let Ok((_, peer)) = socket.recv_from(&mut buf).await {
                            let _ = socket.send_to(reply.as_bytes(), peer).await;
                        }
                    }
                });
            }
        }
    }
    if args.ports.is_empty() {
        println!("{}: no containerPorts declared, idling", args.pod_name);
    }
    // keep running even with no ports (a pod whose only job is to exist)
    std::future::pending::<()>().await;
    Ok(())
}

async fn answer_tcp(mut stream: tokio::net::TcpStream, peer: SocketAddr, name: String) {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    // HTTP clients speak first; plain TCP clients may not, so wait only briefly.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while got < buf.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got += n;
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let request = &buf[..got];
    let body = format!("{name}\n");
    let reply = match http_request_line(request) {
        Some(line) => {
            println!("{peer} \"{line}\" 200");
            let head_only = line.starts_with("HEAD ");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                if head_only { "" } else { &body }
            )
        }
        None => body,
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `GET / HTTP/1.1` when the bytes start like an HTTP request.
fn http_request_line(request: &[u8]) -> Option<String> {
    let line = request.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let method = line.split(' ').next()?;
    let known = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
    (known.contains(&method) && line.contains(" HTTP/")).then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trip() {
        let args = WorkloadArgs {
            pod_name: "web-0".into(),
            ports: vec![(8080, Protocol::Tcp), (53, Protocol::Udp)],
            bind: Some("127.244.0.5".parse().unwrap()),
        };
        let argv = args.to_argv();
        assert_eq!(argv[0], DEFAULT_WORKLOAD_SUBCOMMAND);
        assert_eq!(WorkloadArgs::parse(&argv[1..]).unwrap(), args);
        let bad = |v: &[&str], want: &str| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            let err = WorkloadArgs::parse(&v).unwrap_err();
            assert!(err.contains(want), "{err}");
        };
        bad(&[], "--pod-name is required");
        bad(&["--pod-name"], "needs a value");
        bad(&["--pod-name", "x", "--port", "99999"], "bad port");
        bad(
            &["--pod-name", "x", "--port", "80/SCTP"],
            "unsupported protocol",
        );
        bad(&["--what"], "unknown argument");
    }

    #[test]
    fn request_line_table() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Some("GET / HTTP/1.1")),
            (
                b"HEAD /healthz HTTP/1.0\r\n\r\n",
                Some("HEAD /healthz HTTP/1.0"),
            ),
            (b"hello\n", None),
            (b"", None),
            (b"GET nothing", None),
        ];
        for (input, want) in cases {
            assert_eq!(http_request_line(input).as_deref(), *want);
        }
    }

    #[tokio::test]
    async fn answers_http_and_tcp_with_the_pod_name() {
        // pick a free loopback port, then serve on it
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = WorkloadArgs {
            pod_name: "pod-a".into(),
            ports: vec![(port, Protocol::Tcp)],
            bind: Some("127.0.0.1".parse().unwrap()),
        };
        let server = tokio::spawn(serve(args));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut reply = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                    .await
                    .unwrap();
                s.read_to_string(&mut reply).await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\npod-a\n"), "{reply}");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut plain = String::new();
        s.read_to_string(&mut plain).await.unwrap();
        assert_eq!(plain, "pod-a\n");
        server.abort();
    }
}
