//! The zone snapshot: cluster data in the compact form the query engine reads.
//!
//! [`ZoneBuilder`] owns the converted API objects and applies watch deltas to them. Each delta
//! marks the services it touches dirty; [`ZoneBuilder::publish`] rebuilds only those services and
//! returns a new [`Zone`]. A `Zone` is a set of `Arc`-shared shards, so a new snapshot copies only
//! the shards that changed and readers of the old one are never blocked (they hold their `Arc`).
//!
//! Decisions recorded here:
//! - Only the first address of an EndpointSlice endpoint is used. The API documents that
//!   consumers may do so ("assumed to be fungible"), the controller writes exactly one, and it
//!   keeps each endpoint small.
//! - An endpoint is ready unless `conditions.ready` is `false` (nil counts as ready, as in
//!   CoreDNS #4632). `serving` and `terminating` are kept only to explain answers.
//! - Slices are joined to services by the `kubernetes.io/service-name` label; slices whose
//!   service does not exist (yet) are kept and take effect when it appears.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::wire::encode_name;

/// The label that joins an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Set by the EndpointSlice controller: when the change that caused this slice version happened.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// How `a-b-c-d.<ns>.pod.<zone>` names answer (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodMode {
    /// No pod records: NXDOMAIN.
    Disabled,
    /// Answer the IP written in the name if the namespace exists (kubeadm's `pods insecure`).
    #[default]
    Insecure,
    /// Answer only if a pod in that namespace has that IP (needs the pod watch).
    Verified,
}

/// Settings fixed for the life of a server.
#[derive(Clone, Debug)]
pub struct ZoneSettings {
    /// Cluster domain without the trailing dot, e.g. `cluster.local`.
    pub domain: String,
    /// TTL of every cluster record and the SOA MINIMUM (negative-caching time).
    pub ttl: u32,
    /// Addresses of the DNS server itself: glue for `ns.dns.<zone>`.
    pub dns_ips: Vec<IpAddr>,
    pub pods: PodMode,
}

impl Default for ZoneSettings {
    fn default() -> Self {
        ZoneSettings {
            domain: "cluster.local".into(),
            ttl: 5,
            dns_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
            pods: PodMode::Insecure,
        }
    }
}

/// Settings in the form the query path uses.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub settings: ZoneSettings,
    /// Lower-case wire form of the domain, with the root label.
    pub zone_wire: Box<[u8]>,
}

impl Compiled {
    fn new(settings: ZoneSettings) -> anyhow::Result<Self> {
        let zone_wire = encode_name(&settings.domain)
            .filter(|w| w.len() > 1)
            .ok_or_else(|| anyhow::anyhow!("invalid cluster domain {:?}", settings.domain))?;
        anyhow::ensure!(settings.ttl <= 3600, "ttl must be at most 3600 seconds");
        Ok(Compiled {
            settings,
            zone_wire: zone_wire.into(),
        })
    }
}

/// A fast, seeded hasher for short keys (FxHash-style multiply-rotate). The per-process random
/// seed keeps names chosen by cluster users from being engineered into collisions.
#[derive(Clone, Copy)]
pub struct FastHash(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for FastHash {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(FX_K);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(FX_K);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(FX_K);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(FX_K);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Clone, Copy)]
pub struct FastBuild(u64);

impl Default for FastBuild {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastBuild(*SEED.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(1);
            h.finish()
        }))
    }
}

impl BuildHasher for FastBuild {
    type Hasher = FastHash;
    #[inline]
    fn build_hasher(&self) -> FastHash {
        FastHash(self.0)
    }
}

pub type FastMap<K, V> = HashMap<K, V, FastBuild>;

const SHARDS: usize = 64;

/// A map split into `Arc`-shared shards: cloning it is 64 reference-count increments, and a
/// write copies only the one shard it touches (when a published snapshot still shares it).
#[derive(Clone)]
pub(crate) struct Shards<K, V> {
    shards: Box<[Arc<FastMap<K, V>>]>,
    hasher: FastBuild,
}

