//! Where the agent learns its duties: the redirector's public `/-/mirrors/<name>.json`, or a
//! file of the same JSON (for nodes off the fleet's network, and tests).

use std::path::PathBuf;
use std::time::Duration;

use mirrorfleet_crds::state::MirrorDuties;

use crate::Error;

/// Where the duties come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A redirector's base URL.
    Redirector {
        base: String,
        client: reqwest::Client,
    },
    /// A JSON file.
    File(PathBuf),
}

impl Source {
    /// The redirector at `base` (e.g. `https://dl.example.org`), asked with a 30 s timeout.
    pub fn redirector(base: &str) -> Result<Source, Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("mirrorfleet-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Source::Redirector {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// The duties of `mirror`.
    pub async fn load(&self, mirror: &str) -> Result<MirrorDuties, Error> {
        let (text, from) = match self {
            Source::File(path) => {
                let text = tokio::fs::read(path).await.map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                (text, path.display().to_string())
            }
            Source::Redirector { base, client } => {
                let url = format!("{base}/-/mirrors/{mirror}.json");
                let fetch = async {
                    let r = client.get(&url).send().await?.error_for_status()?;
                    r.bytes().await
                };
                let body = fetch.await.map_err(|source| Error::Fetch {
                    url: url.clone(),
                    source,
                })?;
                (body.to_vec(), url)
            }
        };
        let duties: MirrorDuties =
            serde_json::from_slice(&text).map_err(|source| Error::Duties {
                from: from.clone(),
                source,
            })?;
        if duties.mirror != mirror {
            return Err(Error::OtherMirror {
                from,
                named: duties.mirror,
                mirror: mirror.to_owned(),
            });
        }
        Ok(duties)
    }
}
