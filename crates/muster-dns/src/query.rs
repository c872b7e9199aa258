//! The query engine: one packet in, one response out, from a [`Zone`] snapshot.
//!
//! [`answer`] takes no lock and allocates nothing: it parses the packet in place, looks the name
//! up in the snapshot's hash maps with a lower-cased copy on the stack, and writes records
//! straight into the caller's buffer. Owner names are compression pointers to the question, so
//! the answer keeps the question's case (spec: comparisons are case-insensitive).
//!
//! Decisions (RFC vs CoreDNS), each made here:
//! - Empty non-terminals answer NODATA (RFC 8020), e.g. `svc.<zone>`, `<ns>.svc.<zone>`,
//!   `dns.<zone>`, `_tcp.<svc>.<ns>.svc.<zone>` when a `_<port>._tcp` name exists below it.
//!   CoreDNS gives NXDOMAIN for the last one; we follow the RFC.
//! - NXDOMAIN and NODATA carry the zone's SOA in authority (RFC 2308), MINIMUM = the TTL.
//!   An SOA query on a non-apex name follows the RFC (NXDOMAIN if the name does not exist),
//!   where CoreDNS always says NODATA.
//! - A headless service with no ready endpoint is NXDOMAIN (spec §2.4.1), names under it too.
//! - SRV labels need their underscores (`_http._tcp`); CoreDNS also accepts them bare.
//! - SRV priority 0, weight floor(100/n) (CoreDNS); headless port numbers come from the slice.
//!   The bare service name answers SRV for every port, as in CoreDNS.
//! - ANY is answered with the address records a name has (RFC 8482 allows a subset), else NODATA.
//! - Per-endpoint names exist for ClusterIP services too, and endpoints of every service get
//!   PTRs (CoreDNS behaviour users rely on); a ClusterIP's PTR wins over endpoint PTRs.
//! - `dns-version.<zone>` TXT "1.1.0" has TTL 28800, as in the spec's example.
//! - Reverse names (`in-addr.arpa`, `ip6.arpa`) we have no PTR for fall through to forwarding
//!   (kubeadm's `fallthrough in-addr.arpa ip6.arpa`).
//! - Before the first full sync every cluster name answers SERVFAIL, never NXDOMAIN.
//! - ExternalName: a CNAME, whatever the type asked (RFC 1034: a CNAME owner has no other data).
//!   A target inside the cluster zone is followed here, CNAME by CNAME, and its records follow
//!   with the target as owner (CoreDNS does the same); a target outside goes to the upstream.
//!   Unlike CoreDNS (which then answers NODATA without the CNAME), a target that does not exist
//!   keeps the CNAMEs and takes the target's rcode (RFC 6604), so `dig` shows where it ends.
//!   Loops and chains over 8 CNAMEs stop: the CNAMEs so far, each once, NOERROR (as an
//!   authoritative BIND answers; the client's resolver sees the loop), where CoreDNS answers
//!   NODATA. CoreDNS answers SRV on an ExternalName with an SRV to the target; we keep the
//!   CNAME, which every resolver follows.
//! - When the answer section does not fit the client's UDP size the reply carries no answers
//!   and TC=1 (the client retries over TCP and gets all of them); an additional section that
//!   does not fit is left out without TC (RFC 2181 §9).

use std::net::IpAddr;

use crate::wire::{self, Full, MAX_NAME, Query, Writer, rcode, rtype};
use crate::zone::{PodMode, PtrEntry, ServiceData, ServiceKind, Zone, dashed_ip, parse_dashed_ip};

/// What the server knows about the client of one query.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    /// TCP: no size limit but 65,535. UDP: the client's EDNS size, 512 without EDNS.
    pub tcp: bool,
    /// Whether names outside the cluster may be forwarded for this client (RA is set then).
    pub recursion: bool,
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `out[..len]` is the complete response.
    Reply { len: usize, qtype: u16, rcode: u8 },
    /// A name outside the cluster data: forward the query to an upstream.
    Forward { qtype: u16 },
    /// An ExternalName chain that leaves the cluster zone: `out[..len]` holds the response with
    /// the CNAMEs (the last target's name at `target_at`); the caller resolves that target
    /// upstream and appends its records.
    Chase {
        len: usize,
        qtype: u16,
        target_at: usize,
    },
    /// Not worth a reply (a response, or shorter than a header).
    Drop,
}

const TXT_VERSION: &[u8] = b"\x051.1.0";
const TXT_TTL: u32 = 28800;
const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa\x00";
const IP6_ARPA: &[u8] = b"\x03ip6\x04arpa\x00";
/// At most this many additional records per answer (SRV targets).
const MAX_ADDITIONAL: usize = 128;

/// A fixed-capacity list on the stack, so SRV answers allocate nothing either. Its storage is
/// left uninitialised (a zeroed 2.5 KB array per query was a fifth of the q1 cost).
struct Fixed<T: Copy, const N: usize> {
    items: [std::mem::MaybeUninit<T>; N],
    len: usize,
}

