//! The running server over UDP and TCP: the query table through hickory-proto and `dig`,
//! truncation and the TCP retry, forwarding to a fake upstream on 127.0.0.1 (with TCP retry,
//! ExternalName chasing and loop detection), malformed input, readiness and the ops endpoint.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use muster_dns::{Dns, DnsConfig, Zone, ZoneSettings};
use serde_json::json;

fn config(upstreams: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams: Some(upstreams),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        udp_workers: 2,
        forward_timeout: Duration::from_millis(500),
        ..DnsConfig::default()
    }
}

fn udp(addr: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(query, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Sends all queries on one connection before reading (pipelined), then reads every answer.
fn tcp_many(addr: SocketAddr, queries: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    for q in queries {
        all.extend((q.len() as u16).to_be_bytes());
        all.extend(q);
    }
    s.write_all(&all).unwrap();
    queries
        .iter()
        .map(|_| {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).unwrap();
            buf
        })
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_table_over_udp_and_tcp() {
    let dns = Dns::start(&config(vec![]), common::zone()).await.unwrap();
    let addr = dns.servers.udp_addrs[0];
    assert_eq!(dns.servers.tcp_addrs[0], addr);
    let failures = blocking(move || {
        let cases = common::cases();
        let mut failures = Vec::new();
        let mut tcp_queries = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let q = common::query(case.name, case.qtype, 100 + i as u16, i % 2 == 0);
            match udp(addr, &q) {
                Some(r) => {
                    if let Err(e) = common::check(case, &q, &r) {
                        failures.push(format!("udp: {e}"));
                    }
                }
                None => failures.push(format!("udp: {} timed out", case.name)),
            }
            tcp_queries.push(q);
        }
        let replies = tcp_many(addr, &tcp_queries);
        for ((case, q), r) in cases.iter().zip(&tcp_queries).zip(&replies) {
            if let Err(e) = common::check(case, q, r) {
                failures.push(format!("tcp: {e}"));
            }
        }
        failures
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    dns.shutdown();
}

/// Turns `dig` output into the same `name ttl TYPE rdata` strings as `common::render`.
fn dig(
    addr: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Option<(String, Vec<String>)> {
    let out = Command::new("dig")
        .args([
            format!("@{}", addr.ip()).as_str(),
            "-p",
            &addr.port().to_string(),
            name,
            &qtype.to_string(),
            "+norecurse",
            "+time=2",
            "+tries=1",
            if tcp { "+tcp" } else { "+notcp" },
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split("status: ")
        .nth(1)?
        .split(',')
        .next()?
        .to_string();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() {
                break;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let mut data = f[4..].join(" ");
            if f[3] == "SOA" {
                let mut p: Vec<&str> = data.split(' ').collect();
                p[2] = "SERIAL";
                data = p.join(" ");
            }
            answers.push(format!(
                "{} {} {} {}",
                f[0],
                f[1],
                f[3],
                data.trim_matches('"')
            ));
        }
    }
    answers.sort();
    Some((status, answers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_table_with_dig() {
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!("dig is not installed: skipped (CI installs dnsutils)");
        return;
    }
    let dns = Dns::start(&config(vec![]), common::zone()).await.unwrap();
    let addr = dns.servers.udp_addrs[0];
    let failures = blocking(move || {
        let mut failures = Vec::new();
        for (i, case) in common::cases().iter().enumerate() {
            let tcp = i % 3 == 0;
            let Some((status, answers)) = dig(addr, case.name, case.qtype, tcp) else {
                failures.push(format!("dig {}: no output", case.name));
                continue;
            };
            let want_status = match case.rcode {
                ResponseCode::NoError => "NOERROR",
                ResponseCode::NXDomain => "NXDOMAIN",
                _ => "?",
            };
            let mut want: Vec<String> = case.answers.iter().map(|s| s.to_string()).collect();
            want.sort();
            if status != want_status || answers != want {
                failures.push(format!(
                    "dig {} {} (tcp {tcp}): {status} {answers:?}, want {want_status} {want:?}",
                    case.name, case.qtype
                ));
            }
        }
        failures
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    dns.shutdown();
}

/// A headless service with `n` ready endpoints.
fn big_zone(n: usize) -> Zone {
    let (mut namespaces, mut services, mut slices, pods) = common::objects();
    namespaces.push(common::namespace("big"));
    services.push(common::service("big", "hs", json!({"clusterIP": "None"})));
    let endpoints: Vec<_> = (0..n)
        .map(|i| json!({"addresses": [format!("10.245.{}.{}", i / 250, i % 250 + 1)]}))
        .collect();
    slices.push(common::slice(
        "big",
        "hs-1",
        "hs",
        json!({"endpoints": endpoints}),
    ));
    Zone::from_objects(
        ZoneSettings::default(),
        &namespaces,
        &services,
        &slices,
        &pods,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_fit_over_tcp() {
    let dns = Dns::start(&config(vec![]), big_zone(100)).await.unwrap();
    let addr = dns.servers.udp_addrs[0];
    blocking(move || {
        let name = "hs.big.svc.cluster.local.";
        // (EDNS, transport, want TC, want answers)
        let cases = [
            (false, false, true, 0),
            (true, false, false, 100),
            (false, true, false, 100),
        ];
        for (edns, tcp, want_tc, want_n) in cases {
            let q = common::query(name, RecordType::A, 7, edns);
            let r = if tcp {
                tcp_many(addr, &[q])[0].clone()
            } else {
                udp(addr, &q).unwrap()
            };
            let m = Message::from_vec(&r).unwrap();
            assert_eq!(m.metadata.truncation, want_tc, "edns {edns} tcp {tcp}");
            assert_eq!(m.answers.len(), want_n, "edns {edns} tcp {tcp}");
            assert!(
                r.len()
                    <= if tcp {
                        65535
                    } else if edns {
                        4096
                    } else {
                        512
                    }
            );
            assert_eq!(m.queries.len(), 1);
        }
    })
    .await;
    dns.shutdown();
}

/// A fake upstream on 127.0.0.1: `A 192.0.2.53` for any name; names starting with `big` get
/// TC over UDP and three records over TCP.
async fn fake_upstream() -> SocketAddr {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    fn reply(q: &[u8], tcp: bool) -> Vec<u8> {
        let m = Message::from_vec(q).unwrap();
        let name = m.queries[0].name().to_string();
        let qend = 12 + q[12..].iter().position(|&b| b == 0).unwrap() + 5;
        let mut r = q[..qend].to_vec();
        r[2] |= 0x80;
        r[3] = 0x80;
        r[10] = 0;
        r[11] = 0;
        let n: u8 = if name.starts_with("big") {
            if tcp { 3 } else { 0 }
        } else {
            1
        };
        if name.starts_with("big") && !tcp {
            r[2] |= 0x02;
        }
        r[7] = n;
        for i in 0..n {
            r.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 53 + i]);
        }
        r
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&reply(&buf[..n], false), from).await;
        }
    });
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut q = vec![0u8; len as usize];
                if s.read_exact(&mut q).await.is_err() {
                    return;
                }
                let r = reply(&q, true);
                let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                framed.extend(r);
                let _ = s.write_all(&framed).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_chases_and_retries_over_tcp() {
    let upstream = fake_upstream().await;
    let dns = Dns::start(&config(vec![upstream]), common::zone())
        .await
        .unwrap();
    let addr = dns.servers.udp_addrs[0];
    blocking(move || {
        // (name, type, answers as `TYPE rdata`)
        let cases: &[(&str, RecordType, &[&str])] = &[
            ("www.example.com.", RecordType::A, &["A 192.0.2.53"]),
            (
                "big.example.com.",
                RecordType::A,
                &["A 192.0.2.53", "A 192.0.2.54", "A 192.0.2.55"],
            ),
            (
                "ext.default.svc.cluster.local.",
                RecordType::A,
                &["CNAME www.example.com.", "A 192.0.2.53"],
            ),
            (
                "ext-chain.default.svc.cluster.local.",
                RecordType::A,
                &[
                    "CNAME ext.default.svc.cluster.local.",
                    "CNAME www.example.com.",
                    "A 192.0.2.53",
                ],
            ),
            // Reverse names we have no PTR for fall through to the upstream.
            ("9.9.9.10.in-addr.arpa.", RecordType::PTR, &["A 192.0.2.53"]),
        ];
        for &(name, qtype, want) in cases {
            for tcp in [false, true] {
                let q = common::query(name, qtype, 42, true);
                let r = if tcp {
                    tcp_many(addr, &[q])[0].clone()
                } else {
                    udp(addr, &q).unwrap()
                };
                let m = Message::from_vec(&r).unwrap();
                let got: Vec<String> = m
                    .answers
                    .iter()
                    .map(|a| format!("{} {}", a.record_type(), a.data))
                    .collect();
                assert_eq!(got, want, "{name} tcp {tcp}");
                assert_eq!(m.metadata.id, 42);
                assert!(
                    m.metadata.recursion_available,
                    "{name}: RA for a loopback client"
                );
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            }
        }
    })
    .await;
    assert!(
        dns.shared
            .metrics
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 8
    );
    dns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_loop_is_detected() {
    // The "upstream" relays every query back to the DNS server itself.
    let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let dns = Dns::start(&config(vec![relay_addr]), common::zone())
        .await
        .unwrap();
    let addr = dns.servers.udp_addrs[0];
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        let mut asker = None;
        while let Ok((n, from)) = relay.recv_from(&mut buf).await {
            if from == addr {
                if let Some(a) = asker {
                    let _ = relay.send_to(&buf[..n], a).await;
                }
            } else {
                asker = Some(from);
                let _ = relay.send_to(&buf[..n], addr).await;
            }
        }
    });
    let r = blocking(move || {
        udp(
            addr,
            &common::query("loop.example.", RecordType::A, 9, false),
        )
    })
    .await;
    let m = Message::from_vec(&r.expect("an answer, not a hang")).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        dns.shared
            .metrics
            .loops_detected
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    dns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_queries() {
    let dns = Dns::start(&config(vec![]), common::zone()).await.unwrap();
    let addr = dns.servers.udp_addrs[0];
    blocking(move || {
        // (packet, expected rcode or None for no reply)
        let mut notify = common::query("cluster.local.", RecordType::SOA, 5, false);
        notify[2] = (notify[2] & 0x87) | (4 << 3); // opcode NOTIFY
        let mut status = common::query("cluster.local.", RecordType::SOA, 5, false);
        status[2] = (status[2] & 0x87) | (2 << 3);
        let cases: Vec<(Vec<u8>, Option<ResponseCode>)> = vec![
            (vec![1, 2, 3], None),
            (
                vec![0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Some(ResponseCode::FormErr),
            ),
            (
                vec![0, 5, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a'],
                Some(ResponseCode::FormErr),
            ),
            (notify, Some(ResponseCode::NotImp)),
            (status, Some(ResponseCode::NotImp)),
            (
                common::query("cluster.local.", RecordType::AXFR, 5, false),
                Some(ResponseCode::Refused),
            ),
            (
                common::query("cluster.local.", RecordType::IXFR, 5, false),
                Some(ResponseCode::Refused),
            ),
        ];
        for (packet, want) in cases {
            let got =
                udp(addr, &packet).map(|r| Message::from_vec(&r).unwrap().metadata.response_code);
            assert_eq!(got, want, "{packet:?}");
        }
        // The server still answers after all that, and over TCP too.
        let q = common::query(
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            6,
            false,
        );
        assert_eq!(
            Message::from_vec(&udp(addr, &q).unwrap())
                .unwrap()
                .answers
                .len(),
            1
        );
        assert_eq!(
            Message::from_vec(&tcp_many(addr, &[q])[0])
                .unwrap()
                .answers
                .len(),
            1
        );
    })
    .await;
    dns.shutdown();
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_not_ready_until_synced_then_ops_endpoints() {
    let empty = Zone::empty(ZoneSettings::default()).unwrap();
    let dns = Dns::start(&config(vec![]), empty).await.unwrap();
    let addr = dns.servers.udp_addrs[0];
    let ops = dns.metrics_addr.unwrap();
    let before = blocking(move || {
        let q = common::query("nope.default.svc.cluster.local.", RecordType::A, 1, false);
        let m = Message::from_vec(&udp(addr, &q).unwrap()).unwrap();
        (
            m.metadata.response_code,
            http_get(ops, "/ready").0,
            http_get(ops, "/health"),
        )
    })
    .await;
    assert_eq!(before.0, ResponseCode::ServFail);
    assert_eq!(before.1, 503);
    assert_eq!(before.2, (200, "OK".to_string()));
    dns.set_zone(common::zone());
    blocking(move || {
        let q = common::query("nope.default.svc.cluster.local.", RecordType::A, 1, false);
        let m = Message::from_vec(&udp(addr, &q).unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(http_get(ops, "/ready").0, 200);
        let (status, metrics) = http_get(ops, "/metrics");
        assert_eq!(status, 200);
        assert!(
            metrics
                .contains(r#"muster_dns_requests_total{type="A",rcode="NXDOMAIN",proto="udp"} 1"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"rcode="SERVFAIL""#), "{metrics}");
        let (status, body) = http_get(ops, "/explain?name=empty.default.svc.cluster.local&type=A");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["rcode"], "NXDOMAIN");
        assert!(v["reason"].as_str().unwrap().contains("none ready"), "{v}");
        assert_eq!(v["slices"][0]["endpoints"][0]["answered"], false);
        let (_, body) = http_get(ops, "/explain?name=web.default.svc.cluster.local");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["answers"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["service"]["readyEndpoints"], 3);
        assert_eq!(http_get(ops, "/explain").0, 400);
    })
    .await;
    dns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed() {
    let config = DnsConfig {
        tcp_idle_timeout: Duration::from_millis(300),
        ..config(vec![])
    };
    let dns = Dns::start(&config, common::zone()).await.unwrap();
    let addr = dns.servers.tcp_addrs[0];
    blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Half a length prefix, then silence: the server must give up, not wait forever.
        s.write_all(&[0]).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "expected the server to close"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    })
    .await;
    dns.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_every_listener() {
    let dns = Dns::start(&config(vec![]), common::zone()).await.unwrap();
    let (udp_addr, ops) = (dns.servers.udp_addrs[0], dns.metrics_addr.unwrap());
    drop(dns);
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocking(move || {
        let q = common::query(
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            1,
            false,
        );
        assert!(udp(udp_addr, &q).is_none(), "UDP still answers");
        assert!(TcpStream::connect(udp_addr).is_err(), "TCP still accepts");
        assert!(
            TcpStream::connect(ops).is_err(),
            "the ops endpoint still accepts"
        );
    })
    .await;
}
