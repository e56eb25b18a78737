//! A Redis that asks for a password (`requirepass`), reached by URL and through a Sentinel:
//! the password given apart from the URL is sent on connect, to the master the Sentinel
//! names too, and no `Debug` output shows it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mirrorfleet_store::{Password, RedisConfig, RedisTarget, open_store_with_password};
use mirrorfleet_testkit::{Redis, wait_until};

const SECRET: &str = "s3cret-not-in-any-url";

#[tokio::test]
async fn a_password_apart_from_the_url_opens_a_redis_that_asks_for_one() {
    let redis = Redis::start_with(&format!("requirepass {SECRET}"));
    let url = redis.url();

    let refused = open_store_with_password(Some(&url), &[], None, None, None).await;
    let message = chain(&refused.err().unwrap());
    assert!(
        message.contains("NOAUTH") || message.contains("Authentication"),
        "without the password the server refuses: {message}"
    );

    let wrong = Password("wrong".into());
    let refused = open_store_with_password(Some(&url), &[], None, None, Some(&wrong)).await;
    assert!(refused.is_err(), "a wrong password is refused");

    let password = Password(SECRET.into());
    let store = open_store_with_password(Some(&url), &[], None, None, Some(&password)).await;
    assert!(store.is_ok(), "the password opens it: {:?}", store.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reaches_the_master_a_sentinel_names() {
    let master = Redis::start_with(&format!("requirepass {SECRET}"));
    let sentinel = Redis::sentinel("pwmaster", master.port);
    // The sentinel answers get-master-addr-by-name from its configuration at once.
    wait_until(
        "the sentinel to answer",
        Duration::from_secs(10),
        || async {
            matches!(
                sentinel
                    .raw(&["SENTINEL", "get-master-addr-by-name", "pwmaster"])
                    .await,
                redis::Value::Array(ref a) if a.len() == 2
            )
        },
    )
    .await;
    let sentinels = [sentinel.url()];
    let password = Password(SECRET.into());
    let store =
        open_store_with_password(None, &sentinels, Some("pwmaster"), None, Some(&password)).await;
    assert!(store.is_ok(), "the master opened: {:?}", store.err());
    let refused = open_store_with_password(None, &sentinels, Some("pwmaster"), None, None).await;
    assert!(refused.is_err(), "without the password the master refuses");
}

/// The error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[test]
fn debug_output_never_shows_the_password() {
    let config = RedisConfig {
        password: Some(Password(SECRET.into())),
        ..RedisConfig::new(RedisTarget::Url("redis://redis:6379/0".into()))
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("Password(***)"), "{shown}");
}
