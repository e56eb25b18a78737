//! What the operator's tests share: the resources they reconcile, caches filled with them, a
//! real Redis store, one request taken off tower-test's mock with a deadline, and
//! [`FakeApi`], a small API server on that mock for tests that run whole controllers.
//!
//! Test code only; every wait has a deadline whose message says what did not come.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use mirrorfleet_crds::v1alpha1::{Mirror, Project, Sponsor};
use mirrorfleet_store::{RedisConfig, RedisStore, RedisTarget};
use mirrorfleet_testkit::Redis;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::{Handle, SendResponse, pair};

pub type Mock = Handle<Request<Body>, Response<Body>>;

/// How long a test waits for a request it expects.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const NOW: i64 = 1_795_309_320;

pub fn now() -> i64 {
    NOW
}

pub fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "mirrorfleet.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

pub fn project() -> Project {
    object(
        "Project",
        "videolan",
        json!({"routing": {"pathPrefix": "/videolan/"}, "source": {"local": "/srv/videolan"}}),
    )
}

pub fn sponsor() -> Sponsor {
    object("Sponsor", "acme", json!({"displayName": "Acme"}))
}

pub fn mirror(name: &str, sponsor: &str) -> Mirror {
    object(
        "Mirror",
        name,
        json!({"sponsorRef": sponsor, "location": {"country": "FR"},
               "projects": [{"project": "videolan", "https": format!("https://{name}.example/videolan/")}]}),
    )
}

pub fn cache<K>(objects: Vec<K>) -> (reflector::Store<K>, reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
    (reader, writer)
}

/// A redis-server and a store on it (the server stops when the first is dropped).
pub async fn redis_store() -> (Redis, RedisStore) {
    let redis = Redis::start();
    let store = RedisStore::connect(RedisConfig::new(RedisTarget::Url(format!(
        "redis://127.0.0.1:{}/0",
        redis.port
    ))))
    .await
    .unwrap();
    (redis, store)
}

