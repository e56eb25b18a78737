//! `?stats` on a file (as Mirrorbits): its download counts for today, this month and this year,
//! and per day for the last 30 days — or, with `?stats=YYYY[-MM[-DD]]`, for that period.
//! Counts come from the per-day file hashes the stats flush writes (kept 400 days), read with
//! one batched store call. This is the one answer that reads the store on its request: it is
//! rare, bounded (at most 400 counters) and under a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::{Response, StatusCode};
use mirrorfleet_crds::state::stats::{DAY_RETENTION_DAYS, day_key, day_string};
use serde_json::json;

use crate::respond::{self, Body};

/// How long the store may take.
const DEADLINE: Duration = Duration::from_secs(2);

/// Days listed one by one in the default answer.
const RECENT_DAYS: i64 = 30;

/// What `?stats` asks about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Project name (the stats keys are per project).
    pub project: String,
    /// The file's path in the project.
    pub path: String,
    /// `None`: the summary; else a day, month or year prefix (`2026-11-22`, `2026-11`, `2026`).
    pub period: Option<String>,
}

/// Checks a `?stats=` value: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, digits where digits go.
pub fn period(value: &str) -> Option<String> {
    let shape_ok = match value.len() {
        4 | 7 | 10 => value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        }),
        _ => false,
    };
    shape_ok.then(|| value.to_owned())
}

/// The retained days, newest first, as `YYYY-MM-DD` (`now` in Unix seconds).
fn retained_days(now: i64) -> Vec<String> {
    (0..DAY_RETENTION_DAYS as i64)
        .map(|back| day_string(now - back * 86_400))
        .collect()
}

/// Answers `ask` at `now`, reading counters through `read`.
pub async fn answer<F, Fut>(ask: &Ask, now: i64, read: F) -> Response<Body>
where
    F: FnOnce(Vec<(String, String)>, Duration) -> Fut,
    Fut: Future<Output = Result<Vec<u64>, String>>,
{
    let days: Vec<String> = retained_days(now)
        .into_iter()
        .filter(|d| ask.period.as_deref().is_none_or(|p| d.starts_with(p)))
        .collect();
    let key = |day: &str| day_key(day, &format!("file:{}", ask.project));
    let wanted = days.iter().map(|d| (key(d), ask.path.clone())).collect();
    let counts = match read(wanted, DEADLINE).await {
        Ok(c) => c,
        Err(why) => return respond::unavailable(&format!("download counts unavailable: {why}")),
    };
    let by_day: BTreeMap<&str, u64> = days.iter().map(String::as_str).zip(counts).collect();
    let sum = |prefix: &str| -> u64 {
        by_day
            .iter()
            .filter(|(d, _)| d.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    };
    let body = match &ask.period {
        Some(p) => json!({
            "path": ask.path,
            "period": p,
            "downloads": sum(p),
            "days": by_day.iter().filter(|(_, n)| **n > 0).collect::<BTreeMap<_, _>>(),
        }),
        None => {
            let today = day_string(now);
            let recent: BTreeMap<&str, u64> = by_day
                .iter()
                .rev()
                .take(RECENT_DAYS as usize)
                .map(|(d, n)| (*d, *n))
                .collect();
            json!({
                "path": ask.path,
                "today": sum(&today),
                "month": sum(&today[..7]),
                "year": sum(&today[..4]),
                "last30Days": recent.values().sum::<u64>(),
                "days": recent,
                "keptDays": DAY_RETENTION_DAYS,
            })
        }
    };
    respond::private_json(&body)
}

/// A `400` for a `?stats=` value that is not a period.
pub fn bad_period() -> Response<Body> {
    respond::text(
        StatusCode::BAD_REQUEST,
        "?stats= takes a period: YYYY, YYYY-MM or YYYY-MM-DD\n",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn periods_are_years_months_or_days() {
        for ok in ["2026", "2026-11", "2026-11-22"] {
            assert_eq!(period(ok).as_deref(), Some(ok));
        }
        for bad in [
            "",
            "26",
            "2026-1",
            "2026/11",
            "2026-11-2x",
            "yesterday",
            "2026-11-22T00",
        ] {
            assert_eq!(period(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn counts_are_summed_by_period() {
        let now = 1_795_309_323; // 2026-11-22
        let ask = |period: Option<&str>| Ask {
            project: "p".into(),
            path: "pool/a.deb".into(),
            period: period.map(str::to_owned),
        };
        // Every retained day counts 1, except today (3) and 2026-01-05 (10).
        let read = |wanted: Vec<(String, String)>, _| async move {
            Ok(wanted
                .iter()
                .map(|(k, f)| {
                    assert_eq!(f, "pool/a.deb");
                    if k.contains(":2026-11-22:") {
                        3
                    } else if k.contains(":2026-01-05:") {
                        10
                    } else {
                        1
                    }
                })
                .collect())
        };
        let body = |r: Response<Body>| async move {
            assert_eq!(r.status(), StatusCode::OK);
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let summary = body(answer(&ask(None), now, read).await).await;
        assert_eq!(summary["today"], 3);
        assert_eq!(summary["month"], 3 + 21);
        assert_eq!(summary["year"], 3 + 10 + (326 - 2));
        assert_eq!(summary["last30Days"], 3 + 29);
        assert_eq!(summary["days"].as_object().unwrap().len(), 30);
        let jan = body(answer(&ask(Some("2026-01")), now, read).await).await;
        assert_eq!(jan["downloads"], 10 + 30);
        let day = body(answer(&ask(Some("2026-01-05")), now, read).await).await;
        assert_eq!(day["downloads"], 10);
        let gone = body(answer(&ask(Some("2020")), now, read).await).await;
        assert_eq!(gone["downloads"], 0, "past the retention: nothing kept");
        let failed = answer(&ask(None), now, |_, _| async { Err("down".to_owned()) }).await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