impl<K: Hash + Eq + Clone, V: Clone> Shards<K, V> {
    fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Arc::new(FastMap::default())).collect(),
            hasher: FastBuild::default(),
        }
    }
    #[inline]
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // Top bits: the inner map uses the low bits.
        (self.hasher.hash_one(key) >> 58) as usize % SHARDS
    }
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }
    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut FastMap<K, V> {
        let i = self.shard_of(key);
        Arc::make_mut(&mut self.shards[i])
    }
    fn insert(&mut self, key: K, value: V) {
        self.shard_mut(&key).insert(key, value);
    }
    fn remove<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.get(key).is_some() {
            self.shard_mut(key).remove(key);
        }
    }
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }
}

/// IP protocol of a port, as used in `_<port>._<proto>` labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn parse(p: Option<&str>) -> Proto {
        match p.map(|s| s.to_ascii_uppercase()).as_deref() {
            Some("UDP") => Proto::Udp,
            Some("SCTP") => Proto::Sctp,
            _ => Proto::Tcp,
        }
    }
    /// The label text without the underscore.
    pub fn label(self) -> &'static [u8] {
        match self {
            Proto::Tcp => b"tcp",
            Proto::Udp => b"udp",
            Proto::Sctp => b"sctp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortData {
    /// Lower-case port name; empty for an unnamed port.
    pub name: Box<str>,
    pub proto: Proto,
    pub port: u16,
}

/// One endpoint of a slice, reduced to what DNS needs: 22 bytes, no pointer (it is the unit
/// of scale; names live in the slice's sparse `names` list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointData {
    pub ip: IpAddr,
    /// `conditions.ready`, `serving`, `terminating` as sent (None = unset).
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    /// Whether the slice's `names` has an entry for this endpoint, and whether it is the hostname.
    named: bool,
    name_is_hostname: bool,
}

