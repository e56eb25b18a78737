//! Standalone's admin listener: `POST /-/publish/<project>` with a bearer token asks for the
//! project's source to be indexed at once (what `mirrorfleet publish` calls after an archive
//! script has written new files).
//!
//! It must not serve downloads or anything public; it never says whether a project exists
//! to a caller without the token; the token is compared in constant time.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Publisher;

/// The path prefix of publish requests.
pub const PUBLISH: &str = "/-/publish/";

/// Answers admin requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, token: Arc<str>, publisher: Publisher) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener: cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (token, publisher) = (token.clone(), publisher.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = answer(&req, &token, &publisher);
                async move { Ok::<_, Infallible>(answer) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

/// The answer to one admin request. Pure but for the publish it asks for.
fn answer<B>(req: &Request<B>, token: &str, publisher: &Publisher) -> Response<Full<Bytes>> {
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a bearer token is needed (Authorization: Bearer <the --admin-token-file's token>)\n",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let Some(project) = req.uri().path().strip_prefix(PUBLISH) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "no such endpoint: {}; POST {PUBLISH}<project>\n",
                req.uri().path()
            ),
        );
    };
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} {PUBLISH}{project}: use POST\n", req.method()),
        );
    }
    if publisher.publish(project) {
        text(
            StatusCode::ACCEPTED,
            &format!("indexing project {project} now\n"),
        )
    } else {
        text(
            StatusCode::NOT_FOUND,
            &format!("no project named {project:?} in the fleet\n"),
        )
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the admin token from `path`: its first line, which must not be empty.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<Arc<str>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the admin token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        anyhow::bail!(
            "the admin token file {} is empty: put a secret on its first line",
            path.display()
        );
    }
    Ok(Arc::from(token))
}
