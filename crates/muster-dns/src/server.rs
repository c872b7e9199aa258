//! The UDP and TCP servers.
//!
//! UDP runs on dedicated OS threads with blocking sockets, receiving and sending in batches with
//! `recvmmsg`/`sendmmsg`: one system call pair per batch instead of per packet, and no async
//! machinery on the path NSD and Knot are measured on. Several workers share a port with
//! `SO_REUSEPORT`. Queries that need an upstream are handed to tokio and answered from there.
//!
//! TCP runs on tokio: 2-byte length framing, several queries per connection answered in order,
//! an idle timeout, and a cap on concurrent connections.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::forward::{Forwarder, resolve_slow};
use crate::metrics::{Metrics, Proto};
use crate::query::{ClientInfo, Outcome, answer};
use crate::wire::MAX_UDP;
use crate::zone::Zone;

/// An IP network, e.g. `10.244.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Cidr> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("CIDR {s:?} has no /prefix"))?;
        let addr: IpAddr = addr.parse()?;
        let prefix: u8 = prefix.parse()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        anyhow::ensure!(prefix <= max, "CIDR {s:?}: prefix longer than {max}");
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What every server thread and task shares.
pub struct Shared {
    pub zone: ArcSwap<Zone>,
    pub metrics: Arc<Metrics>,
    pub forwarder: Arc<Forwarder>,
    /// Clients (besides loopback) that may have names outside the cluster forwarded.
    pub recursion_clients: Vec<Cidr>,
    pub runtime: tokio::runtime::Handle,
    pub tcp_idle: Duration,
    pub tcp_max_connections: usize,
    tcp_connections: AtomicUsize,
}

impl Shared {
    pub fn new(
        zone: Zone,
        metrics: Arc<Metrics>,
        forwarder: Arc<Forwarder>,
        recursion_clients: Vec<Cidr>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Shared {
            zone: ArcSwap::from_pointee(zone),
            metrics,
            forwarder,
            recursion_clients,
            runtime,
            tcp_idle: Duration::from_secs(10),
            tcp_max_connections: 1024,
            tcp_connections: AtomicUsize::new(0),
        }
    }

    pub fn forwarder_upstreams(&self) -> Vec<SocketAddr> {
        self.forwarder.upstreams().to_vec()
    }

    #[inline]
    fn client(&self, ip: IpAddr, tcp: bool) -> ClientInfo {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let allowed = ip.is_loopback() || self.recursion_clients.iter().any(|c| c.contains(ip));
        ClientInfo {
            tcp,
            recursion: allowed && self.forwarder.has_upstreams(),
        }
    }
}

/// Running servers; dropping it does not stop them, [`ServerHandle::shutdown`] does.
pub struct ServerHandle {
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tcp_stop: tokio::sync::watch::Sender<bool>,
}

impl ServerHandle {
    /// Stops the UDP threads (within their 200 ms receive timeout) and the TCP listeners,
    /// and waits for the threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    pub(crate) fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.tcp_stop.send(true);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

/// Dropping the handle (e.g. when `run`'s future is dropped) stops the servers too.
impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.tcp_stop.send(true);
    }
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(reuse_port)?;
    s.set_recv_buffer_size(4 << 20).ok();
    s.set_send_buffer_size(4 << 20).ok();
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

/// Binds `workers` UDP sockets and one TCP listener on `addr`. With port 0 the kernel picks a
/// free UDP port, which TCP may not have free (another process's ephemeral connection): then
/// pick again, a bounded number of times.
async fn bind_pair(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, TcpListener, SocketAddr)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let first =
            udp_socket(addr, true).map_err(|e| anyhow::anyhow!("binding UDP {addr}: {e}"))?;
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(udp_socket(bound, true)?);
        }
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((sockets, tcp, bound)),
            Err(e) => last = Some(anyhow::anyhow!("binding TCP {bound}: {e}")),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Binds UDP (`workers` sockets per address) and TCP on each address and starts serving.