impl EndpointData {
    /// nil counts as ready (the EndpointSlice API: "unknown state ... should be interpreted as ready").
    pub fn is_ready(&self) -> bool {
        self.ready != Some(false)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceData {
    pub name: Box<str>,
    pub ports: Box<[PortData]>,
    pub endpoints: Box<[EndpointData]>,
    /// `(endpoint index, name)` sorted by index: the lower-case `hostname` (which replaces the
    /// dashed-IP name) or, for a not-ready endpoint without one, its pod (`targetRef.name`),
    /// kept to explain why it is left out.
    names: Box<[(u32, Box<str>)]>,
    /// `endpoints.kubernetes.io/last-change-trigger-time` as unix milliseconds.
    pub trigger_time_ms: Option<i64>,
}

impl SliceData {
    fn name_of(&self, i: usize) -> Option<&str> {
        if !self.endpoints.get(i)?.named {
            return None;
        }
        let at = self
            .names
            .binary_search_by_key(&(i as u32), |(j, _)| *j)
            .ok()?;
        Some(&self.names[at].1)
    }
    /// The `hostname` of endpoint `i`, if it has one.
    pub fn hostname(&self, i: usize) -> Option<&str> {
        self.name_of(i)
            .filter(|_| self.endpoints[i].name_is_hostname)
    }
    /// The pod behind not-ready endpoint `i` (without a hostname), if known.
    pub fn unready_pod(&self, i: usize) -> Option<&str> {
        self.name_of(i)
            .filter(|_| !self.endpoints[i].name_is_hostname)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp,
    Headless,
    /// Lower-case wire form of the target name; None when `externalName` is an IP or invalid
    /// (CoreDNS answers NXDOMAIN for those).
    ExternalName(Option<Box<[u8]>>),
}

/// A service as answered: its own data, its slices, and the addresses its name resolves to.
#[derive(Debug)]
pub struct ServiceData {
    pub namespace: Box<str>,
    pub name: Box<str>,
    /// Shared with the builder, which needs it to rebuild this service (one copy, not two).
    pub spec: Arc<ServiceSpec>,
    /// All slices labelled with this service, by slice name.
    pub slices: Box<[Arc<SliceData>]>,
    /// What `<svc>.<ns>.svc.<zone>` answers: the ClusterIPs, or the ready endpoint IPs (deduplicated).
    pub v4: Box<[[u8; 4]]>,
    pub v6: Box<[[u8; 16]]>,
}

/// `svc.kind`, `svc.cluster_ips` and `svc.ports` read through to the spec.
impl std::ops::Deref for ServiceData {
    type Target = ServiceSpec;
    fn deref(&self) -> &ServiceSpec {
        &self.spec
    }
}

impl ServiceData {
    /// Whether `<svc>.<ns>.svc.<zone>` exists at all. A headless service with no ready endpoint
    /// is NXDOMAIN (spec §2.4.1), as is an ExternalName that is an IP.
    pub fn name_exists(&self) -> bool {
        match &self.kind {
            ServiceKind::ClusterIp => true,
            ServiceKind::Headless => !(self.v4.is_empty() && self.v6.is_empty()),
            ServiceKind::ExternalName(target) => target.is_some(),
        }
    }
    /// Ready endpoints with their slice and index: `(slice, index, endpoint)`.
    pub fn ready_endpoints(&self) -> impl Iterator<Item = (&SliceData, usize, &EndpointData)> {
        self.slices
            .iter()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .enumerate()
                    .map(move |(i, e)| (&**s, i, e))
            })
            .filter(|(_, _, e)| e.is_ready())
    }
}

/// One thing that points at an IP, for PTR answers: 16 bytes for IPv4 (100k endpoints cost
/// 1.6 MB here, where a hash map of them cost over 4 MB).
#[derive(Clone, Debug)]
pub(crate) struct PtrEntry<K> {
    pub ip: K,
    /// `u32::MAX` for a ClusterIP; else `slice << 16 | endpoint`.
    pub at: u32,
    pub svc: Arc<ServiceData>,
}

impl<K> PtrEntry<K> {
    pub const CLUSTER_IP: u32 = u32::MAX;
    /// The endpoint this entry is for, with its slice and index (None for a ClusterIP).
    pub fn endpoint(&self) -> Option<(&SliceData, usize, &EndpointData)> {
        if self.at == Self::CLUSTER_IP {
            return None;
        }
        let slice = self.svc.slices.get((self.at >> 16) as usize)?;
        let i = (self.at & 0xffff) as usize;
        Some((slice, i, slice.endpoints.get(i)?))
    }
}

/// IP → PTR entries: 64 `Arc`-shared shards, each a Vec sorted by IP (copy-on-write like
/// [`Shards`]; a lookup is a binary search in about 1/64 of the entries).
#[derive(Clone)]
pub(crate) struct PtrIndex<K> {
    shards: Box<[Arc<Vec<PtrEntry<K>>>]>,
    hasher: FastBuild,
}

impl<K: Ord + Copy + Hash> PtrIndex<K> {
    fn new() -> Self {
        PtrIndex {
            shards: (0..SHARDS).map(|_| Arc::new(Vec::new())).collect(),
            hasher: FastBuild::default(),
        }
    }
    #[inline]
    fn shard_of(&self, ip: K) -> usize {
        (self.hasher.hash_one(ip) >> 58) as usize % SHARDS
    }
    /// Every entry for `ip` (empty if none).
    #[inline]
    pub fn get(&self, ip: K) -> &[PtrEntry<K>] {
        let v = &self.shards[self.shard_of(ip)];
        let start = v.partition_point(|e| e.ip < ip);
        let end = start + v[start..].partition_point(|e| e.ip == ip);
        &v[start..end]
    }
    fn add(&mut self, ip: K, at: u32, svc: &Arc<ServiceData>) {
        let i = self.shard_of(ip);
        let v = Arc::make_mut(&mut self.shards[i]);
        let pos = v.partition_point(|e| e.ip <= ip);
        v.insert(
            pos,
            PtrEntry {
                ip,
                at,
                svc: svc.clone(),
            },
        );
    }
    fn remove(&mut self, ip: K, at: u32, svc: &Arc<ServiceData>) {
        let i = self.shard_of(ip);
        let found = self
            .get(ip)
            .iter()
            .position(|e| e.at == at && Arc::ptr_eq(&e.svc, svc));
        if let Some(offset) = found {
            let v = Arc::make_mut(&mut self.shards[i]);
            let start = v.partition_point(|e| e.ip < ip);
            v.remove(start + offset);
        }
    }
}

/// Live pod IPs and the namespaces (labels) of the pods that have them.
pub(crate) type PodIps = HashMap<IpAddr, Vec<Box<[u8]>>, FastBuild>;

/// An immutable snapshot of everything the server answers from the cluster.
#[derive(Clone)]
pub struct Zone {
    pub(crate) compiled: Arc<Compiled>,
    /// False until every watch has listed once: cluster names answer SERVFAIL, never NXDOMAIN.
    pub(crate) synced: bool,
    pub(crate) serial: u32,
    /// Lower-case namespace names (label bytes).
    pub(crate) namespaces: Arc<HashSet<Box<[u8]>, FastBuild>>,
    /// Keyed by the wire labels `<svc><ns>` (lower-case), exactly as they sit in a query name.
    pub(crate) services: Shards<Box<[u8]>, Arc<ServiceData>>,
    pub(crate) ptr4: PtrIndex<u32>,
    pub(crate) ptr6: PtrIndex<u128>,
    /// `(namespace, ip)` of running pods, for [`PodMode::Verified`].
    pub(crate) pod_ips: Arc<PodIps>,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("domain", &self.compiled.settings.domain)
            .field("synced", &self.synced)
            .field("serial", &self.serial)
            .field("namespaces", &self.namespaces.len())
            .field("services", &self.services.len())
            .finish()
    }
}

