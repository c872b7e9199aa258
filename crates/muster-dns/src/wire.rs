//! DNS wire format: the query parser and the response writer used on the hot path.
//!
//! Nothing here allocates. The parser borrows the packet; the writer writes into a caller's
//! buffer and stops at a byte limit (the client's UDP size, or 65,535 for TCP).

/// Record types this server knows by number.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Response codes (RFC 1035 §4.1.1, RFC 6891 for BADVERS).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended rcode 16: the upper 8 bits go into the OPT record.
    pub const BADVERS: u16 = 16;
}

pub const HEADER_LEN: usize = 12;
pub const CLASS_IN: u16 = 1;
/// Largest UDP answer we ever send, whatever the client advertises.
pub const MAX_UDP: usize = 4096;
/// UDP answer size without EDNS (RFC 1035 §4.2.1).
pub const PLAIN_UDP: usize = 512;
/// Size of the OPT record we append: root name, type, class, ttl, rdlen.
pub const OPT_LEN: usize = 11;
pub const MAX_NAME: usize = 255;

/// The EDNS(0) parameters of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A parsed query. `qname` is the name exactly as sent (its case is echoed back).
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub id: u16,
    /// Header bytes 2..4: QR, opcode, AA, TC, RD, RA, Z, rcode.
    pub flags: u16,
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question section.
    pub question_end: usize,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0x0f) as u8
    }
    pub fn recursion_desired(&self) -> bool {
        self.flags & 0x0100 != 0
    }
    /// The largest response this client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.udp_size as usize).clamp(PLAIN_UDP, MAX_UDP),
            None => PLAIN_UDP,
        }
    }
}

/// Why a packet is not an answerable query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a header, or a response: drop it without a reply.
    Drop,
    /// Answer with this rcode. `question_end` is set when the question parsed and can be echoed.
    Reply {
        rcode: u8,
        question_end: Option<usize>,
        edns: Option<Edns>,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses an uncompressed name at `pos`; returns the offset past it.
/// Questions never need compression (nothing precedes them to point at), so a pointer is malformed.
pub fn parse_plain_name(b: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *b.get(pos)? as usize;
        if len == 0 {
            pos += 1;
            return (pos - start <= MAX_NAME).then_some(pos);
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - start > MAX_NAME {
            return None;
        }
    }
}

/// Skips a possibly compressed name at `pos`; returns the offset past it.
fn skip_name(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *b.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => {
                b.get(pos + 1)?;
                return Some(pos + 2);
            }
            l if l > 63 => return None,
            l => pos += 1 + l as usize,
        }
    }
}

/// Parses a query. Only OPT in the additional section is interpreted; other records are skipped.
pub fn parse_query(b: &[u8]) -> Result<Query<'_>, Malformed> {
    if b.len() < HEADER_LEN || b[2] & 0x80 != 0 {
        return Err(Malformed::Drop);
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let qdcount = u16::from_be_bytes([b[4], b[5]]);
    let formerr = |question_end| Malformed::Reply {
        rcode: rcode::FORMERR,
        question_end,
        edns: None,
    };
    if qdcount != 1 {
        let opcode = ((flags >> 11) & 0x0f) as u8;
        // An unknown opcode is NOTIMP whatever its sections look like.
        if opcode != 0 && qdcount == 0 {
            return Err(Malformed::Reply {
                rcode: rcode::NOTIMP,
                question_end: None,
                edns: None,
            });
        }
        return Err(formerr(None));
    }
    let ancount = be16(b, 6).unwrap_or(0) as usize;
    let nscount = be16(b, 8).unwrap_or(0) as usize;
    let arcount = be16(b, 10).unwrap_or(0) as usize;
    let name_end = parse_plain_name(b, HEADER_LEN).ok_or(formerr(None))?;
    let (Some(qtype), Some(qclass)) = (be16(b, name_end), be16(b, name_end + 2)) else {
        return Err(formerr(None));
    };
    let question_end = name_end + 4;
    let mut pos = question_end;
    let mut edns = None;
    for i in 0..ancount + nscount + arcount {
        let owner = pos;
        pos = skip_name(b, pos).ok_or(formerr(Some(question_end)))?;
        let rrtype = be16(b, pos).ok_or(formerr(Some(question_end)))?;
        let class = be16(b, pos + 2).ok_or(formerr(Some(question_end)))?;
        let ttl_hi = be16(b, pos + 4).ok_or(formerr(Some(question_end)))?;
        let ttl_lo = be16(b, pos + 6).ok_or(formerr(Some(question_end)))?;
        let rdlen = be16(b, pos + 8).ok_or(formerr(Some(question_end)))? as usize;
        pos += 10 + rdlen;
        if pos > b.len() {
            return Err(formerr(Some(question_end)));
        }
        if rrtype == rtype::OPT {
            // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
            if edns.is_some() || i < ancount + nscount || b[owner] != 0 {
                return Err(formerr(Some(question_end)));
            }
            edns = Some(Edns {
                udp_size: class,
                version: (ttl_hi & 0xff) as u8,
                dnssec_ok: ttl_lo & 0x8000 != 0,
            });
        }
    }
    Ok(Query {
        id,
        flags,
        qname: &b[HEADER_LEN..name_end],
        qtype,
        qclass,
        question_end,
        edns,
    })
}

