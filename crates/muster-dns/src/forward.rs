//! Forwarding names outside the cluster data to upstream resolvers, and resolving ExternalName
//! CNAME chains that leave the cluster zone. This is the slow path: it runs on tokio and may
//! allocate.
//!
//! - Upstreams are tried in order; each gets `timeout` for a UDP answer, then a TCP retry when
//!   the UDP answer is truncated.
//! - Loop detection: every query we send carries a fresh random ID, remembered with its name and
//!   type until the answer arrives. A query that arrives with an (ID, name, type) we are waiting
//!   for is our own query come back (the upstream forwards to us): it gets SERVFAIL and is counted.
//! - Only clients allowed recursion reach this module (see `ClientInfo::recursion`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::metrics::Metrics;
use crate::query::{ClientInfo, Outcome, answer};
use crate::wire::{self, MAX_NAME, rcode};
use crate::zone::Zone;

/// Reads the nameservers of a resolv.conf; entries that are not IPs are skipped.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

type InflightKey = (u16, Vec<u8>, u16);

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    inflight: Mutex<HashSet<InflightKey>>,
    metrics: Arc<Metrics>,
}

/// Removes an in-flight entry when the forward finishes, however it finishes.
struct InflightGuard<'a>(&'a Forwarder, Option<InflightKey>);
impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.1.take() {
            self.0.inflight.lock().remove(&k);
        }
    }
}

