//! Leader election on a coordination.k8s.io Lease: with several `muster controllers`
//! processes, only the holder acts. The decision is pure; `hold` does the IO.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::driver::is_status;
use crate::util::Timestamp;

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            namespace: "kube-system".into(),
            name: "muster-controllers".into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Write this spec (create the lease, renew ours, or take over an expired one).
    Write(LeaseSpec),
    /// Someone else holds a valid lease.
    Wait,
}

/// Whether `me` may take or keep the lease at `now`.
pub fn decide(
    current: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> Decision {
    let secs = duration.as_secs().max(1) as i32;
    let fresh = |transitions: i32, acquired: Timestamp| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(spec) = current else {
        return Decision::Write(fresh(0, now));
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder == me {
        let acquired = spec.acquire_time.as_ref().map(|t| t.0).unwrap_or(now);
        return Decision::Write(fresh(transitions, acquired));
    }
    let expires = spec
        .renew_time
        .as_ref()
        .map(|t| t.0.as_millisecond() + spec.lease_duration_seconds.unwrap_or(secs) as i64 * 1000)
        .unwrap_or(i64::MIN);
    if holder.is_empty() || expires <= now.as_millisecond() {
        Decision::Write(fresh(transitions + 1, now))
    } else {
        Decision::Wait
    }
}

/// One attempt to take or renew the lease; Ok(true) if we hold it afterwards.
pub async fn try_acquire(client: &Client, le: &LeaderElection, me: &str) -> anyhow::Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    let current = api.get_opt(&le.name).await?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        me,
        Timestamp::now(),
        le.lease_duration,
    );
    let Decision::Write(spec) = decision else {
        return Ok(false);
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(le.name.clone()),
                    namespace: Some(le.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            // The resourceVersion makes this a compare-and-swap: two contenders cannot both win.
            lease.spec = Some(spec);
            api.replace(&le.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_status(&e, 409) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until this process holds the lease.
pub async fn acquire(client: &Client, le: &LeaderElection, me: &str) {
    loop {
        match try_acquire(client, le, me).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: lease request failed"),
        }
        tokio::time::sleep(le.renew_interval).await;
    }
}

/// Renews the lease until a renewal fails for longer than the lease lasts; then returns, and
/// the caller must stop acting.
pub async fn keep(client: &Client, le: &LeaderElection, me: &str) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(le.renew_interval).await;
        match try_acquire(client, le, me).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "leader election: renewal failed");
                // Stop a little before the lease could expire for the others.
                if last_ok.elapsed() + le.renew_interval >= le.lease_duration {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn held(by: &str, renewed: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn decide_table() {
        let d = Duration::from_secs(15);
        let holder = |dec: &Decision| match dec {
            Decision::Write(s) => Some((
                s.holder_identity.clone().unwrap(),
                s.lease_transitions.unwrap(),
            )),
            Decision::Wait => None,
        };
        type Case = (Option<LeaseSpec>, i64, Option<(String, i32)>);
        let cases: Vec<Case> = vec![
            (None, 0, Some(("me".into(), 0))),
            (Some(held("me", 0, 2)), 5, Some(("me".into(), 2))),
            (Some(held("other", 0, 2)), 5, None),
            (Some(held("other", 0, 2)), 14, None),
            (Some(held("other", 0, 2)), 15, Some(("me".into(), 3))),
            (Some(held("", 0, 0)), 1, Some(("me".into(), 1))),
        ];
        for (current, now, want) in cases {
            let got = decide(current.as_ref(), "me", at(now), d);
            assert_eq!(holder(&got), want, "{current:?} at {now}");
        }
        // Renewal keeps the acquire time and moves the renew time.
        let Decision::Write(s) = decide(Some(&held("me", 0, 1)), "me", at(7), d) else {
            panic!()
        };
        assert_eq!(s.acquire_time.unwrap().0, at(0));
        assert_eq!(s.renew_time.unwrap().0, at(7));
    }
}
