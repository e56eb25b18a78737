//! The baseline of `scripts/bench-redirect`: a bare hyper server (same runtime, same HTTP
//! stack) that answers every request with a fixed 302, so the redirector's request rate can be
//! compared with what the machine and hyper allow.
//!
//! Usage: bench-baseline ADDR

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: bench-baseline ADDR")?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::FOUND;
                r.headers_mut().insert(
                    "location",
                    hyper::header::HeaderValue::from_static(
                        "https://mirror.example/bench/pool/main/1/pkg1.deb",
                    ),
                );
                Ok::<_, Infallible>(r)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
