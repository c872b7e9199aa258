//! The query path allocates nothing: a counting allocator watches `answer` on every kind of
//! cluster answer (positive, negative, SRV with additionals, PTR, truncated, malformed).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hickory_proto::rr::RecordType::{self, *};
use muster_dns::{ClientInfo, Outcome, answer};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls on the measuring thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn answering_allocates_nothing() {
    let zone = common::zone();
    let cases: &[(&str, RecordType, bool)] = &[
        ("kubernetes.default.svc.cluster.local.", A, true),
        ("web.default.svc.cluster.local.", AAAA, true),
        ("_http._tcp.web.default.svc.cluster.local.", SRV, true),
        ("kube-dns.kube-system.svc.cluster.local.", SRV, false),
        ("web-0.web.default.svc.cluster.local.", A, false),
        ("1.0.244.10.in-addr.arpa.", PTR, true),
        ("nope.default.svc.cluster.local.", A, true),
        ("10-244-0-7.default.pod.cluster.local.", A, false),
        ("cluster.local.", NS, true),
        ("dns-version.cluster.local.", TXT, false),
        ("example.com.", A, true),
    ];
    let queries: Vec<Vec<u8>> = cases
        .iter()
        .enumerate()
        .map(|(i, (n, t, edns))| common::query(n, *t, i as u16, *edns))
        .chain([
            vec![0u8; 12],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        ])
        .collect();
    let mut out = vec![0u8; 65535];
    let client = ClientInfo {
        tcp: false,
        recursion: false,
    };
    COUNTING.with(|c| c.set(true));
    let mut replies = 0;
    for q in &queries {
        if let Outcome::Reply { .. } = answer(&zone, q, &client, &mut out) {
            replies += 1;
        }
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(replies, queries.len());
    assert_eq!(ALLOCATIONS.with(|a| a.get()), 0, "the query path allocated");
}
