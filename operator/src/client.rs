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

/// A client for `config` counting its requests in `metrics`.
pub fn counted(config: Config, metrics: Arc<Metrics>) -> Result<Client, Error> {
    let count = MapRequestLayer::new(move |req: http::Request<Body>| {
        metrics
            .api_requests
            .inc(verb(req.method(), req.uri().query()));
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
}