/// `\x03svc\x02ns`: the map key of a service, the bytes a query name holds for it.
pub fn service_key(namespace: &str, name: &str) -> Box<[u8]> {
    let mut k = Vec::with_capacity(namespace.len() + name.len() + 2);
    for label in [name, namespace] {
        let label = &label.as_bytes()[..label.len().min(63)];
        k.push(label.len() as u8);
        k.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    k.into()
}

impl Zone {
    /// An empty, not yet synced zone: cluster names answer SERVFAIL.
    pub fn empty(settings: ZoneSettings) -> anyhow::Result<Zone> {
        Ok(Zone {
            compiled: Arc::new(Compiled::new(settings)?),
            synced: false,
            serial: 1,
            namespaces: Arc::default(),
            services: Shards::new(),
            ptr4: PtrIndex::new(),
            ptr6: PtrIndex::new(),
            pod_ips: Arc::default(),
        })
    }

    /// Builds a synced zone from complete lists of objects (tests, benchmarks, one-shot tools).
    pub fn from_objects(
        settings: ZoneSettings,
        namespaces: &[Namespace],
        services: &[Service],
        slices: &[EndpointSlice],
        pods: &[Pod],
    ) -> anyhow::Result<Zone> {
        let mut b = ZoneBuilder::new(settings)?;
        b.replace_namespaces(namespaces);
        b.replace_services(services);
        b.replace_slices(slices);
        b.replace_pods(pods);
        b.mark_synced();
        Ok(b.publish())
    }

    pub fn settings(&self) -> &ZoneSettings {
        &self.compiled.settings
    }
    pub fn is_synced(&self) -> bool {
        self.synced
    }
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceData>> {
        self.services.get(&*service_key(namespace, name))
    }
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .contains(namespace.to_ascii_lowercase().as_bytes())
    }
    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

/// A Service reduced to what DNS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub kind: ServiceKind,
    pub cluster_ips: Box<[IpAddr]>,
    /// `spec.ports` (SRV for ClusterIP services uses these numbers).
    pub ports: Box<[PortData]>,
}

/// `namespace/name`, lower-case, in one allocation (a pair of Strings cost 112 bytes per key,
/// and there are several keys per service).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key(Box<str>);

impl Key {
    fn new(ns: &str, name: &str) -> Key {
        let mut s = String::with_capacity(ns.len() + name.len() + 1);
        s.push_str(ns);
        s.push('/');
        s.push_str(name);
        s.make_ascii_lowercase();
        Key(s.into())
    }
    fn ns(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }
    fn name(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, n)| n)
    }
}