/// A port of 0 picks a free port, the same one for UDP and TCP.
pub async fn serve(
    shared: Arc<Shared>,
    listen: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<ServerHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp_stop, tcp_stop_rx) = tokio::sync::watch::channel(false);
    let mut handle = ServerHandle {
        udp_addrs: Vec::new(),
        tcp_addrs: Vec::new(),
        stop: stop.clone(),
        threads: Vec::new(),
        tcp_stop,
    };
    let workers = workers.max(1);
    for &addr in listen {
        let (sockets, tcp, bound) = bind_pair(addr, workers).await?;
        handle.udp_addrs.push(bound);
        handle.tcp_addrs.push(tcp.local_addr()?);
        for (i, sock) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp_worker(Arc::new(sock), shared, stop))?;
            handle.threads.push(t);
        }
        tokio::spawn(tcp_accept(tcp, shared.clone(), tcp_stop_rx.clone()));
        tracing::info!(%bound, workers, "DNS serving on UDP and TCP");
    }
    Ok(handle)
}

const BATCH: usize = 32;
/// Queries larger than this are not real queries; they are dropped (MSG_TRUNC).
const RECV_BUF: usize = 4096;

/// Buffers and message headers for one batch, allocated once per worker.
struct Batch {
    rbufs: Box<[[u8; RECV_BUF]]>,
    wbufs: Box<[[u8; MAX_UDP]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    riov: Box<[libc::iovec]>,
    wiov: Box<[libc::iovec]>,
    rmsgs: Box<[libc::mmsghdr]>,
    wmsgs: Box<[libc::mmsghdr]>,
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: these are plain C structs for which all-zero is a valid value.
        let zero_msg = || unsafe { zeroed::<libc::mmsghdr>() };
        let mut b = Box::new(Batch {
            rbufs: vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice(),
            wbufs: vec![[0u8; MAX_UDP]; BATCH].into_boxed_slice(),
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            riov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            wiov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            rmsgs: (0..BATCH).map(|_| zero_msg()).collect(),
            wmsgs: (0..BATCH).map(|_| zero_msg()).collect(),
        });
        // The boxed slices never move or resize: pointers into them stay valid.
        for i in 0..BATCH {
            b.riov[i].iov_base = b.rbufs[i].as_mut_ptr().cast();
            b.riov[i].iov_len = RECV_BUF;
            b.wiov[i].iov_base = b.wbufs[i].as_mut_ptr().cast();
            let riov: *mut libc::iovec = &mut b.riov[i];
            let addr: *mut libc::sockaddr_storage = &mut b.addrs[i];
            b.rmsgs[i].msg_hdr.msg_iov = riov;
            b.rmsgs[i].msg_hdr.msg_iovlen = 1;
            b.rmsgs[i].msg_hdr.msg_name = addr.cast();
            let wiov: *mut libc::iovec = &mut b.wiov[i];
            b.wmsgs[i].msg_hdr.msg_iov = wiov;
            b.wmsgs[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }
}

fn source_ip(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

fn socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let ip = source_ip(ss)?;
    let port = match ss.ss_family as i32 {
        // SAFETY: as in source_ip.
        libc::AF_INET => {
            u16::from_be(unsafe { (*(ss as *const _ as *const libc::sockaddr_in)).sin_port })
        }
        _ => u16::from_be(unsafe { (*(ss as *const _ as *const libc::sockaddr_in6)).sin6_port }),
    };
    Some(SocketAddr::new(ip, port))
}

fn udp_worker(sock: Arc<UdpSocket>, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let fd = sock.as_raw_fd();
    let mut b = Batch::new();
    while !stop.load(Ordering::Relaxed) {
        for m in b.rmsgs.iter_mut() {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: rmsgs points at BATCH valid headers whose buffers live as long as `b`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.rmsgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue; // Timeout (to look at `stop`) or a transient error.
        }
        let started = Instant::now();
        let zone = shared.zone.load();
        let mut out = 0;
        let mut done: [(u16, u8); BATCH] = [(0, 0); BATCH];
        for i in 0..n as usize {
            let m = &b.rmsgs[i];
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                shared.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let len = m.msg_len as usize;
            let Some(ip) = source_ip(&b.addrs[i]) else {
                continue;
            };
            let client = shared.client(ip, false);
            let packet = &b.rbufs[i][..len];
            match answer(&zone, packet, &client, &mut b.wbufs[out]) {
                Outcome::Reply { len, qtype, rcode } => {
                    b.wiov[out].iov_len = len;
                    let name: *mut libc::sockaddr_storage = &mut b.addrs[i];
                    b.wmsgs[out].msg_hdr.msg_name = name.cast();
                    b.wmsgs[out].msg_hdr.msg_namelen = b.rmsgs[i].msg_hdr.msg_namelen;
                    done[out] = (qtype, rcode);
                    out += 1;
                }
                Outcome::Drop => {
                    shared.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                }
                slow => {
                    if let Some(peer) = socket_addr(&b.addrs[i]) {
                        spawn_slow(&shared, &sock, packet.to_vec(), peer, client, slow);
                    }
                }
            }
        }
        // Counted before sending, so a client that has its answer also sees it in /metrics.
        let nanos = started.elapsed().as_nanos() as u64;
        for &(qtype, rcode) in &done[..out] {
            shared.metrics.record(Proto::Udp, qtype, rcode, nanos);
        }
        let mut sent = 0;
        while sent < out {
            // SAFETY: wmsgs[sent..out] were filled above and point into `b`.
            let r =
                unsafe { libc::sendmmsg(fd, b.wmsgs[sent..].as_mut_ptr(), (out - sent) as u32, 0) };
            if r <= 0 {
                // Skip the packet that failed (e.g. an unreachable source) and go on.
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
    }
}

fn spawn_slow(
    shared: &Arc<Shared>,
    sock: &Arc<UdpSocket>,
    packet: Vec<u8>,
    peer: SocketAddr,
    client: ClientInfo,
    outcome: Outcome,
) {
    let shared2 = shared.clone();
    let sock = sock.clone();
    // The CNAME part of a chase lives in the worker's buffer: recompute it in the task.
    shared.runtime.spawn(async move {
        let started = Instant::now();
        let zone = shared2.zone.load_full();
        let mut out = vec![0u8; 65535];
        let outcome = match outcome {
            Outcome::Chase { .. } => answer(&zone, &packet, &client, &mut out),
            other => other,
        };
        let qtype = match outcome {
            Outcome::Forward { qtype } | Outcome::Chase { qtype, .. } => qtype,
            _ => 0,
        };
        let (len, rcode) = resolve_slow(
            &zone,
            &shared2.forwarder,
            &packet,
            &client,
            outcome,
            &mut out,
        )
        .await;
        if len > 0 {
            shared2.metrics.record(
                Proto::Udp,
                qtype,
                rcode,
                started.elapsed().as_nanos() as u64,
            );
            let _ = sock.send_to(&out[..len], peer);
        }
    });
}

async fn tcp_accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if shared.tcp_connections.fetch_add(1, Ordering::Relaxed) >= shared.tcp_max_connections {
                    shared.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                    continue; // Over the cap: close at once.
                }
                let shared = shared.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _ = tcp_connection(stream, peer, &shared, stop).await;
                    shared.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true).ok();
    let client = shared.client(peer.ip(), true);
    let mut packet = vec![0u8; 65535];
    let mut out = vec![0u8; 65537];
    loop {
        let len = tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = tokio::time::timeout(shared.tcp_idle, stream.read_u16()) => match r {
                Ok(Ok(len)) => len as usize,
                _ => return Ok(()), // Idle timeout, EOF or error.
            },
        };
        tokio::time::timeout(shared.tcp_idle, stream.read_exact(&mut packet[..len]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let started = Instant::now();
        let zone = shared.zone.load_full();
        let query = &packet[..len];
        let (n, qtype, rcode) = match answer(&zone, query, &client, &mut out[2..]) {
            Outcome::Reply { len, qtype, rcode } => (len, qtype, rcode),
            Outcome::Drop => return Ok(()),
            slow => {
                let qtype = match slow {
                    Outcome::Forward { qtype } | Outcome::Chase { qtype, .. } => qtype,
                    _ => 0,
                };
                let (n, rcode) = resolve_slow(
                    &zone,
                    &shared.forwarder,
                    query,
                    &client,
                    slow,
                    &mut out[2..],
                )
                .await;
                (n, qtype, rcode)
            }
        };
        if n == 0 {
            return Ok(());
        }
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        shared.metrics.record(
            Proto::Tcp,
            qtype,
            rcode,
            started.elapsed().as_nanos() as u64,
        );
        tokio::time::timeout(shared.tcp_idle, stream.write_all(&out[..n + 2]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let cases = [
            ("10.244.0.0/16", "10.244.3.4", true),
            ("10.244.0.0/16", "10.245.0.1", false),
            ("10.96.0.0/12", "10.111.255.255", true),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "10.0.0.1", false),
        ];
        for (cidr, ip, want) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{cidr} {ip}");
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