/// The offset past the question section of any message (responses included), names possibly compressed.
pub fn parse_query_like_response(b: &[u8]) -> Option<usize> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let qdcount = be16(b, 4)?;
    let mut pos = HEADER_LEN;
    for _ in 0..qdcount {
        pos = skip_name(b, pos)? + 4;
        if pos > b.len() {
            return None;
        }
    }
    Some(pos)
}

/// Writes into a fixed buffer, never past `limit`. Every write reports whether it fit.
pub struct Writer<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
    pub limit: usize,
}

/// The write did not fit under the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8], limit: usize) -> Self {
        let limit = limit.min(buf.len());
        Writer { buf, len: 0, limit }
    }

    #[inline]
    pub fn bytes(&mut self, data: &[u8]) -> Result<(), Full> {
        let end = self.len + data.len();
        if end > self.limit {
            return Err(Full);
        }
        self.buf[self.len..end].copy_from_slice(data);
        self.len = end;
        Ok(())
    }
    #[inline]
    pub fn u8(&mut self, v: u8) -> Result<(), Full> {
        self.bytes(&[v])
    }
    #[inline]
    pub fn u16(&mut self, v: u16) -> Result<(), Full> {
        self.bytes(&v.to_be_bytes())
    }
    #[inline]
    pub fn u32(&mut self, v: u32) -> Result<(), Full> {
        self.bytes(&v.to_be_bytes())
    }
    /// A compression pointer to an earlier offset.
    #[inline]
    pub fn pointer(&mut self, offset: usize) -> Result<(), Full> {
        self.u16(0xc000 | offset as u16)
    }
    /// One label (at most 63 bytes; longer input is cut, which callers never pass).
    pub fn label(&mut self, label: &[u8]) -> Result<(), Full> {
        let label = &label[..label.len().min(63)];
        self.u8(label.len() as u8)?;
        self.bytes(label)
    }
    /// Starts a record: owner pointer, type, class IN, ttl, and a placeholder rdlength.
    /// Returns the offset of the rdlength for [`Writer::finish_rdata`].
    #[inline]
    pub fn record_start(&mut self, owner: usize, rrtype: u16, ttl: u32) -> Result<usize, Full> {
        self.pointer(owner)?;
        self.u16(rrtype)?;
        self.u16(CLASS_IN)?;
        self.u32(ttl)?;
        let at = self.len;
        self.u16(0)?;
        Ok(at)
    }
    pub fn finish_rdata(&mut self, rdlen_at: usize) {
        let rdlen = (self.len - rdlen_at - 2) as u16;
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }
    /// One A (L = 4) or AAAA (L = 16) record per address, all with the same owner pointer.
    /// Checks the room once for the whole set, then fills fixed-size chunks.
    #[inline]
    pub fn address_set<const L: usize>(
        &mut self,
        owner: usize,
        ttl: u32,
        ips: &[[u8; L]],
    ) -> Result<u16, Full> {
        let rr_len = 12 + L;
        let end = self.len + rr_len * ips.len();
        if end > self.limit {
            return Err(Full);
        }
        let mut head = [0u8; 12];
        let rrtype = if L == 4 { rtype::A } else { rtype::AAAA };
        head[..2].copy_from_slice(&(0xc000 | owner as u16).to_be_bytes());
        head[2..4].copy_from_slice(&rrtype.to_be_bytes());
        head[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
        head[6..10].copy_from_slice(&ttl.to_be_bytes());
        head[10..12].copy_from_slice(&(L as u16).to_be_bytes());
        for (chunk, ip) in self.buf[self.len..end].chunks_exact_mut(rr_len).zip(ips) {
            chunk[..12].copy_from_slice(&head);
            chunk[12..].copy_from_slice(ip);
        }
        self.len = end;
        Ok(ips.len() as u16)
    }

    /// A whole A/AAAA record with the owner as a pointer, written with one copy.
    #[inline]
    pub fn address_record(&mut self, owner: usize, ttl: u32, ip: &[u8]) -> Result<(), Full> {
        let mut rr = [0u8; 28];
        let rrtype = if ip.len() == 4 { rtype::A } else { rtype::AAAA };
        rr[..2].copy_from_slice(&(0xc000 | owner as u16).to_be_bytes());
        rr[2..4].copy_from_slice(&rrtype.to_be_bytes());
        rr[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
        rr[6..10].copy_from_slice(&ttl.to_be_bytes());
        rr[10..12].copy_from_slice(&(ip.len() as u16).to_be_bytes());
        let n = 12 + ip.len().min(16);
        rr[12..n].copy_from_slice(&ip[..n - 12]);
        self.bytes(&rr[..n])
    }
}

/// Header flag bits.
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;

/// Section counts live at these header offsets.
pub const ANCOUNT_AT: usize = 6;
pub const NSCOUNT_AT: usize = 8;
pub const ARCOUNT_AT: usize = 10;

/// Writes the header (all counts zero but QDCOUNT) and copies the question from the query.
/// `question` is `packet[12..question_end]`, or empty when it could not be parsed.
pub fn write_header(
    w: &mut Writer<'_>,
    id: u16,
    query_flags: u16,
    extra_flags: u16,
    rcode: u8,
    question: &[u8],
) -> Result<(), Full> {
    // Keep opcode and RD from the query; the rest is ours.
    let flags = FLAG_QR | (query_flags & (0x7800 | FLAG_RD)) | extra_flags | (rcode as u16 & 0x0f);
    w.len = 0;
    w.u16(id)?;
    w.u16(flags)?;
    w.u16(if question.is_empty() { 0 } else { 1 })?;
    w.bytes(&[0; 6])?;
    w.bytes(question)
}

pub fn set_count(buf: &mut [u8], at: usize, count: u16) {
    buf[at..at + 2].copy_from_slice(&count.to_be_bytes());
}

pub fn add_flags(buf: &mut [u8], flags: u16) {
    let old = u16::from_be_bytes([buf[2], buf[3]]);
    buf[2..4].copy_from_slice(&(old | flags).to_be_bytes());
}

pub fn set_rcode(buf: &mut [u8], rcode: u8) {
    buf[3] = (buf[3] & 0xf0) | (rcode & 0x0f);
}

/// Appends our OPT record (RFC 6891): advertised size, extended rcode bits, version 0.
pub fn write_opt(w: &mut Writer<'_>, ext_rcode: u8) -> Result<(), Full> {
    w.u8(0)?;
    w.u16(rtype::OPT)?;
    w.u16(MAX_UDP as u16)?;
    w.u8(ext_rcode)?;
    w.u8(0)?;
    w.u16(0)?;
    w.u16(0)
}

/// Lower-cases a wire-format name. Length bytes are at most 63, below `A`, so they are unchanged.
pub fn lowercase_name<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME]) -> &'b [u8] {
    let n = name.len().min(MAX_NAME);
    for (d, s) in buf[..n].iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    &buf[..n]
}