impl<T: Copy, const N: usize> Fixed<T, N> {
    fn new() -> Self {
        Fixed {
            items: [const { std::mem::MaybeUninit::uninit() }; N],
            len: 0,
        }
    }
    /// Adds an item; silently full beyond N (callers only lose de-duplication or extras).
    fn push(&mut self, item: T) -> bool {
        if self.len == N {
            return false;
        }
        self.items[self.len] = std::mem::MaybeUninit::new(item);
        self.len += 1;
        true
    }
    fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` items were written by `push`; MaybeUninit<T> has T's layout.
        unsafe { std::slice::from_raw_parts(self.items.as_ptr().cast::<T>(), self.len) }
    }
}

/// What a cluster-zone name is.
enum Found<'z> {
    NxDomain,
    /// The name exists but has nothing of the asked type (or is an empty non-terminal).
    NoData,
    Apex,
    DnsVersion,
    NsGlue,
    Service(&'z ServiceData),
    Endpoint(&'z ServiceData, &'z [u8]),
    Port(&'z ServiceData, &'z [u8], &'z [u8]),
    Pod(IpAddr),
}

/// Answers one query packet from `zone` into `out` (which should hold 65,535 bytes for TCP;
/// for UDP the client's size is enforced whatever `out`'s length).
pub fn answer(zone: &Zone, packet: &[u8], client: &ClientInfo, out: &mut [u8]) -> Outcome {
    let q = match wire::parse_query(packet) {
        Ok(q) => q,
        Err(wire::Malformed::Drop) => return Outcome::Drop,
        Err(wire::Malformed::Reply {
            rcode,
            question_end,
            edns,
        }) => {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            let flags = u16::from_be_bytes([packet[2], packet[3]]);
            let question = question_end.map_or(&[][..], |end| &packet[wire::HEADER_LEN..end]);
            let len = error_reply(out, id, flags, rcode, question, edns.is_some(), 0);
            let qtype = question_end.map_or(0, |end| {
                u16::from_be_bytes([packet[end - 4], packet[end - 3]])
            });
            return Outcome::Reply { len, qtype, rcode };
        }
    };
    let question = &packet[wire::HEADER_LEN..q.question_end];
    let reply = |out: &mut [u8], rc: u8| Outcome::Reply {
        len: error_reply(out, q.id, q.flags, rc, question, q.edns.is_some(), 0),
        qtype: q.qtype,
        rcode: rc,
    };
    if q.opcode() != 0 {
        return reply(out, rcode::NOTIMP);
    }
    if let Some(e) = q.edns
        && e.version != 0
    {
        // RFC 6891 §6.1.3: BADVERS is extended rcode 16 = upper bits 1 in the OPT record.
        let len = error_reply(
            out,
            q.id,
            q.flags,
            0,
            question,
            true,
            (rcode::BADVERS >> 4) as u8,
        );
        return Outcome::Reply {
            len,
            qtype: q.qtype,
            rcode: 0,
        };
    }
    if q.qclass != wire::CLASS_IN || matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        return reply(out, rcode::REFUSED);
    }
    if q.qtype == rtype::OPT {
        return reply(out, rcode::FORMERR);
    }

    let mut lower_buf = [0u8; MAX_NAME];
    let lower = wire::lowercase_name(q.qname, &mut lower_buf);
    let mut offs = [0u8; 128];
    let nlabels = wire::label_offsets(lower, &mut offs);
    let offs = &offs[..nlabels];
    let zone_wire = &*zone.compiled.zone_wire;

    if let Some(zone_at) = suffix_at(lower, offs, zone_wire) {
        if !zone.synced {
            return reply(out, rcode::SERVFAIL);
        }
        let rel = &offs[..offs
            .iter()
            .position(|&o| o as usize == zone_at)
            .unwrap_or(offs.len())];
        let found = resolve(zone, lower, rel);
        return respond(zone, &q, question, client, out, found, zone_at);
    }
    for (suffix, v6) in [(IN_ADDR_ARPA, false), (IP6_ARPA, true)] {
        if let Some(at) = suffix_at(lower, offs, suffix)
            && let Some(hits) = reverse_lookup(zone, lower, offs, at, v6)
        {
            return match hits {
                Reverse::V4(refs) => respond_ptr(zone, &q, question, client, out, refs, at),
                Reverse::V6(refs) => respond_ptr(zone, &q, question, client, out, refs, at),
            };
        }
    }
    if client.recursion {
        Outcome::Forward { qtype: q.qtype }
    } else {
        reply(out, rcode::REFUSED)
    }
}

/// Where `suffix` starts in `name` if it is a whole-label suffix.
fn suffix_at(name: &[u8], offs: &[u8], suffix: &[u8]) -> Option<usize> {
    let at = name.len().checked_sub(suffix.len())?;
    (name[at..] == *suffix && (at == 0 || offs.contains(&(at as u8)))).then_some(at)
}

fn label_at(name: &[u8], off: u8) -> &[u8] {
    let off = off as usize;
    &name[off + 1..off + 1 + name[off] as usize]
}

/// Classifies a name under the cluster zone. `rel` are the offsets of the labels left of it.
fn resolve<'z>(zone: &'z Zone, lower: &'z [u8], rel: &[u8]) -> Found<'z> {
    let n = rel.len();
    let from_right = |i: usize| label_at(lower, rel[n - 1 - i]);
    if n == 0 {
        return Found::Apex;
    }
    match from_right(0) {
        b"dns-version" if n == 1 => Found::DnsVersion,
        b"dns" if n == 1 => Found::NoData,
        b"dns" if n == 2 && from_right(1) == b"ns" => Found::NsGlue,
        b"svc" => {
            if n == 1 {
                return Found::NoData;
            }
            if !zone.namespaces.contains(from_right(1)) {
                return Found::NxDomain;
            }
            if n == 2 {
                return Found::NoData;
            }
            // `<svc><ns>` sit next to each other in the name: that is the map key.
            let key_start = rel[n - 3] as usize;
            let key_end = rel[n - 1] as usize;
            let Some(svc) = zone.services.get(&lower[key_start..key_end]) else {
                return Found::NxDomain;
            };
            if !svc.name_exists() {
                return Found::NxDomain;
            }
            let rest = n - 3;
            let external = matches!(svc.kind, ServiceKind::ExternalName(_));
            match rest {
                0 => Found::Service(svc),
                _ if external => Found::NxDomain,
                1 => {
                    let label = from_right(3);
                    if let Some(proto) = label.strip_prefix(b"_") {
                        let named = |p: &crate::zone::PortData| {
                            p.proto.label() == proto && !p.name.is_empty()
                        };
                        let exists = match svc.kind {
                            ServiceKind::ClusterIp => svc.ports.iter().any(named),
                            _ => svc.slices.iter().flat_map(|s| s.ports.iter()).any(named),
                        };
                        if exists {
                            Found::NoData
                        } else {
                            Found::NxDomain
                        }
                    } else if endpoint_matches(svc, label).next().is_some() {
                        Found::Endpoint(svc, label)
                    } else {
                        Found::NxDomain
                    }
                }
                2 => {
                    let (port, proto) = (from_right(4), from_right(3));
                    match (port.strip_prefix(b"_"), proto.strip_prefix(b"_")) {
                        (Some(port), Some(proto)) if srv_count(svc, Some((port, proto))) > 0 => {
                            Found::Port(svc, port, proto)
                        }
                        _ => Found::NxDomain,
                    }
                }
                _ => Found::NxDomain,
            }
        }
        b"pod" => {
            if n == 1 {
                return Found::NoData;
            }
            if zone.compiled.settings.pods == PodMode::Disabled
                || !zone.namespaces.contains(from_right(1))
            {
                return Found::NxDomain;
            }
            match n {
                2 => Found::NoData,
                3 => match parse_dashed_ip(from_right(2)) {
                    Some(ip)
                        if zone.compiled.settings.pods == PodMode::Insecure
                            || zone
                                .pod_ips
                                .get(&ip)
                                .is_some_and(|nss| nss.iter().any(|n| **n == *from_right(1))) =>
                    {
                        Found::Pod(ip)
                    }
                    _ => Found::NxDomain,
                },
                _ => Found::NxDomain,
            }
        }
        _ => Found::NxDomain,
    }
}

fn port_matches(p: &crate::zone::PortData, filter: Option<(&[u8], &[u8])>) -> bool {
    match filter {
        None => true,
        Some((name, proto)) => {
            !p.name.is_empty() && p.name.as_bytes() == name && p.proto.label() == proto
        }
    }
}

/// How many SRV records a question yields (before de-duplication, as CoreDNS counts weights).
fn srv_count(svc: &ServiceData, filter: Option<(&[u8], &[u8])>) -> usize {
    match svc.kind {
        ServiceKind::ClusterIp => svc.ports.iter().filter(|p| port_matches(p, filter)).count(),
        ServiceKind::Headless => svc
            .slices
            .iter()
            .map(|s| {
                let ready = s.endpoints.iter().filter(|e| e.is_ready()).count();
                ready * s.ports.iter().filter(|p| port_matches(p, filter)).count()
            })
            .sum(),
        ServiceKind::ExternalName(_) => 0,
    }
}

/// Ready endpoints whose per-endpoint name is `label`.
fn endpoint_matches<'z>(
    svc: &'z ServiceData,
    label: &'z [u8],
) -> impl Iterator<Item = &'z crate::zone::EndpointData> + 'z {
    let parsed = parse_dashed_ip(label);
    svc.ready_endpoints()
        .filter(move |(s, i, e)| match s.hostname(*i) {
            Some(h) => h.as_bytes() == label,
            None => {
                parsed == Some(e.ip) && {
                    let mut buf = [0u8; 64];
                    let n = dashed_ip(&e.ip, &mut buf);
                    &buf[..n] == label
                }
            }
        })
        .map(|(_, _, e)| e)
}

/// The per-endpoint name of endpoint `i` of `slice`: its hostname, else its dashed IP.
fn endpoint_label<'a>(
    slice: &'a crate::zone::SliceData,
    i: usize,
    e: &crate::zone::EndpointData,
    buf: &'a mut [u8; 64],
) -> &'a [u8] {
    match slice.hostname(i) {
        Some(h) => h.as_bytes(),
        None => {
            let n = dashed_ip(&e.ip, buf);
            &buf[..n]
        }
    }
}

fn error_reply(
    out: &mut [u8],
    id: u16,
    flags: u16,
    rc: u8,
    question: &[u8],
    edns: bool,
    ext_rcode: u8,
) -> usize {
    let mut w = Writer::new(out, 65535);
    let ok = wire::write_header(&mut w, id, flags, 0, rc, question).and_then(|_| {
        if edns {
            wire::write_opt(&mut w, ext_rcode)
        } else {
            Ok(())
        }
    });
    if edns && ok.is_ok() {
        wire::set_count(w.buf, wire::ARCOUNT_AT, 1);
    }
    w.len
}

struct Ctx<'a, 'q> {
    q: &'a Query<'q>,
    question: &'a [u8],
    ttl: u32,
    limit: usize,
    flags: u16,
}

impl Ctx<'_, '_> {
    fn new<'a, 'q>(
        zone: &Zone,
        q: &'a Query<'q>,
        question: &'a [u8],
        client: &ClientInfo,
    ) -> Ctx<'a, 'q> {
        let limit = if client.tcp { 65535 } else { q.udp_limit() };
        let limit = limit - if q.edns.is_some() { wire::OPT_LEN } else { 0 };
        let flags = wire::FLAG_AA | if client.recursion { wire::FLAG_RA } else { 0 };
        Ctx {
            q,
            question,
            ttl: zone.compiled.settings.ttl,
            limit,
            flags,
        }
    }

    /// Writes the header and question, then the three sections, then OPT, and patches counts.
    /// Answers that do not fit become an empty TC reply; additional records that do not fit are dropped.
    fn finish(
        &self,
        out: &mut [u8],
        rc: u8,
        answers: impl FnOnce(&mut Writer<'_>, &mut Extra) -> Result<u16, Full>,
        authority: impl FnOnce(&mut Writer<'_>) -> Result<u16, Full>,
        additional: impl FnOnce(&mut Writer<'_>, &Extra) -> Result<u16, Full>,
    ) -> usize {
        self.finish_counted(out, rc, answers, authority, additional)
            .0
    }

    /// As [`Ctx::finish`], also returning whether the answer was truncated.
    fn finish_counted(
        &self,
        out: &mut [u8],
        rc: u8,
        answers: impl FnOnce(&mut Writer<'_>, &mut Extra) -> Result<u16, Full>,
        authority: impl FnOnce(&mut Writer<'_>) -> Result<u16, Full>,
        additional: impl FnOnce(&mut Writer<'_>, &Extra) -> Result<u16, Full>,
    ) -> (usize, bool) {
        let mut w = Writer::new(out, self.limit);
        let mut extra = Extra {
            targets: Fixed::new(),
            ns_target: None,
        };
        let header = wire::write_header(
            &mut w,
            self.q.id,
            self.q.flags,
            self.flags,
            rc,
            self.question,
        );
        let mut tc = false;
        let (an, ns, ar) = match header.and_then(|_| answers(&mut w, &mut extra)) {
            Ok(an) => {
                let ns = authority(&mut w);
                match ns {
                    Ok(ns) => {
                        let mark = w.len;
                        let ar = additional(&mut w, &extra).unwrap_or_else(|_| {
                            w.len = mark;
                            0
                        });
                        (an, ns, ar)
                    }
                    Err(_) => {
                        tc = true;
                        self.truncated(&mut w);
                        (0, 0, 0)
                    }
                }
            }
            Err(_) => {
                tc = true;
                self.truncated(&mut w);
                (0, 0, 0)
            }
        };
        let mut ar = ar;
        if self.q.edns.is_some() {
            // Room for OPT was kept out of the limit.
            w.limit += wire::OPT_LEN;
            if wire::write_opt(&mut w, 0).is_ok() {
                ar += 1;
            }
        }
        wire::set_count(w.buf, wire::ANCOUNT_AT, an);
        wire::set_count(w.buf, wire::NSCOUNT_AT, ns);
        wire::set_count(w.buf, wire::ARCOUNT_AT, ar);
        (w.len, tc)
    }

    fn truncated(&self, w: &mut Writer<'_>) {
        w.len = 0;
        let _ = wire::write_header(
            w,
            self.q.id,
            self.q.flags,
            self.flags | wire::FLAG_TC,
            0,
            self.question,
        );
    }
}

/// Data the answer section hands to the additional section.
struct Extra {
    /// `(offset of a target name, its address)` for SRV additional records.
    targets: Fixed<(u16, IpAddr), MAX_ADDITIONAL>,
    /// NS glue owner offset.
    ns_target: Option<u16>,
}

/// SOA rdata with names compressed against `zone_off` (the zone's labels in the question).
fn write_soa(w: &mut Writer<'_>, zone: &Zone, owner: usize, ttl: u32) -> Result<(), Full> {
    let at = w.record_start(owner, rtype::SOA, ttl)?;
    w.bytes(b"\x02ns\x03dns")?;
    w.pointer(owner)?;
    w.bytes(b"\x0ahostmaster")?;
    w.pointer(owner)?;
    w.u32(zone.serial)?;
    w.u32(7200)?;
    w.u32(1800)?;
    w.u32(86400)?;
    w.u32(zone.compiled.settings.ttl)?;
    w.finish_rdata(at);
    Ok(())
}

/// Where the name being answered sits in the response: the offset of its owner name and of
/// the zone's labels inside it (SRV targets and SOA/NS rdata point there).
#[derive(Clone, Copy)]
struct Owner {
    name: usize,
    zone: usize,
}

impl Owner {
    /// The offset of a service's own label inside this name (`<svc>.<ns>.svc.<zone>`).
    fn service(&self, svc: &ServiceData) -> usize {
        self.zone - (1 + svc.name.len() + 1 + svc.namespace.len() + 4)
    }
}

/// How the answer for one name of a CNAME chain ended.
enum Step<'z> {
    /// Records of the asked type (0: the name exists without them, NODATA).
    Records(u16),
    NxDomain,
    /// An ExternalName's CNAME was written; its target (lower-case wire form) starts at `at`.
    Cname {
        target: &'z [u8],
        at: usize,
    },
}

/// How a whole answer ended, for the rcode and the authority section.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Answered,
    /// NOERROR without records of the asked type at the end of the chain: SOA in authority.
    NoData,
    NxDomain,
    /// The chain leaves the cluster data at the CNAME target at this offset.
    Leaves(usize),
}

/// At most this many CNAMEs in one answer (as CoreDNS); the records of the 8th CNAME's target
/// are still answered, a 9th CNAME is not, and the chain is answered as far as it got.
const MAX_CHAIN: usize = 8;

fn respond(
    zone: &Zone,
    q: &Query<'_>,
    question: &[u8],
    client: &ClientInfo,
    out: &mut [u8],
    found: Found<'_>,
    zone_at: usize,
) -> Outcome {
    let ctx = Ctx::new(zone, q, question, client);
    let zone_off = wire::HEADER_LEN + zone_at;
    let qtype = q.qtype;
    let ttl = ctx.ttl;
    let end = std::cell::Cell::new(End::Answered);
    let (len, tc) = ctx.finish_counted(
        out,
        rcode::NOERROR,
        |w, extra| {
            let first = Owner {
                name: wire::HEADER_LEN,
                zone: zone_off,
            };
            let (count, how) = answer_chain(w, extra, zone, q.qname, found, first, qtype, ttl)?;
            end.set(how);
            Ok(count)
        },
        |w| match end.get() {
            End::NoData | End::NxDomain => write_soa(w, zone, zone_off, ttl).map(|_| 1),
            End::Answered | End::Leaves(_) => Ok(0),
        },
        |w, extra| {
            let mut n = 0;
            if let Some(owner) = extra.ns_target {
                n += glue(w, zone, owner as usize, ttl, rtype::ANY)?;
            }
            for (owner, ip) in extra.targets.as_slice() {
                w.address_record(*owner as usize, ttl, &ip_bytes(ip))?;
                n += 1;
            }
            Ok(n)
        },
    );
    if tc {
        return Outcome::Reply {
            len,
            qtype,
            rcode: rcode::NOERROR,
        };
    }
    match end.get() {
        End::Leaves(target_at) => Outcome::Chase {
            len,
            qtype,
            target_at,
        },
        End::NxDomain => {
            wire::set_rcode(out, rcode::NXDOMAIN);
            Outcome::Reply {
                len,
                qtype,
                rcode: rcode::NXDOMAIN,
            }
        }
        End::Answered | End::NoData => Outcome::Reply {
            len,
            qtype,
            rcode: rcode::NOERROR,
        },
    }
}

/// Writes the answer section for `found` and, when it is an ExternalName whose target is in
/// the cluster zone, for the target too (as CoreDNS does), and so on down the chain. A target
/// outside the cluster data ends the chain with [`End::Leaves`] (the caller resolves it
/// upstream). A target already in the chain (a loop) or a chain longer than [`MAX_CHAIN`] is
/// answered with the CNAMEs written so far, each once. The rcode is that of the last name
/// (RFC 6604). Returns the number of answer records.
#[allow(clippy::too_many_arguments)]
fn answer_chain<'a>(
    w: &mut Writer<'_>,
    extra: &mut Extra,
    zone: &'a Zone,
    qname: &[u8],
    mut found: Found<'a>,
    mut owner: Owner,
    qtype: u16,
    ttl: u32,
) -> Result<(u16, End), Full> {
    let mut count = 0u16;
    let mut followed: Fixed<&[u8], MAX_CHAIN> = Fixed::new();
    loop {
        let mark = w.len;
        let (target, at) = match answer_name(w, extra, zone, &found, owner, qtype, ttl)? {
            Step::Records(0) if count == 0 => return Ok((0, End::NoData)),
            Step::Records(0) => return Ok((count, End::NoData)),
            Step::Records(n) => return Ok((count + n, End::Answered)),
            Step::NxDomain => return Ok((count, End::NxDomain)),
            Step::Cname { .. } if count as usize == MAX_CHAIN => {
                // One CNAME too many: take it back and answer the chain so far.
                w.len = mark;
                return Ok((count, End::Answered));
            }
            Step::Cname { target, at } => (target, at),
        };
        count += 1;
        if qtype == rtype::CNAME {
            return Ok((count, End::Answered));
        }
        // Wire names compare case-insensitively as bytes: length bytes (< 64) are never letters.
        let seen = target.eq_ignore_ascii_case(qname) || followed.as_slice().contains(&target);
        if seen || !followed.push(target) {
            return Ok((count, End::Answered));
        }
        let mut offs = [0u8; 128];
        let nlabels = wire::label_offsets(target, &mut offs);
        let offs = &offs[..nlabels];
        let Some(zone_at) = suffix_at(target, offs, &zone.compiled.zone_wire) else {
            return Ok((count, End::Leaves(at)));
        };
        let rel = &offs[..offs
            .iter()
            .position(|&o| o as usize == zone_at)
            .unwrap_or(offs.len())];
        found = resolve(zone, target, rel);
        owner = Owner {
            name: at,
            zone: at + zone_at,
        };
    }
}

/// Writes the records of one name of the answer (the question, or a CNAME target in the zone).
fn answer_name<'z>(
    w: &mut Writer<'_>,
    extra: &mut Extra,
    zone: &'z Zone,
    found: &Found<'z>,
    owner: Owner,
    qtype: u16,
    ttl: u32,
) -> Result<Step<'z>, Full> {
    let n = match *found {
        Found::NxDomain => return Ok(Step::NxDomain),
        Found::NoData => 0,
        Found::Apex => match qtype {
            rtype::SOA => {
                write_soa(w, zone, owner.zone, ttl)?;
                1
            }
            rtype::NS => {
                let at = w.record_start(owner.name, rtype::NS, ttl)?;
                extra.ns_target = Some(w.len as u16);
                w.bytes(b"\x02ns\x03dns")?;
                w.pointer(owner.zone)?;
                w.finish_rdata(at);
                1
            }
            _ => 0,
        },
        Found::DnsVersion => match qtype {
            rtype::TXT => {
                let at = w.record_start(owner.name, rtype::TXT, TXT_TTL)?;
                w.bytes(TXT_VERSION)?;
                w.finish_rdata(at);
                1
            }
            _ => 0,
        },
        Found::NsGlue => glue(w, zone, owner.name, ttl, qtype)?,
        Found::Pod(ip) => {
            if wants(qtype, &ip) {
                w.address_record(owner.name, ttl, &ip_bytes(&ip))?;
                1
            } else {
                0
            }
        }
        Found::Service(svc) => {
            if let ServiceKind::ExternalName(Some(target)) = &svc.kind {
                let at = w.record_start(owner.name, rtype::CNAME, ttl)?;
                let target_at = w.len;
                w.bytes(target)?;
                w.finish_rdata(at);
                return Ok(Step::Cname {
                    target,
                    at: target_at,
                });
            }
            match qtype {
                rtype::A | rtype::AAAA | rtype::ANY => {
                    let mut n = 0;
                    if qtype != rtype::AAAA {
                        n += w.address_set(owner.name, ttl, &svc.v4)?;
                    }
                    if qtype != rtype::A {
                        n += w.address_set(owner.name, ttl, &svc.v6)?;
                    }
                    n
                }
                rtype::SRV => write_srv(w, extra, svc, None, owner.name, owner.service(svc), ttl)?,
                _ => 0,
            }
        }
        Found::Endpoint(svc, label) => match qtype {
            rtype::A | rtype::AAAA | rtype::ANY => {
                let mut n = 0;
                let start = w.len;
                for e in endpoint_matches(svc, label) {
                    if !wants(qtype, &e.ip) {
                        continue;
                    }
                    let bytes = ip_bytes(&e.ip);
                    if already_written(&w.buf[start..w.len], &bytes) {
                        continue;
                    }
                    w.address_record(owner.name, ttl, &bytes)?;
                    n += 1;
                }
                n
            }
            _ => 0,
        },
        Found::Port(svc, port, proto) => match qtype {
            rtype::SRV | rtype::ANY => write_srv(
                w,
                extra,
                svc,
                Some((port, proto)),
                owner.name,
                owner.service(svc),
                ttl,
            )?,
            _ => 0,
        },
    };
    Ok(Step::Records(n))
}

fn wants(qtype: u16, ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => matches!(qtype, rtype::A | rtype::ANY),
        IpAddr::V6(_) => matches!(qtype, rtype::AAAA | rtype::ANY),
    }
}

#[derive(Clone, Copy)]
struct IpBytes([u8; 16], usize);
impl std::ops::Deref for IpBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}
fn ip_bytes(ip: &IpAddr) -> IpBytes {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            IpBytes(b, 4)
        }
        IpAddr::V6(a) => IpBytes(a.octets(), 16),
    }
}

/// Whether an address record with this rdata is already among `records` (16- or 28-byte RRs).
fn already_written(records: &[u8], ip: &[u8]) -> bool {
    let rr = 12 + ip.len();
    let mut pos = 0;
    while pos + 12 <= records.len() {
        let rdlen = u16::from_be_bytes([records[pos + 10], records[pos + 11]]) as usize;
        if rdlen == ip.len() && records.get(pos + 12..pos + rr) == Some(ip) {
            return true;
        }
        pos += 12 + rdlen;
    }
    false
}

fn glue(w: &mut Writer<'_>, zone: &Zone, owner: usize, ttl: u32, qtype: u16) -> Result<u16, Full> {
    let mut n = 0;
    for ip in &zone.compiled.settings.dns_ips {
        if wants(qtype, ip) {
            w.address_record(owner, ttl, &ip_bytes(ip))?;
            n += 1;
        }
    }
    Ok(n)
}

/// SRV records of a service (all ports, or the one `_port._proto` names), deduplicated by
/// (target, port); the targets' addresses go to the additional section.
fn write_srv(
    w: &mut Writer<'_>,
    extra: &mut Extra,
    svc: &ServiceData,
    filter: Option<(&[u8], &[u8])>,
    qname_off: usize,
    svc_off: usize,
    ttl: u32,
) -> Result<u16, Full> {
    let total = srv_count(svc, filter).max(1);
    let weight = (100 / total) as u16;
    let mut n = 0u16;
    // (target offset, port) of records written, to skip duplicates.
    let mut written: Fixed<(usize, u16), 512> = Fixed::new();
    match svc.kind {
        ServiceKind::ClusterIp => {
            for p in svc.ports.iter().filter(|p| port_matches(p, filter)) {
                if written.as_slice().iter().any(|&(_, port)| port == p.port) {
                    continue;
                }
                let at = w.record_start(qname_off, rtype::SRV, ttl)?;
                w.u16(0)?;
                w.u16(weight)?;
                w.u16(p.port)?;
                w.pointer(svc_off)?;
                w.finish_rdata(at);
                written.push((svc_off, p.port));
                n += 1;
            }
            if n > 0 {
                for ip in svc.cluster_ips.iter() {
                    extra.targets.push((svc_off as u16, *ip));
                }
            }
        }
        ServiceKind::Headless => {
            for s in svc.slices.iter() {
                for p in s.ports.iter().filter(|p| port_matches(p, filter)) {
                    for (i, e) in s.endpoints.iter().enumerate().filter(|(_, e)| e.is_ready()) {
                        let mut buf = [0u8; 64];
                        let label = endpoint_label(s, i, e, &mut buf);
                        let duplicate = written.as_slice().iter().any(|&(off, port)| {
                            port == p.port && {
                                let len = w.buf[off] as usize;
                                w.buf[off + 1..off + 1 + len] == *label
                            }
                        });
                        if duplicate {
                            continue;
                        }
                        let at = w.record_start(qname_off, rtype::SRV, ttl)?;
                        w.u16(0)?;
                        w.u16(weight)?;
                        w.u16(p.port)?;
                        let target = w.len;
                        w.label(label)?;
                        w.pointer(svc_off)?;
                        w.finish_rdata(at);
                        written.push((target, p.port));
                        if !extra.targets.as_slice().iter().any(|(_, ip)| *ip == e.ip) {
                            extra.targets.push((target as u16, e.ip));
                        }
                        n += 1;
                    }
                }
            }
        }
        ServiceKind::ExternalName(_) => {}
    }
    Ok(n)
}

/// The PTR entries of a reverse name, by family.
enum Reverse<'z> {
    V4(&'z [PtrEntry<u32>]),
    V6(&'z [PtrEntry<u128>]),
}

/// Parses a full reverse name to its IP and returns what points at it.
fn reverse_lookup<'z>(
    zone: &'z Zone,
    lower: &[u8],
    offs: &[u8],
    suffix_at: usize,
    v6: bool,
) -> Option<Reverse<'z>> {
    let labels: &[u8] = &offs[..offs.iter().position(|&o| o as usize == suffix_at)?];
    if !zone.synced {
        return None;
    }
    if v6 {
        if labels.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for &o in labels.iter().rev() {
            let l = label_at(lower, o);
            let [c] = l else { return None };
            let d = (*c as char).to_digit(16)?;
            v = (v << 4) | d as u128;
        }
        let hits = zone.ptr6.get(v);
        (!hits.is_empty()).then_some(Reverse::V6(hits))
    } else {
        if labels.len() != 4 {
            return None;
        }
        let mut v: u32 = 0;
        for &o in labels.iter().rev() {
            let l = label_at(lower, o);
            if l.is_empty() || l.len() > 3 || (l.len() > 1 && l[0] == b'0') {
                return None;
            }
            let mut octet: u32 = 0;
            for c in l {
                if !c.is_ascii_digit() {
                    return None;
                }
                octet = octet * 10 + (c - b'0') as u32;
            }
            if octet > 255 {
                return None;
            }
            v = (v << 8) | octet;
        }
        let hits = zone.ptr4.get(v);
        (!hits.is_empty()).then_some(Reverse::V4(hits))
    }
}

fn respond_ptr<K>(
    zone: &Zone,
    q: &Query<'_>,
    question: &[u8],
    client: &ClientInfo,
    out: &mut [u8],
    all: &[PtrEntry<K>],
    suffix_at: usize,
) -> Outcome {
    let ctx = Ctx::new(zone, q, question, client);
    let ttl = ctx.ttl;
    let zone_wire = &*zone.compiled.zone_wire;
    if q.qtype != rtype::PTR {
        // The name exists: NODATA with the reverse zone's SOA.
        let owner = wire::HEADER_LEN + suffix_at;
        let len = ctx.finish(
            out,
            rcode::NOERROR,
            |_, _| Ok(0),
            |w| {
                let at = w.record_start(owner, rtype::SOA, ttl)?;
                w.bytes(b"\x02ns\x03dns")?;
                w.bytes(zone_wire)?;
                w.bytes(b"\x0ahostmaster")?;
                w.bytes(zone_wire)?;
                for v in [zone.serial, 7200, 1800, 86400, ttl] {
                    w.u32(v)?;
                }
                w.finish_rdata(at);
                Ok(1)
            },
            |_, _| Ok(0),
        );
        return Outcome::Reply {
            len,
            qtype: q.qtype,
            rcode: rcode::NOERROR,
        };
    }
    // A ClusterIP wins: only the first service that owns the IP answers (CoreDNS reverse.go).
    let cluster = all.iter().find(|r| r.endpoint().is_none());
    let len = ctx.finish(
        out,
        rcode::NOERROR,
        |w, _| {
            let mut n = 0;
            let mut zone_ptr: Option<usize> = None;
            let mut write = |w: &mut Writer<'_>, r: &PtrEntry<K>| -> Result<(), Full> {
                let at = w.record_start(wire::HEADER_LEN, rtype::PTR, ttl)?;
                if let Some((slice, i, e)) = r.endpoint() {
                    let mut buf = [0u8; 64];
                    w.label(endpoint_label(slice, i, e, &mut buf))?;
                }
                w.label(r.svc.name.as_bytes())?;
                w.label(r.svc.namespace.as_bytes())?;
                w.label(b"svc")?;
                match zone_ptr {
                    Some(p) => w.pointer(p)?,
                    None => {
                        zone_ptr = Some(w.len);
                        w.bytes(zone_wire)?;
                    }
                }
                w.finish_rdata(at);
                Ok(())
            };
            if let Some(r) = cluster {
                write(w, r)?;
                return Ok(1);
            }
            for (i, r) in all.iter().enumerate() {
                // Identical PTRs (one IP in two slices of a service, same name) once.
                let dup = all[..i].iter().any(|p| {
                    std::sync::Arc::ptr_eq(&p.svc, &r.svc)
                        && p.endpoint().map(|(s, i, _)| s.hostname(i))
                            == r.endpoint().map(|(s, i, _)| s.hostname(i))
                });
                if !dup {
                    write(w, r)?;
                    n += 1;
                }
            }
            Ok(n)
        },
        |_| Ok(0),
        |_, _| Ok(0),
    );
    Outcome::Reply {
        len,
        qtype: q.qtype,
        rcode: rcode::NOERROR,
    }
}

/// Builds a SERVFAIL (or other rcode) reply for a query that parsed; used by servers when
/// forwarding fails. Returns 0 if the packet is not a query.
pub fn reply_with_rcode(packet: &[u8], rc: u8, client: &ClientInfo, out: &mut [u8]) -> usize {
    match wire::parse_query(packet) {
        Ok(q) => {
            let flags = if client.recursion { wire::FLAG_RA } else { 0 };
            let mut w = Writer::new(out, 65535);
            let question = &packet[wire::HEADER_LEN..q.question_end];
            if wire::write_header(&mut w, q.id, q.flags, flags, rc, question).is_err() {
                return 0;
            }
            if q.edns.is_some() && wire::write_opt(&mut w, 0).is_ok() {
                wire::set_count(w.buf, wire::ARCOUNT_AT, 1);
            }
            w.len
        }
        Err(_) => 0,
    }
}
