//! The operator's API client: kube's default stack, with every request counted by verb in
//! [`Metrics::api_requests`] (what a change costs is measured, not guessed).

use std::sync::Arc;

use http::Method;
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;
use crate::{Error, KubeError};

/// The verb of a request, as the API server's audit log names it (`list` and `get` differ
/// by path, which is not parsed here: both are `get`).
pub fn verb(method: &Method, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
    match *method {
        Method::GET if watching => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// The resource a request is about (its status subresource apart), among those the
/// operator uses; `other` for any else.
pub fn resource(path: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "projects",
        "mirrors",
        "sponsors",
        "regionrules",
        "jobs",
        "leases",
        "events",
    ];
    const STATUS: [&str; 4] = [
        "projects/status",
        "mirrors/status",
        "sponsors/status",
        "regionrules/status",
    ];
    let mut parts = path.trim_matches('/').split('/');
    // …/namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]
    let Some(_) = parts.by_ref().position(|p| p == "namespaces") else {
        return "other";
    };
    let _namespace = parts.next();
    let (Some(res), _name, sub) = (parts.next(), parts.next(), parts.next()) else {
        return "other";
    };
    let Some(i) = KNOWN.iter().position(|k| *k == res) else {
        return "other";
    };
    match sub {
        Some("status") if i < STATUS.len() => STATUS[i],
        _ => KNOWN[i],
    }
}

/// A client for `config` counting its requests in `metrics`, by verb and by resource.
pub fn counted(config: Config, metrics: Arc<Metrics>) -> Result<Client, Error> {
    let count = MapRequestLayer::new(move |req: http::Request<Body>| {
        metrics
            .api_requests
            .inc(verb(req.method(), req.uri().query()));
        metrics
            .api_requests_by_resource
            .inc(resource(req.uri().path()));
        req
    });
    let builder = ClientBuilder::try_from(config).map_err(|e| Error::Kube {
        doing: "build the API client".into(),
        source: KubeError(e),
    })?;
    Ok(builder.with_layer(&count).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_method_and_watch() {
        assert_eq!(
            verb(&Method::GET, Some("labelSelector=a&watch=true")),
            "watch"
        );
        assert_eq!(verb(&Method::GET, Some("watch=false")), "get");
        assert_eq!(verb(&Method::GET, None), "get");
        assert_eq!(verb(&Method::PATCH, None), "patch");
        assert_eq!(verb(&Method::POST, None), "create");
        assert_eq!(verb(&Method::DELETE, None), "delete");
    }

    #[test]
    fn resources_are_named_from_the_path() {
        let ns = "/apis/mirrorfleet.io/v1alpha1/namespaces/fleet";
        assert_eq!(resource(&format!("{ns}/mirrors")), "mirrors");
        assert_eq!(resource(&format!("{ns}/mirrors/m1")), "mirrors");
        assert_eq!(
            resource(&format!("{ns}/mirrors/m1/status")),
            "mirrors/status"
        );
        assert_eq!(
            resource("/apis/coordination.k8s.io/v1/namespaces/fleet/leases/op"),
            "leases"
        );
        assert_eq!(
            resource("/apis/batch/v1/namespaces/fleet/jobs/j/status"),
            "jobs"
        );
        assert_eq!(resource("/api/v1/namespaces/fleet/secrets"), "other");
        assert_eq!(resource("/version"), "other");
    }
}