/// A request as the API server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    async fn of(req: Request<Body>) -> Seen {
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (method, uri, path, query) = (
            req.method().clone(),
            req.uri().to_string(),
            req.uri().path().to_owned(),
            req.uri().query().unwrap_or_default().to_owned(),
        );
        let bytes = req.into_body().collect_bytes().await.unwrap();
        Seen {
            method,
            uri,
            path,
            query,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

fn respond(send: SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

/// Takes the next request off the mock within [`DEADLINE`], checks its method and that its
/// URI starts with `path`, answers `reply` (a PATCH: `reply` with the status applied; none:
/// the request's own body); returns what was received.
pub async fn expect_seen(
    mock: &mut Mock,
    method: Method,
    path: &str,
    reply: Option<Value>,
) -> Seen {
    let Ok(next) = tokio::time::timeout(DEADLINE, mock.next_request()).await else {
        panic!("no {method} {path} request within {DEADLINE:?}");
    };
    let (req, send) = next.expect("the client is still there");
    let seen = Seen::of(req).await;
    let uri = &seen.uri;
    assert_eq!(seen.method, method, "{uri}");
    assert!(uri.starts_with(path), "{uri} should start with {path}");
    let answer = match reply {
        // A status apply is answered with the whole object, its status replaced.
        Some(mut object) if method == Method::PATCH => {
            if let Some(status) = seen.body.get("status") {
                object["status"] = status.clone();
            }
            object
        }
        Some(v) => v,
        None => seen.body.clone(),
    };
    respond(send, 200, &answer);
    seen
}

/// [`expect_seen`], giving the URI (path and query) and the body.
pub async fn expect(
    mock: &mut Mock,
    method: Method,
    path: &str,
    reply: Option<Value>,
) -> (String, Value) {
    let seen = expect_seen(mock, method, path, reply).await;
    (seen.uri, seen.body)
}

/// A fake API server on the mock, for whole controllers: it answers each LIST with the
/// objects it holds of that resource, holds each WATCH open until the test sends events for
/// that resource ([`FakeApi::send`]; nothing else is ever sent on a watch — a status applied
/// does not come back as MODIFIED), and answers the other requests as a server would (a
/// status apply or a merge patch applied to the object held, a POST echoed and kept).
/// Every request but LIST and WATCH is reported, to be taken with [`FakeApi::next`].
pub struct FakeApi {
    /// A client of this server, namespace `default`.
    pub client: Client,
    events: mpsc::UnboundedSender<(String, Value)>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Requests seen and not taken yet.
    stash: Vec<Seen>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeApi {
    /// Serves `objects`, each with the resource (plural) it is listed under.
    pub fn start(objects: Vec<(&str, Value)>) -> FakeApi {
        let (service, mock) = pair::<Request<Body>, Response<Body>>();
        let held = objects
            .into_iter()
            .map(|(plural, o)| {
                let name = o["metadata"]["name"].as_str().unwrap().to_owned();
                ((plural.to_owned(), name), o)
            })
            .collect();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        FakeApi {
            client: Client::new(service, "default"),
            events,
            seen,
            stash: Vec::new(),
            server: tokio::spawn(serve(mock, held, events_rx, seen_tx)),
        }
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`) on the watches of `plural`.
    pub fn send(&self, plural: &str, type_: &str, mut object: Value) {
        // A watcher refuses events without a version.
        if object["metadata"]["resourceVersion"].is_null() {
            object["metadata"]["resourceVersion"] = json!("2");
        }
        let event = json!({"type": type_, "object": object});
        self.events.send((plural.to_owned(), event)).unwrap();
    }

    /// The first request, seen or to come within [`DEADLINE`], that `matches`; panics naming
    /// `what` and the requests seen instead.
    pub async fn next(&mut self, what: &str, matches: impl Fn(&Seen) -> bool) -> Seen {
        if let Some(i) = self.stash.iter().position(&matches) {
            return self.stash.remove(i);
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(s)) if matches(&s) => return s,
                Ok(Some(s)) => self.stash.push(s),
                Ok(None) => panic!("the fake API server stopped before {what}"),
                Err(_) => {
                    let seen: Vec<String> = self
                        .stash
                        .iter()
                        .map(|s| format!("{} {}", s.method, s.path))
                        .collect();
                    panic!("no {what} within {DEADLINE:?}; requests seen instead: {seen:?}");
                }
            }
        }
    }
}

/// A request on `path` with `method`.
pub fn request(method: Method, path: &str) -> impl Fn(&Seen) -> bool {
    let path = path.to_owned();
    move |s| s.method == method && s.path == path
}

/// (resource, name, subresource) of a namespaced path.
fn target(path: &str) -> (String, Option<String>, Option<String>) {
    let mut parts = path.split('/').skip_while(|p| *p != "namespaces").skip(2);
    let plural = parts.next().unwrap_or_default().to_owned();
    (
        plural,
        parts.next().map(str::to_owned),
        parts.next().map(str::to_owned),
    )
}

type Held = HashMap<(String, String), Value>;

async fn serve(
    mut mock: Mock,
    mut held: Held,
    mut events: mpsc::UnboundedReceiver<(String, Value)>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut watches: HashMap<String, Vec<SendResponse<Response<Body>>>> = HashMap::new();
    let mut queued: HashMap<String, Vec<Value>> = HashMap::new();
    let mut version = 1;
    loop {
        tokio::select! {
            next = mock.next_request() => {
                let Some((req, send)) = next else { return };
                let s = Seen::of(req).await;
                let (plural, name, sub) = target(&s.path);
                if s.method == Method::GET && name.is_none() {
                    if s.query.contains("watch=true") {
                        match queued.remove(&plural) {
                            Some(evs) => send.send_response(watch_body(&evs)),
                            None => watches.entry(plural).or_default().push(send),
                        }
                    } else {
                        let items: Vec<&Value> =
                            held.iter().filter(|((p, _), _)| *p == plural).map(|(_, o)| o).collect();
                        let list = json!({"apiVersion": "v1", "kind": "List",
                                          "metadata": {"resourceVersion": "1"}, "items": items});
                        respond(send, 200, &list);
                    }
                    continue;
                }
                version += 1;
                let (code, reply) = answer(&mut held, &s, &plural, name, sub, version);
                let _ = seen.send(s);
                respond(send, code, &reply);
            }
            Some((plural, event)) = events.recv() => {
                let o = &event["object"];
                let key = (plural.clone(), o["metadata"]["name"].as_str().unwrap_or_default().to_owned());
                if event["type"] == "DELETED" {
                    held.remove(&key);
                } else {
                    held.insert(key, o.clone());
                }
                match watches.remove(&plural) {
                    Some(pending) if !pending.is_empty() => {
                        for send in pending {
                            send.send_response(watch_body(std::slice::from_ref(&event)));
                        }
                    }
                    _ => queued.entry(plural).or_default().push(event),
                }
            }
        }
    }
}

/// A watch response carrying `events`; it ends after them (the watcher then watches again).
fn watch_body(events: &[Value]) -> Response<Body> {
    let mut lines = Vec::new();
    for e in events {
        lines.extend(serde_json::to_vec(e).unwrap());
        lines.push(b'\n');
    }
    Response::builder().body(Body::from(lines)).unwrap()
}

/// What a server answers to a request other than LIST and WATCH.
fn answer(
    held: &mut Held,
    s: &Seen,
    plural: &str,
    name: Option<String>,
    sub: Option<String>,
    version: u64,
) -> (u16, Value) {
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"});
    if s.method == Method::POST {
        let mut o = s.body.clone();
        o["metadata"]["resourceVersion"] = json!(version.to_string());
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        held.insert((plural.to_owned(), name), o.clone());
        return (201, o);
    }
    let Some(o) = name.and_then(|n| held.get_mut(&(plural.to_owned(), n))) else {
        // An Event series patched before its Event was kept: echo it.
        return if s.method == Method::PATCH && plural == "events" {
            (200, s.body.clone())
        } else {
            (404, not_found)
        };
    };
    match (&s.method, sub.as_deref()) {
        (&Method::PATCH, Some("status")) => o["status"] = s.body["status"].clone(),
        (&Method::PATCH, None) => merge(o, &s.body),
        (&Method::GET, _) => return (200, o.clone()),
        _ => return (405, not_found),
    }
    o["metadata"]["resourceVersion"] = json!(version.to_string());
    (200, o.clone())
}

/// A JSON merge patch (RFC 7386): `null` removes.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
