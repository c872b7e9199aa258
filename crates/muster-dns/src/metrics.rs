//! Metrics. The query path only increments atomics in fixed arrays (no lock, no allocation,
//! no label hashing); a [`Collector`] turns them into Prometheus text at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire::rtype;

/// Query types with their own label; everything else is `other`.
const QTYPES: [(u16, &str); 11] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::SRV, "SRV"),
    (rtype::PTR, "PTR"),
    (rtype::TXT, "TXT"),
    (rtype::SOA, "SOA"),
    (rtype::NS, "NS"),
    (rtype::CNAME, "CNAME"),
    (rtype::MX, "MX"),
    (rtype::ANY, "ANY"),
    (0, "other"),
];
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp = 0,
    Tcp = 1,
}
const PROTOS: [&str; 2] = ["udp", "tcp"];
/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_US: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000, 1000000,
];

#[derive(Debug)]
pub struct Metrics {
    requests: [[[AtomicU64; 2]; RCODES.len()]; QTYPES.len()],
    latency_buckets: [AtomicU64; LATENCY_US.len() + 1],
    latency_sum_ns: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub loops_detected: AtomicU64,
    pub dropped: AtomicU64,
    /// DNS programming latency (slice trigger time → in a published snapshot), by service kind.
    pub programming_cluster_ip: Histogram,
    pub programming_headless: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            latency_buckets: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            forward_failures: AtomicU64::new(0),
            loops_detected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            // From 1 ms, doubling, 20 buckets: the CoreDNS metric's buckets.
            programming_cluster_ip: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            programming_headless: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
        }
    }
}

impl Metrics {
    #[inline]
    pub fn record(&self, proto: Proto, qtype: u16, rcode: u8, nanos: u64) {
        let t = QTYPES
            .iter()
            .position(|&(t, _)| t == qtype)
            .unwrap_or(QTYPES.len() - 1);
        let r = (rcode as usize).min(RCODES.len() - 1);
        self.requests[t][r][proto as usize].fetch_add(1, Relaxed);
        let us = nanos / 1000;
        let b = LATENCY_US
            .iter()
            .position(|&u| us <= u)
            .unwrap_or(LATENCY_US.len());
        self.latency_buckets[b].fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(nanos, Relaxed);
    }

    /// Total requests counted so far.
    pub fn total_requests(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .flatten()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// A registry with these metrics under the `muster_dns_` prefix.
    pub fn registry(self: &std::sync::Arc<Self>) -> Registry {
        let mut reg = Registry::with_prefix("muster_dns");
        reg.register(
            "programming_duration_seconds_cluster_ip",
            "Time from an EndpointSlice change (last-change-trigger-time) to the answer, ClusterIP services",
            self.programming_cluster_ip.clone(),
        );
        reg.register(
            "programming_duration_seconds_headless",
            "Time from an EndpointSlice change (last-change-trigger-time) to the answer, headless services",
            self.programming_headless.clone(),
        );
        reg.register_collector(Box::new(QueryCollector(self.clone())));
        reg
    }
}

#[derive(Debug)]
struct QueryCollector(std::sync::Arc<Metrics>);

impl Collector for QueryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        {
            let mut family = encoder.encode_descriptor(
                "requests",
                "DNS requests answered, by query type, rcode and transport",
                None,
                MetricType::Counter,
            )?;
            for (t, (_, tname)) in QTYPES.iter().enumerate() {
                for (r, rname) in RCODES.iter().enumerate() {
                    for (p, pname) in PROTOS.iter().enumerate() {
                        let v = m.requests[t][r][p].load(Relaxed);
                        if v == 0 {
                            continue;
                        }
                        let labels = [("type", *tname), ("rcode", *rname), ("proto", *pname)];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                    }
                }
            }
        }
        {
            // The encoder wants per-bucket counts and accumulates them itself.
            let mut total = 0;
            let mut buckets = Vec::with_capacity(LATENCY_US.len() + 1);
            for (i, c) in m.latency_buckets.iter().enumerate() {
                let v = c.load(Relaxed);
                total += v;
                let upper = LATENCY_US.get(i).map_or(f64::INFINITY, |&u| u as f64 / 1e6);
                buckets.push((upper, v));
            }
            let sum = m.latency_sum_ns.load(Relaxed) as f64 / 1e9;
            let enc = encoder.encode_descriptor(
                "request_duration_seconds",
                "Time to answer a query (per receive batch for UDP)",
                None,
                MetricType::Histogram,
            )?;
            let mut enc = enc;
            enc.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
        }
        for (name, help, v) in [
            ("forwarded", "Queries forwarded upstream", &m.forwarded),
            (
                "forward_failures",
                "Forwarded queries no upstream answered",
                &m.forward_failures,
            ),
            (
                "loops_detected",
                "Forwarded queries that came back to this server",
                &m.loops_detected,
            ),
            ("dropped", "Packets dropped without an answer", &m.dropped),
        ] {
            let mut enc = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            enc.encode_counter::<NoLabelSet, _, u64>(&v.load(Relaxed), None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_encodes() {
        let m = std::sync::Arc::new(Metrics::default());
        m.record(Proto::Udp, rtype::A, 0, 20_000);
        m.record(Proto::Tcp, 999, 3, 2_000_000);
        m.record(Proto::Udp, rtype::A, 0, 1_000);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        for want in [
            r#"muster_dns_requests_total{type="A",rcode="NOERROR",proto="udp"} 2"#,
            r#"muster_dns_requests_total{type="other",rcode="NXDOMAIN",proto="tcp"} 1"#,
            "muster_dns_request_duration_seconds_count 3",
            r#"muster_dns_request_duration_seconds_bucket{le="0.000025"} 2"#,
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert_eq!(m.total_requests(), 3);
    }
}
