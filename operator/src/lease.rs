//! Leader election with a `coordination.k8s.io/v1` Lease, so that two or more replicas are
//! safe: only the holder reconciles, probes and schedules scans. The holder renews every
//! `renew_every`; another replica takes over once `lease_duration` has passed without a
//! renewal (it looks again just after that moment), or at its next look when the holder
//! released the lease on shutdown. Every write is a replace carrying the `resourceVersion` read, so two replicas
//! racing for an expired lease cannot both win (the loser gets 409 and looks again).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use mirrorfleet_runtime::error_chain;

use crate::KubeError;

/// What to do with the lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it, holding it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// Its holder stopped renewing (or there is none): take it.
    TakeOver,
    /// Someone else holds it.
    Wait {
        /// The holder.
        holder: String,
        /// How long until it expires unless renewed.
        expires_in: Duration,
    },
}

/// Decides from the lease as read — pure.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp, duration: Duration) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Decision::TakeOver
        } else {
            Decision::Create
        };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .map_or(duration, |s| Duration::from_secs(s.max(1) as u64));
    let left = match &spec.renew_time {
        None => None,
        Some(MicroTime(t)) => {
            let age = now.duration_since(*t).as_secs_f64();
            (age <= duration.as_secs_f64())
                .then(|| Duration::from_secs_f64(duration.as_secs_f64() - age.max(0.0)))
        }
    };
    match left {
        Some(expires_in) if !holder.is_empty() => Decision::Wait {
            holder: holder.to_owned(),
            expires_in,
        },
        _ => Decision::TakeOver,
    }
}

/// What one look at the lease gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// This replica holds it.
    Held,
    /// Another one does, for this long unless it renews.
    Wait(Duration),
}

/// One replica's side of the election.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    /// A holder silent for this long has lost the lease.
    pub lease_duration: Duration,
    /// How often the holder renews (and a standby looks).
    pub renew_every: Duration,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Elector {
    /// An elector for lease `name` through `api`, as `me` (the pod name).
    pub fn new(api: Api<Lease>, name: &str, me: &str) -> Elector {
        Elector {
            api,
            name: name.to_owned(),
            me: me.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// Reads the lease, acts on it once; returns whether this replica holds it now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        Ok(self.poll().await? == Poll::Held)
    }

    /// Reads the lease, acts on it once; says whether this replica holds it now, or how long
    /// the other holder has left.
    pub async fn poll(&self) -> Result<Poll, kube::Error> {
        let lease = self.api.get_opt(&self.name).await?;
        let now = Timestamp::now();
        let decision = decide(lease.as_ref(), &self.me, now, self.lease_duration);
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let result = match (decision, lease) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(0, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec = Some(spec(old.lease_transitions.unwrap_or(0), old.acquire_time));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                tracing::info!(previous = ?old.holder_identity, "taking over the leader lease");
                lease.spec = Some(spec(old.lease_transitions.unwrap_or(0) + 1, None));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Wait { expires_in, .. }, _) => return Ok(Poll::Wait(expires_in)),
            (_, None) => return Ok(Poll::Wait(Duration::ZERO)),
        };
        match result {
            Ok(_) => Ok(Poll::Held),
            // Another replica wrote first: not ours this time.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Poll::Wait(Duration::ZERO)),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease: looks again every `renew_every`, or just
    /// after the holder's lease would expire if that is sooner (a leader that died is
    /// replaced one lease duration after its last renewal, not up to a period later).
    pub async fn acquire(&self) {
        loop {
            let wait = match self.poll().await {
                Ok(Poll::Held) => {
                    tracing::info!(lease = %self.name, holder = %self.me, "leading");
                    return;
                }
                Ok(Poll::Wait(left)) => left + Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&KubeError(e)), "cannot read or write the leader lease");
                    self.renew_every
                }
            };
            tokio::time::sleep(wait.min(self.renew_every)).await;
        }
    }

    /// Gives the lease up (on shutdown), so that a standby takes over at its next look
    /// instead of a lease duration later. Best effort: a failure is logged.
    pub async fn release(&self) {
        let released = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match released.await {
            Ok(()) => tracing::info!(lease = %self.name, "leader lease released"),
            Err(e) => {
                tracing::warn!(error = %error_chain(&KubeError(e)), "cannot release the leader lease")
            }
        }
    }

    /// Renews the lease until it is lost (another holder, or no successful renewal for a
    /// whole lease duration); then returns.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "leadership lost to another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&KubeError(e)), "cannot renew the leader lease");
                    if last_ok.elapsed() >= self.lease_duration {
                        tracing::warn!(lease = %self.name, "leadership lost: not renewed in time");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: Option<i64>, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: renewed_secs_ago
                    .map(|s| MicroTime(now - k8s_openapi::jiff::SignedDuration::from_secs(s))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::now();
        let d = Duration::from_secs(15);
        let wait = |h: &str| Decision::Wait {
            holder: h.into(),
            expires_in: Duration::ZERO,
        };
        let cases = [
            ("no lease", None, Decision::Create),
            (
                "mine",
                Some(lease(Some("me"), Some(3), now)),
                Decision::Renew,
            ),
            (
                "mine, even stale",
                Some(lease(Some("me"), Some(60), now)),
                Decision::Renew,
            ),
            (
                "other, fresh",
                Some(lease(Some("b"), Some(3), now)),
                wait("b"),
            ),
            (
                "other, just within",
                Some(lease(Some("b"), Some(14), now)),
                wait("b"),
            ),
            (
                "other, expired",
                Some(lease(Some("b"), Some(16), now)),
                Decision::TakeOver,
            ),
            (
                "other, never renewed",
                Some(lease(Some("b"), None, now)),
                Decision::TakeOver,
            ),
            (
                "released",
                Some(lease(None, Some(1), now)),
                Decision::TakeOver,
            ),
        ];
        for (name, l, want) in cases {
            // How long is left is checked below; here, what to do.
            let got = match decide(l.as_ref(), "me", now, d) {
                Decision::Wait { holder, .. } => Decision::Wait {
                    holder,
                    expires_in: Duration::ZERO,
                },
                other => other,
            };
            assert_eq!(got, want, "{name}");
        }
        let Decision::Wait { expires_in, .. } =
            decide(Some(&lease(Some("b"), Some(3), now)), "me", now, d)
        else {
            panic!("a fresh lease of b is waited for");
        };
        assert!(
            (11.9..=12.1).contains(&expires_in.as_secs_f64()),
            "{expires_in:?}"
        );
    }
}
