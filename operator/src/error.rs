//! The operator's one error type, and kube's errors made fit for a cause chain.
//!
//! A message says what this crate was doing (which object, which request); what went wrong
//! underneath is the `#[source]`, never repeated in the message, so that
//! [`mirrorfleet_runtime::error_chain`] prints every cause once. It must not format a cause
//! into a message.

use std::fmt;

/// What can go wrong in a reconcile, the scan scheduler, the Git sync or the operator's run
/// (the label of the errors metric is [`Error::label`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("cannot {doing}")]
    Kube {
        /// What was being done, e.g. `apply the status of Mirror m1`.
        doing: String,
        /// The cause.
        #[source]
        source: KubeError,
    },
    /// The store failed.
    #[error("cannot {doing}")]
    Store {
        /// What was being done, e.g. `write the fleet state`.
        doing: String,
        /// The cause.
        #[source]
        source: mirrorfleet_store::Error,
    },
    /// The metrics and probes address cannot be listened on.
    #[error("cannot listen on {addr} for /metrics and the probes")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The caches are not filled yet.
    #[error("the resource caches are not ready yet")]
    NotReady,
    /// A controller's watch stream ended.
    #[error("the controllers stopped")]
    ControllersStopped,
    /// Another replica holds the Lease now.
    #[error("leadership lost; exiting so that another replica leads")]
    LeadershipLost,
}

impl Error {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Store { .. } => "store",
            Error::Listen { .. } => "listen",
            Error::NotReady => "not_ready",
            Error::ControllersStopped => "controllers_stopped",
            Error::LeadershipLost => "leadership_lost",
        }
    }

    /// An API request that failed while doing `doing`.
    pub fn kube(doing: impl Into<String>, source: kube::Error) -> Error {
        Error::Kube {
            doing: doing.into(),
            source: KubeError(source),
        }
    }

    /// A store operation that failed while doing `doing`.
    pub fn store(doing: impl Into<String>, source: mirrorfleet_store::Error) -> Error {
        Error::Store {
            doing: doing.into(),
            source,
        }
    }
}

/// An error of kube's (client or runtime) as a link of a cause chain.
///
/// kube's messages already end with their cause's (`ApiError: {0} ({0:?})`, `HyperError:
/// {0}`, `event queue error: {0}`) and name it as their source too, so walking the chain
/// would print it twice. Here the source is the first cause that the message does not
/// already include: the chain goes on below it (a connection's I/O error, say), each
/// cause once.
#[derive(Debug)]
pub struct KubeError<E = kube::Error>(pub E);

impl<E: fmt::Display> fmt::Display for KubeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for KubeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            if !shown.contains(&c.to_string()) {
                return Some(c);
            }
            cause = c.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mirrorfleet_runtime::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("connection closed")]
    struct Closed(#[source] std::io::Error);

    #[test]
    fn kube_causes_are_printed_once() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "jobs.batch is forbidden"
        }))
        .unwrap();
        let api = kube::Error::Api(Box::new(status));
        // kube's message already holds its cause (the Status, twice: Display and Debug).
        let kube_says = api.to_string();
        assert!(
            kube_says.starts_with("ApiError: jobs.batch is forbidden: Forbidden (Status {"),
            "{kube_says}"
        );
        let e = Error::kube("list the scan Jobs", api);
        assert_eq!(
            error_chain(&e),
            format!("cannot list the scan Jobs: {kube_says}"),
            "kube's message once, its cause not again"
        );
        assert_eq!(e.label(), "kube");

        // Below what kube's message names, the chain goes on.
        let service =
            kube::Error::Service(Box::new(Closed(std::io::Error::other("reset by peer"))));
        let chain = error_chain(&Error::kube("create Job j", service));
        assert_eq!(
            chain,
            "cannot create Job j: ServiceError: connection closed: reset by peer"
        );
    }

    #[test]
    fn store_causes_are_the_source() {
        let e = Error::store(
            "write the fleet state",
            mirrorfleet_store::Error::Io {
                path: "/var/lib/mirrorfleet/state".into(),
                what: "append",
                source: std::io::Error::other("disk full"),
            },
        );
        assert_eq!(
            error_chain(&e),
            "cannot write the fleet state: embedded store /var/lib/mirrorfleet/state: append: disk full"
        );
        assert_eq!(e.label(), "store");
    }
}