/// Owns the converted objects and turns watch deltas into snapshots.
pub struct ZoneBuilder {
    zone: Zone,
    specs: HashMap<Key, Arc<ServiceSpec>>,
    /// `(namespace, service)` → slices by name.
    /// Sorted by slice name (a Vec: a BTreeMap leaf per service cost ~360 bytes each).
    slices_of: HashMap<Key, Vec<Arc<SliceData>>>,
    /// `(namespace, slice)` → the service label it had.
    slice_owner: HashMap<Key, Box<str>>,
    namespaces: HashSet<String>,
    /// `(namespace, pod)` → IPs.
    pods: HashMap<Key, Vec<IpAddr>>,
    dirty: HashSet<Key>,
    namespaces_dirty: bool,
    pods_dirty: bool,
    /// Trigger times of slices applied since the last publish (for the programming-latency metric).
    pending_triggers: Vec<(i64, bool)>,
}

fn meta_key(ns: Option<&String>, name: Option<&String>) -> Option<Key> {
    Some(Key::new(ns?, name?))
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn convert_service(svc: &Service) -> ServiceSpec {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports: Box<[PortData]> = spec
        .ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some(PortData {
                name: p.name.as_deref().unwrap_or("").to_ascii_lowercase().into(),
                proto: Proto::parse(p.protocol.as_deref()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec
            .external_name
            .as_deref()
            .filter(|n| parse_ip(n).is_none())
            .and_then(encode_name)
            .filter(|w| w.len() > 1)
            .map(Into::into);
        return ServiceSpec {
            kind: ServiceKind::ExternalName(target),
            cluster_ips: Box::new([]),
            ports,
        };
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return ServiceSpec {
            kind: ServiceKind::Headless,
            cluster_ips: Box::new([]),
            ports,
        };
    }
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .unwrap_or_default()
        .iter()
        .filter_map(|s| parse_ip(s))
        .collect();
    if ips.is_empty()
        && let Some(ip) = spec.cluster_ip.as_deref().and_then(parse_ip)
    {
        ips.push(ip);
    }
    ServiceSpec {
        kind: ServiceKind::ClusterIp,
        cluster_ips: ips.into(),
        ports,
    }
}

fn convert_slice(slice: &EndpointSlice) -> SliceData {
    let ports = slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some(PortData {
                name: p.name.as_deref().unwrap_or("").to_ascii_lowercase().into(),
                proto: Proto::parse(p.protocol.as_deref()),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let mut names = Vec::new();
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let ip = e.addresses.first().and_then(|a| parse_ip(a))?;
            let cond = e.conditions.clone().unwrap_or_default();
            let ready = cond.ready;
            let hostname = e
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty() && h.len() <= 63)
                .map(|h| h.to_ascii_lowercase().into_boxed_str());
            let unready_pod = (ready == Some(false))
                .then(|| e.target_ref.as_ref().and_then(|t| t.name.as_deref()))
                .flatten()
                .map(Into::into);
            let name_is_hostname = hostname.is_some();
            let name = hostname.or(unready_pod);
            Some((ip, cond, name, name_is_hostname))
        })
        .enumerate()
        .map(|(i, (ip, cond, name, name_is_hostname))| {
            let named = name.is_some();
            if let Some(n) = name {
                names.push((i as u32, n));
            }
            EndpointData {
                ip,
                ready: cond.ready,
                serving: cond.serving,
                terminating: cond.terminating,
                named,
                name_is_hostname,
            }
        })
        .collect();
    let trigger_time_ms = slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    SliceData {
        name: slice
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase()
            .into(),
        ports,
        endpoints,
        names: names.into(),
        trigger_time_ms,
    }
}

impl ZoneBuilder {
    pub fn new(settings: ZoneSettings) -> anyhow::Result<Self> {
        Ok(ZoneBuilder {
            zone: Zone::empty(settings)?,
            specs: HashMap::new(),
            slices_of: HashMap::new(),
            slice_owner: HashMap::new(),
            namespaces: HashSet::new(),
            pods: HashMap::new(),
            dirty: HashSet::new(),
            namespaces_dirty: false,
            pods_dirty: false,
            pending_triggers: Vec::new(),
        })
    }

    /// From now on cluster names answer from data instead of SERVFAIL.
    pub fn mark_synced(&mut self) {
        self.zone.synced = true;
    }

    pub fn apply_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name {
            self.namespaces_dirty |= self.namespaces.insert(name.to_ascii_lowercase());
        }
    }
    pub fn delete_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name {
            self.namespaces_dirty |= self.namespaces.remove(&name.to_ascii_lowercase());
        }
    }
    /// A full re-list: the list replaces whatever was known.
    pub fn replace_namespaces(&mut self, list: &[Namespace]) {
        let new: HashSet<String> = list
            .iter()
            .filter_map(|n| n.metadata.name.as_ref().map(|s| s.to_ascii_lowercase()))
            .collect();
        if new != self.namespaces {
            self.namespaces = new;
            self.namespaces_dirty = true;
        }
    }

    pub fn apply_service(&mut self, svc: &Service) {
        let Some(key) = meta_key(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref())
        else {
            return;
        };
        let spec = convert_service(svc);
        if self.specs.get(&key).map(|s| &**s) != Some(&spec) {
            self.specs.insert(key.clone(), Arc::new(spec));
            self.dirty.insert(key);
        }
    }
    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = meta_key(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref())
            && self.specs.remove(&key).is_some()
        {
            self.dirty.insert(key);
        }
    }
    pub fn replace_services(&mut self, list: &[Service]) {
        let keep: HashSet<Key> = list
            .iter()
            .filter_map(|s| meta_key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()))
            .collect();
        let gone: Vec<Key> = self
            .specs
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.specs.remove(&key);
            self.dirty.insert(key);
        }
        for svc in list {
            self.apply_service(svc);
        }
    }

    fn slice_service(slice: &EndpointSlice) -> Option<String> {
        slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)
            .map(|s| s.to_ascii_lowercase())
    }

    fn remove_slice_key(&mut self, key: &Key) {
        if let Some(owner) = self.slice_owner.remove(key) {
            let svc_key = Key::new(key.ns(), &owner);
            if let Some(slices) = self.slices_of.get_mut(&svc_key) {
                slices.retain(|s| *s.name != *key.name());
                if slices.is_empty() {
                    self.slices_of.remove(&svc_key);
                }
            }
            self.dirty.insert(svc_key);
        }
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(key) = meta_key(
            slice.metadata.namespace.as_ref(),
            slice.metadata.name.as_ref(),
        ) else {
            return;
        };
        let Some(service) = Self::slice_service(slice) else {
            // Not (or no longer) owned by a service: forget it.
            self.remove_slice_key(&key);
            return;
        };
        let data = convert_slice(slice);
        let svc_key = Key::new(key.ns(), &service);
        if self.slice_owner.get(&key).is_some_and(|o| **o == *service)
            && self
                .slices_of
                .get(&svc_key)
                .and_then(|v| v.iter().find(|s| *s.name == *key.name()))
                .is_some_and(|old| **old == data)
        {
            return; // No DNS-visible change.
        }
        self.remove_slice_key(&key);
        if let Some(t) = data.trigger_time_ms {
            let headless = matches!(
                self.specs.get(&svc_key).map(|s| &s.kind),
                Some(ServiceKind::Headless)
            );
            self.pending_triggers.push((t, headless));
        }
        let list = self.slices_of.entry(svc_key.clone()).or_default();
        let at = list.partition_point(|s| *s.name < *key.name());
        list.insert(at, Arc::new(data));
        self.slice_owner.insert(key, service.into());
        self.dirty.insert(svc_key);
    }
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = meta_key(
            slice.metadata.namespace.as_ref(),
            slice.metadata.name.as_ref(),
        ) {
            self.remove_slice_key(&key);
        }
    }
    pub fn replace_slices(&mut self, list: &[EndpointSlice]) {
        let keep: HashSet<Key> = list
            .iter()
            .filter_map(|s| meta_key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()))
            .collect();
        let gone: Vec<Key> = self
            .slice_owner
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_slice_key(&key);
        }
        for s in list {
            self.apply_slice(s);
        }
    }

    fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
        let Some(status) = &pod.status else {
            return Vec::new();
        };
        // Finished pods no longer own their IP (CoreDNS's verified-mode field selector).
        if matches!(
            status.phase.as_deref(),
            Some("Succeeded" | "Failed" | "Unknown")
        ) {
            return Vec::new();
        }
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| parse_ip(&p.ip))
            .collect();
        if ips.is_empty()
            && let Some(ip) = status.pod_ip.as_deref().and_then(parse_ip)
        {
            ips.push(ip);
        }
        ips
    }
    pub fn apply_pod(&mut self, pod: &Pod) {
        if let Some(key) = meta_key(pod.metadata.namespace.as_ref(), pod.metadata.name.as_ref()) {
            let ips = Self::pod_ips(pod);
            if self.pods.get(&key) != Some(&ips) {
                self.pods.insert(key, ips);
                self.pods_dirty = true;
            }
        }
    }
    pub fn delete_pod(&mut self, pod: &Pod) {
        if let Some(key) = meta_key(pod.metadata.namespace.as_ref(), pod.metadata.name.as_ref()) {
            self.pods_dirty |= self.pods.remove(&key).is_some();
        }
    }
    pub fn replace_pods(&mut self, list: &[Pod]) {
        let new: HashMap<Key, Vec<IpAddr>> = list
            .iter()
            .filter_map(|p| {
                Some((
                    meta_key(p.metadata.namespace.as_ref(), p.metadata.name.as_ref())?,
                    Self::pod_ips(p),
                ))
            })
            .collect();
        if new != self.pods {
            self.pods = new;
            self.pods_dirty = true;
        }
    }

    /// Whether anything changed since the last publish.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.namespaces_dirty || self.pods_dirty
    }

    /// Trigger times (unix ms, headless?) of the slices changed since the last call.
    pub fn take_trigger_times(&mut self) -> Vec<(i64, bool)> {
        std::mem::take(&mut self.pending_triggers)
    }

    fn build_service(&self, key: &Key, spec: &Arc<ServiceSpec>) -> ServiceData {
        let slices: Box<[Arc<SliceData>]> = self
            .slices_of
            .get(key)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let mut push = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => v4.push(a.octets()),
            IpAddr::V6(a) => v6.push(a.octets()),
        };
        match spec.kind {
            ServiceKind::ClusterIp => spec.cluster_ips.iter().for_each(&mut push),
            ServiceKind::Headless => slices
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.is_ready())
                .for_each(|e| push(&e.ip)),
            ServiceKind::ExternalName(_) => {}
        }
        // Deduplicate but keep first-seen order (several slices may carry one IP).
        let mut seen4 = HashSet::with_capacity(v4.len());
        v4.retain(|a| seen4.insert(*a));
        let mut seen6 = HashSet::with_capacity(v6.len());
        v6.retain(|a| seen6.insert(*a));
        ServiceData {
            namespace: key.ns().into(),
            name: key.name().into(),
            spec: spec.clone(),
            slices,
            v4: v4.into(),
            v6: v6.into(),
        }
    }

    fn ptr_update(&mut self, svc: &Arc<ServiceData>, add: bool) {
        let mut refs: Vec<(IpAddr, u32)> = svc
            .cluster_ips
            .iter()
            .map(|ip| (*ip, PtrEntry::<u32>::CLUSTER_IP))
            .collect();
        if !matches!(svc.kind, ServiceKind::ExternalName(_)) {
            for (si, s) in svc.slices.iter().enumerate().take(0xffff) {
                for (ei, e) in s.endpoints.iter().enumerate().take(0xffff) {
                    if e.is_ready() {
                        refs.push((e.ip, ((si as u32) << 16) | ei as u32));
                    }
                }
            }
        }
        for (ip, at) in refs {
            match ip {
                IpAddr::V4(a) if add => self.zone.ptr4.add(u32::from(a), at, svc),
                IpAddr::V4(a) => self.zone.ptr4.remove(u32::from(a), at, svc),
                IpAddr::V6(a) if add => self.zone.ptr6.add(u128::from(a), at, svc),
                IpAddr::V6(a) => self.zone.ptr6.remove(u128::from(a), at, svc),
            }
        }
    }

    /// Applies the pending changes and returns the new snapshot.
    pub fn publish(&mut self) -> Zone {
        if self.namespaces_dirty {
            self.zone.namespaces = Arc::new(
                self.namespaces
                    .iter()
                    .map(|n| n.as_bytes().into())
                    .collect(),
            );
            self.namespaces_dirty = false;
        }
        if self.pods_dirty {
            let mut index = PodIps::default();
            for (key, ips) in &self.pods {
                for ip in ips {
                    index
                        .entry(*ip)
                        .or_default()
                        .push(key.ns().as_bytes().into());
                }
            }
            self.zone.pod_ips = Arc::new(index);
            self.pods_dirty = false;
        }
        let dirty: Vec<Key> = self.dirty.drain().collect();
        for key in dirty {
            let map_key = service_key(key.ns(), key.name());
            if let Some(old) = self.zone.services.get(&*map_key).cloned() {
                self.ptr_update(&old, false);
                self.zone.services.remove(&*map_key);
            }
            if let Some(spec) = self.specs.get(&key) {
                let data = Arc::new(self.build_service(&key, spec));
                self.ptr_update(&data, true);
                self.zone.services.insert(map_key, data);
            }
        }
        // SOA serial: seconds since the epoch, strictly increasing across publishes.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        self.zone.serial = now.max(self.zone.serial.wrapping_add(1));
        self.zone.clone()
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }
}

