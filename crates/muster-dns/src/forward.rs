//! Forwarding names outside the cluster data to upstream resolvers, and chasing ExternalName
//! CNAMEs. This is the slow path: it runs on tokio and may allocate.
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
    let edns = wire::parse_query(packet)
        .ok()
        .and_then(|q| q.edns)
        .is_some();
    let answer_end = if edns { len - wire::OPT_LEN } else { len };
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
        Outcome::Reply { len, .. } => Some(local[..len].to_vec()),
        // One level only: a CNAME to a CNAME in the cluster zone is not chased further.
        Outcome::Chase { len, .. } => Some(local[..len].to_vec()),
        Outcome::Forward { .. } if client.recursion && forwarder.has_upstreams() => {
            forwarder.exchange(&q).await
        }
        _ => None,
    };
    let Some(reply) = reply else {
        return (len, rcode::NOERROR);
    };
    let mut records = Vec::new();
    let count = copy_answers(&reply, &mut records).unwrap_or(0);
    let rc = reply.get(3).map_or(0, |b| b & 0x0f);
    let total = len + records.len();
    if total > limit.min(out.len()) {
        let n = crate::query::reply_with_rcode(packet, rcode::NOERROR, client, out);
        wire::add_flags(out, wire::FLAG_TC | wire::FLAG_AA);
        return (n, rcode::NOERROR);
    }
    // Insert the records between the CNAME and the OPT record.
    out.copy_within(answer_end..len, answer_end + records.len());
    out[answer_end..answer_end + records.len()].copy_from_slice(&records);
    let an = u16::from_be_bytes([out[6], out[7]]) + count;
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

/// Re-encodes the answer records of `msg` without compression (their pointers refer to `msg`).
fn copy_answers(msg: &[u8], into: &mut Vec<u8>) -> Option<u16> {
    let q = wire::parse_query_like_response(msg)?;
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = q;
    let mut n = 0;
    for _ in 0..ancount {
        let mut rr = Vec::new();
        pos = wire::read_name(msg, pos, &mut rr)?;
        let fixed = msg.get(pos..pos + 10)?;
        let rrtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        rr.extend_from_slice(&fixed[..8]);
        let rdata_start = pos + 10;
        let rdata = msg.get(rdata_start..rdata_start + rdlen)?;
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
                wire::read_name(msg, rdata_start + skip, &mut data)?;
            }
            None if rrtype == wire::rtype::SOA => {
                let p = wire::read_name(msg, rdata_start, &mut data)?;
                let p = wire::read_name(msg, p, &mut data)?;
                data.extend_from_slice(msg.get(p..p + 20)?);
            }
            None => data.extend_from_slice(rdata),
        }
        rr.extend_from_slice(&(data.len() as u16).to_be_bytes());
        rr.extend_from_slice(&data);
        into.extend_from_slice(&rr);
        pos = rdata_start + rdlen;
        n += 1;
    }
    Some(n)
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
}