/// Start offsets of each label of a wire name (the root excluded), left to right.
/// Returns how many were stored; names have at most 127 labels.
pub fn label_offsets(name: &[u8], offs: &mut [u8; 128]) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while pos < name.len() && name[pos] != 0 && n < 128 {
        offs[n] = pos as u8;
        n += 1;
        pos += 1 + name[pos] as usize;
    }
    n
}

/// Encodes a dotted name (no trailing dot needed) as lower-case wire format.
/// Returns None for an empty label or a label or name that is too long.
pub fn encode_name(dotted: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(dotted.len() + 2);
    let trimmed = dotted.strip_suffix('.').unwrap_or(dotted);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|c| c.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME).then_some(out)
}

/// Decodes a wire name to dotted text (for logs and explain output).
pub fn name_to_string(name: &[u8]) -> String {
    let mut s = String::new();
    let mut pos = 0;
    while pos < name.len() && name[pos] != 0 {
        let len = name[pos] as usize;
        let end = (pos + 1 + len).min(name.len());
        for &c in &name[pos + 1..end] {
            if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                s.push(c as char);
            } else {
                s.push_str(&format!("\\{c:03}"));
            }
        }
        s.push('.');
        pos = end;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Reads a possibly compressed name from a whole message into `out` as uncompressed wire format.
/// Used only off the hot path (upstream answers); bounded against pointer loops.
pub fn read_name(msg: &[u8], mut pos: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut end = None;
    let mut jumps = 0;
    let start_len = out.len();
    loop {
        let len = *msg.get(pos)?;
        if len & 0xc0 == 0xc0 {
            let target = (((len & 0x3f) as usize) << 8) | *msg.get(pos + 1)? as usize;
            if end.is_none() {
                end = Some(pos + 2);
            }
            jumps += 1;
            if jumps > 64 || target >= msg.len() {
                return None;
            }
            pos = target;
            continue;
        }
        if len > 63 {
            return None;
        }
        let label = msg.get(pos..pos + 1 + len as usize)?;
        out.extend_from_slice(label);
        if out.len() - start_len > MAX_NAME {
            return None;
        }
        pos += 1 + len as usize;
        if len == 0 {
            return Some(end.unwrap_or(pos));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend(label.bytes());
        }
        m.push(0);
        m.extend(qtype.to_be_bytes());
        m.extend(1u16.to_be_bytes());
        if let Some(size) = edns {
            m[11] = 1;
            m.extend([0, 0, 41]);
            m.extend(size.to_be_bytes());
            m.extend([0, 0, 0, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn parses_queries_and_rejects_malformed_ones() {
        let q = query("Foo.Example", rtype::AAAA, Some(1232));
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.qtype, rtype::AAAA);
        assert_eq!(p.qname, b"\x03Foo\x07Example\x00");
        assert_eq!(p.udp_limit(), 1232);
        assert_eq!(parse_query(&query("a", 1, None)).unwrap().udp_limit(), 512);
        assert_eq!(
            parse_query(&query("a", 1, Some(65000)))
                .unwrap()
                .udp_limit(),
            4096
        );

        let cases: &[(&[u8], Malformed)] = &[
            (b"\x00\x01", Malformed::Drop),
            // A response (QR=1) is never answered.
            (
                b"\x00\x01\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
                Malformed::Drop,
            ),
            // Two questions.
            (
                b"\x00\x01\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
                Malformed::Reply {
                    rcode: rcode::FORMERR,
                    question_end: None,
                    edns: None,
                },
            ),
            // Truncated question.
            (
                b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03ab",
                Malformed::Reply {
                    rcode: rcode::FORMERR,
                    question_end: None,
                    edns: None,
                },
            ),
            // Compression pointer in the question.
            (
                b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
                Malformed::Reply {
                    rcode: rcode::FORMERR,
                    question_end: None,
                    edns: None,
                },
            ),
            // Additional record announced but missing.
            (
                b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01",
                Malformed::Reply {
                    rcode: rcode::FORMERR,
                    question_end: Some(17),
                    edns: None,
                },
            ),
        ];
        for (packet, want) in cases {
            assert_eq!(parse_query(packet).unwrap_err(), *want, "{packet:?}");
        }
    }

    #[test]
    fn names_round_trip_and_decompress() {
        assert_eq!(encode_name("a.B.").unwrap(), b"\x01a\x01b\x00");
        assert_eq!(encode_name("").unwrap(), b"\x00");
        assert!(encode_name("a..b").is_none());
        assert!(encode_name(&"x".repeat(64)).is_none());
        assert_eq!(name_to_string(b"\x01a\x01b\x00"), "a.b.");
        let msg = b"\x00\x00\x01a\x01b\x00\x01c\xc0\x02";
        let mut out = Vec::new();
        assert_eq!(read_name(msg, 7, &mut out), Some(11));
        assert_eq!(out, b"\x01c\x01a\x01b\x00");
        let looped = b"\xc0\x00";
        assert_eq!(read_name(looped, 0, &mut Vec::new()), None);
    }
}