fn question_key(packet: &[u8]) -> Option<InflightKey> {
    let q = wire::parse_query(packet).ok()?;
    let mut buf = [0u8; MAX_NAME];
    Some((
        q.id,
        wire::lowercase_name(q.qname, &mut buf).to_vec(),
        q.qtype,
    ))
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Forwarder {
            upstreams,
            timeout,
            inflight: Mutex::new(HashSet::new()),
            metrics,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn has_upstreams(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// Whether this incoming query is one of ours that came back.
    pub fn is_loop(&self, packet: &[u8]) -> bool {
        question_key(packet).is_some_and(|k| self.inflight.lock().contains(&k))
    }

    /// Sends `query` upstream and returns the raw answer with the client's ID.
    pub async fn exchange(&self, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < wire::HEADER_LEN {
            return None;
        }
        let client_id = [query[0], query[1]];
        let mut ours = query.to_vec();
        let id: u16 = rand::random();
        ours[..2].copy_from_slice(&id.to_be_bytes());
        let key = question_key(&ours)?;
        self.inflight.lock().insert(key.clone());
        let _guard = InflightGuard(self, Some(key));
        for upstream in &self.upstreams {
            let got = tokio::time::timeout(self.timeout, self.udp(upstream, &ours)).await;
            let mut reply = match got {
                Ok(Ok(r)) => r,
                _ => continue,
            };
            if reply.len() > 2 && reply[2] & 0x02 != 0 {
                // Truncated: the same upstream over TCP.
                match tokio::time::timeout(self.timeout, Self::tcp(upstream, &ours)).await {
                    Ok(Ok(r)) => reply = r,
                    _ => continue,
                }
            }
            if reply.len() < wire::HEADER_LEN {
                continue;
            }
            reply[..2].copy_from_slice(&client_id);
            self.metrics.forwarded.fetch_add(1, Relaxed);
            return Some(reply);
        }
        self.metrics.forward_failures.fetch_add(1, Relaxed);
        None
    }

    async fn udp(&self, upstream: &SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let bind: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(upstream).await?;
        sock.send(query).await?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = sock.recv(&mut buf).await?;
            // Only the answer to this question counts (the ID and question must match).
            if n >= wire::HEADER_LEN && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn tcp(upstream: &SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(upstream).await?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        s.write_all(&framed).await?;
        let len = s.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }
}

/// Resolves a query the engine could not answer alone (Forward or Chase) into `out`.
/// Returns the response length, or 0 when there is nothing to send.
pub async fn resolve_slow(
    zone: &Zone,
    forwarder: &Forwarder,
    packet: &[u8],
    client: &ClientInfo,
    outcome: Outcome,
    out: &mut [u8],
) -> (usize, u8) {
    let limit = if client.tcp {
        65535
    } else {
        wire::parse_query(packet).map_or(wire::PLAIN_UDP, |q| q.udp_limit())
    };
    match outcome {
        Outcome::Forward { .. } => {
            if forwarder.is_loop(packet) {
                forwarder.metrics.loops_detected.fetch_add(1, Relaxed);
                tracing::error!("forwarding loop detected: a query we sent upstream came back");
                return servfail(packet, client, out);
            }
            if !forwarder.has_upstreams() {
                return servfail(packet, client, out);
            }
            match forwarder.exchange(packet).await {
                Some(reply) => fit(packet, &reply, limit, client, out),
                None => servfail(packet, client, out),
            }
        }
        Outcome::Chase {
            len,
            qtype,
            target_at,
        } => {
            chase(
                zone, forwarder, packet, client, out, len, qtype, target_at, limit,
            )
            .await
        }
        Outcome::Reply { len, rcode, .. } => (len, rcode),
        Outcome::Drop => (0, 0),
    }
}

fn servfail(packet: &[u8], client: &ClientInfo, out: &mut [u8]) -> (usize, u8) {
    (
        crate::query::reply_with_rcode(packet, rcode::SERVFAIL, client, out),
        rcode::SERVFAIL,
    )
}

/// Copies an upstream reply to `out`, or a TC reply when it exceeds the client's size.
fn fit(
    packet: &[u8],
    reply: &[u8],
    limit: usize,
    client: &ClientInfo,
    out: &mut [u8],
) -> (usize, u8) {
    let rc = reply[3] & 0x0f;
    if reply.len() <= limit && reply.len() <= out.len() {
        out[..reply.len()].copy_from_slice(reply);
        return (reply.len(), rc);
    }
    let n = crate::query::reply_with_rcode(packet, rc, client, out);
    if n >= 4 {
        wire::add_flags(out, wire::FLAG_TC);
    }
    (n, rc)
}

/// Appends the records an upstream (or this zone) gives for the CNAME target to the answer.
#[allow(clippy::too_many_arguments)]
async fn chase(
    zone: &Zone,
    forwarder: &Forwarder,
    packet: &[u8],
    client: &ClientInfo,
    out: &mut [u8],
    len: usize,
    qtype: u16,
    target_at: usize,
    limit: usize,
) -> (usize, u8) {
    let mut target = Vec::new();
    if wire::read_name(&out[..len], target_at, &mut target).is_none() {
        return (len, rcode::NOERROR);
    }
    // The query for the target: a fresh header, the target name, the same type, EDNS 4096.
    let mut q = vec![0u8, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(&target);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    let mut local = vec![0u8; 65535];
    let inner = ClientInfo {
        tcp: true,
        recursion: client.recursion,
    };
    let reply: Option<Vec<u8>> = match answer(zone, &q, &inner, &mut local) {
        // The engine follows chains inside the cluster zone itself, so the target here is
        // outside it: a reverse name we answer, or one for the upstream.
        Outcome::Reply { len, .. } | Outcome::Chase { len, .. } => Some(local[..len].to_vec()),
        Outcome::Forward { .. } if client.recursion && forwarder.has_upstreams() => {
            forwarder.exchange(&q).await
        }
        _ => None,
    };
    match reply {
        Some(reply) => splice_target_answers(packet, client, out, len, &reply, limit),
        None => (len, rcode::NOERROR),
    }
}

/// Puts the answer records of `reply` (the answer for the last CNAME target, from an upstream,
/// so untrusted) after the CNAMEs of our response `out[..len]` (to the query `packet`), before
/// its OPT record. Records of `reply` are copied up to the first malformed one. When the result
/// exceeds `limit`, the response becomes an empty TC reply. Returns the new length and rcode.
pub fn splice_target_answers(
    packet: &[u8],
    client: &ClientInfo,
    out: &mut [u8],
    len: usize,
    reply: &[u8],
    limit: usize,
) -> (usize, u8) {
    let edns = wire::parse_query(packet)
        .ok()
        .and_then(|q| q.edns)
        .is_some();
    let answer_end = if edns {
        len.saturating_sub(wire::OPT_LEN)
    } else {
        len
    };
    if len > out.len() || answer_end < wire::HEADER_LEN {
        return (len.min(out.len()), rcode::NOERROR);
    }
    let mut records = Vec::new();
    let count = copy_answers(reply, &mut records);
    let rc = reply.get(3).map_or(0, |b| b & 0x0f);
    let total = len + records.len();
    if total > limit.min(out.len()) {
        let n = crate::query::reply_with_rcode(packet, rcode::NOERROR, client, out);
        if n >= wire::HEADER_LEN {
            wire::add_flags(out, wire::FLAG_TC | wire::FLAG_AA);
        }
        return (n, rcode::NOERROR);
    }
    // Insert the records between the CNAMEs and the OPT record.
    out.copy_within(answer_end..len, answer_end + records.len());
    out[answer_end..answer_end + records.len()].copy_from_slice(&records);
    let an = u16::from_be_bytes([out[6], out[7]]).saturating_add(count);
    wire::set_count(out, wire::ANCOUNT_AT, an);
    // The rcode describes the last name of the chain (RFC 6604).
    let rc = if rc == rcode::NXDOMAIN {
        rcode::NXDOMAIN
    } else {
        rcode::NOERROR
    };
    wire::set_rcode(out, rc);
    (total, rc)
}

/// Re-encodes the answer records of `msg` without compression (their pointers refer to `msg`)
/// and returns how many it copied: all of them, or those before the first malformed one.
fn copy_answers(msg: &[u8], into: &mut Vec<u8>) -> u16 {
    let Some(mut pos) = wire::parse_query_like_response(msg) else {
        return 0;
    };
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    let mut n = 0;
    for _ in 0..ancount {
        match copy_record(msg, pos) {
            Some((rr, next)) => {
                into.extend_from_slice(&rr);
                pos = next;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// One resource record at `pos` of `msg`, uncompressed, and the offset after it.
fn copy_record(msg: &[u8], pos: usize) -> Option<(Vec<u8>, usize)> {
    let mut rr = Vec::new();
    let pos = wire::read_name(msg, pos, &mut rr)?;
    let fixed = msg.get(pos..pos + 10)?;
    let rrtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    rr.extend_from_slice(&fixed[..8]);
    let rdata_start = pos + 10;
    let rdata_end = rdata_start + rdlen;
    let rdata = msg.get(rdata_start..rdata_end)?;
    let mut data = Vec::new();
    // Types whose rdata holds names: expand them so no pointer survives the copy.
    let name_at = match rrtype {
        wire::rtype::CNAME | wire::rtype::NS | wire::rtype::PTR => Some(0),
        wire::rtype::MX => Some(2),
        wire::rtype::SRV => Some(6),
        _ => None,
    };
    match name_at {
        Some(skip) => {
            data.extend_from_slice(rdata.get(..skip)?);
            // A name in rdata may point back into the message, but must end with the rdata.
            let end = wire::read_name(msg, rdata_start + skip, &mut data)?;
            (end == rdata_end).then_some(())?;
        }
        None if rrtype == wire::rtype::SOA => {
            let p = wire::read_name(msg, rdata_start, &mut data)?;
            let p = wire::read_name(msg, p, &mut data)?;
            (p + 20 == rdata_end).then_some(())?;
            data.extend_from_slice(msg.get(p..p + 20)?);
        }
        None => data.extend_from_slice(rdata),
    }
    rr.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
    rr.extend_from_slice(&data);
    Some((rr, rdata_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolv_conf() {
        let text = "# comment\nnameserver 127.0.0.53\nsearch x\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    /// An upstream reply for www.example.com: header (rcode, ancount), the question, then
    /// `records` as given (owner names may point at the question, offset 12).
    fn upstream_reply(rcode: u8, ancount: u16, records: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 0, 0x81, 0x80 | rcode, 0, 1];
        m.extend(ancount.to_be_bytes());
        m.extend([0, 0, 0, 0]);
        m.extend(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        m.extend(records);
        m
    }

    /// An A record owned by a pointer to the question's name.
    fn a_record(ip: [u8; 4]) -> Vec<u8> {
        let mut r = vec![0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4];
        r.extend(ip);
        r
    }

    #[test]
    fn upstream_answers_are_spliced_after_the_cname_up_to_the_first_bad_record() {
        use hickory_proto::op::{Message, ResponseCode};
        use serde_json::json;
        let ns = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        let svc =
            serde_json::from_value(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "www.example.com"}}))
            .unwrap();
        let zone = Zone::from_objects(Default::default(), &[ns], &[svc], &[], &[]).unwrap();
        let mut query = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        query.extend(b"\x03ext\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01");
        query.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        let client = ClientInfo {
            tcp: false,
            recursion: true,
        };
        let two = [a_record([192, 0, 2, 1]), a_record([192, 0, 2, 2])].concat();
        let mut cut = two.clone();
        cut.truncate(two.len() - 2);
        let mut bad_pointer = a_record([192, 0, 2, 1]);
        bad_pointer.extend([0xc0, 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        let mut looped = a_record([192, 0, 2, 1]);
        let at = 12 + 21 + looped.len();
        looped.extend([0xc0, at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        let many: Vec<u8> = (0..100).flat_map(|i| a_record([192, 0, 2, i])).collect();
        // (what, upstream reply, answers after the CNAME, rcode, truncated)
        let cases: Vec<(&str, Vec<u8>, usize, ResponseCode, bool)> = vec![
            (
                "two records",
                upstream_reply(0, 2, &two),
                2,
                ResponseCode::NoError,
                false,
            ),
            (
                "second cut short",
                upstream_reply(0, 2, &cut),
                1,
                ResponseCode::NoError,
                false,
            ),
            (
                "pointer past the end",
                upstream_reply(0, 2, &bad_pointer),
                1,
                ResponseCode::NoError,
                false,
            ),
            (
                "pointer loop",
                upstream_reply(0, 2, &looped),
                1,
                ResponseCode::NoError,
                false,
            ),
            (
                "count larger than the records",
                upstream_reply(0, 9, &two),
                2,
                ResponseCode::NoError,
                false,
            ),
            (
                "NXDOMAIN",
                upstream_reply(3, 0, &[]),
                0,
                ResponseCode::NXDomain,
                false,
            ),
            (
                "shorter than a header",
                vec![0, 0, 0x81],
                0,
                ResponseCode::NoError,
                false,
            ),
            ("empty", Vec::new(), 0, ResponseCode::NoError, false),
            (
                "over the client's 1232 bytes",
                upstream_reply(0, 100, &many),
                0,
                ResponseCode::NoError,
                true,
            ),
        ];
        for (what, reply, extra, rcode, tc) in cases {
            let mut out = vec![0u8; 65535];
            let Outcome::Chase { len, .. } = answer(&zone, &query, &client, &mut out) else {
                panic!("ext should be chased");
            };
            let (n, _) = splice_target_answers(&query, &client, &mut out, len, &reply, 1232);
            let msg = Message::from_vec(&out[..n]).unwrap_or_else(|e| panic!("{what}: {e}"));
            let want = if tc { 0 } else { 1 + extra };
            assert_eq!(msg.answers.len(), want, "{what}");
            assert_eq!(msg.metadata.response_code, rcode, "{what}");
            assert_eq!(msg.metadata.truncation, tc, "{what}");
            assert!(msg.edns.is_some(), "{what}: OPT kept");
        }
    }
}
