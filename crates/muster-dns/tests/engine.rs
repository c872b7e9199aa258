//! The query table against the engine directly (no sockets).

mod common;

use muster_dns::{ClientInfo, Outcome, answer};

#[test]
fn query_table_engine() {
    let zone = common::zone();
    let mut out = vec![0u8; 65535];
    let mut failures = Vec::new();
    for (i, case) in common::cases().iter().enumerate() {
        for edns in [false, true] {
            let id = i as u16 + 1;
            let q = common::query(case.name, case.qtype, id, edns);
            let client = ClientInfo {
                tcp: false,
                recursion: false,
            };
            match answer(&zone, &q, &client, &mut out) {
                Outcome::Reply { len, .. } => {
                    if let Err(e) = common::check(case, &q, &out[..len]) {
                        failures.push(e);
                    }
                }
                other => failures.push(format!("{}: {other:?}", case.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