/// The CoreDNS per-endpoint name for an address without a hostname: the IP with `.`/`:` as `-`,
/// and a `0` appended when the result would end in `-` (e.g. `2001-db8--0`).
pub fn dashed_ip(ip: &IpAddr, buf: &mut [u8; 64]) -> usize {
    struct Cursor<'a>(&'a mut [u8; 64], usize);
    impl std::fmt::Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for b in s.bytes() {
                if self.1 >= self.0.len() {
                    return Err(std::fmt::Error);
                }
                self.0[self.1] = match b {
                    b'.' | b':' => b'-',
                    c => c.to_ascii_lowercase(),
                };
                self.1 += 1;
            }
            Ok(())
        }
    }
    let mut c = Cursor(buf, 0);
    let _ = std::fmt::write(&mut c, format_args!("{ip}"));
    let mut n = c.1;
    if n > 0 && n < 64 && buf[n - 1] == b'-' {
        buf[n] = b'0';
        n += 1;
    }
    n
}

/// Parses a dashed-IP label back to an address (pod names and endpoint names).
/// Exactly three dashes and no `--` is IPv4 (CoreDNS's rule); anything else is tried as IPv6.
pub fn parse_dashed_ip(label: &[u8]) -> Option<IpAddr> {
    if label.is_empty() || label.len() > 45 {
        return None;
    }
    let dashes = label.iter().filter(|&&c| c == b'-').count();
    let mut buf = [0u8; 45];
    let double = label.windows(2).any(|w| w == b"--");
    let sep = if dashes == 3 && !double { b'.' } else { b':' };
    for (d, &s) in buf.iter_mut().zip(label) {
        *d = if s == b'-' { sep } else { s };
    }
    let text = std::str::from_utf8(&buf[..label.len()]).ok()?;
    if sep == b'.' {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_names_match_coredns() {
        let cases = [
            ("10.11.12.13", "10-11-12-13"),
            (
                "2001:db8:3333:4444:5555:6666:7777:8888",
                "2001-db8-3333-4444-5555-6666-7777-8888",
            ),
            ("5678:abcd::1", "5678-abcd--1"),
            (
                "2001:db8:3333:4444:5555:6666::",
                "2001-db8-3333-4444-5555-6666--0",
            ),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0; 64];
            let n = dashed_ip(&ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), want);
            assert_eq!(parse_dashed_ip(want.as_bytes()), Some(ip), "{want}");
        }
        for bad in ["1-2-3", "a-b-c-d", "1-2-3-256", "", "1--2-3-4x"] {
            assert_eq!(parse_dashed_ip(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn per_endpoint_data_stays_small() {
        // 100k endpoints must fit the 15 MB data budget: no pointer per endpoint.
        assert!(std::mem::size_of::<EndpointData>() <= 24);
        assert!(std::mem::size_of::<PtrEntry<u32>>() <= 16);
    }

    #[test]
    fn shards_copy_on_write() {
        let mut a: Shards<u32, u32> = Shards::new();
        a.insert(1, 1);
        let snapshot = a.clone();
        a.insert(1, 2);
        a.insert(2, 2);
        assert_eq!(snapshot.get(&1), Some(&1));
        assert_eq!(snapshot.get(&2), None);
        assert_eq!(a.get(&1), Some(&2));
        a.remove(&1);
        assert_eq!(a.len(), 1);
    }
}
