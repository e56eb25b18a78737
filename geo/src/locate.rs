//! Filling in where a mirror is when its spec does not say: the host of its first URL is
//! resolved, and the first address looked up in the GeoIP databases (country, continent,
//! coordinates, AS). What the spec declares always wins; GeoIP only fills the gaps. Lookups
//! are cached per host for an hour (DNS is not asked on every reconcile).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::{ClientGeo, Geo};
use mirrorfleet_crds::state::{FleetState, MirrorState};
use tokio::sync::Mutex;

/// How long a resolved host is trusted.
const TTL: Duration = Duration::from_secs(3600);

/// Resolves and geolocates mirror hosts.
#[derive(Debug)]
pub struct Locator {
    geo: Geo,
    cache: Mutex<HashMap<String, (Instant, Option<ClientGeo>)>>,
}

impl Locator {
    /// A locator over `geo`.
    pub fn new(geo: Geo) -> Locator {
        Locator {
            geo,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Fills the missing locations and AS numbers of `fleet`'s mirrors.
    pub async fn fill(&self, fleet: &mut FleetState) {
        for m in &mut fleet.mirrors {
            let loc = &m.location;
            let complete = loc.country.is_some()
                && loc.latitude.is_some()
                && loc.longitude.is_some()
                && !m.asns.is_empty();
            if complete {
                continue;
            }
            let Some(host) = first_host(m) else { continue };
            let Some(g) = self.locate(&host).await else {
                continue;
            };
            apply(m, &g);
        }
    }

    async fn locate(&self, host: &str) -> Option<ClientGeo> {
        if let Some((at, g)) = self.cache.lock().await.get(host)
            && at.elapsed() < TTL
        {
            return *g;
        }
        let ip = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, 0)))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|mut addrs| addrs.next())
                    .map(|a| a.ip())
            }
        };
        let g = ip.map(|ip| self.geo.lookup(ip));
        if g.is_none() {
            tracing::debug!(%host, "mirror host does not resolve; location left as declared");
        }
        self.cache
            .lock()
            .await
            .insert(host.to_owned(), (Instant::now(), g));
        g
    }
}

/// The host of the mirror's first download URL.
fn first_host(m: &MirrorState) -> Option<String> {
    m.projects
        .iter()
        .flat_map(|p| [p.https.as_deref(), p.http.as_deref()])
        .flatten()
        .find_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_owned))
}

/// Fills what the spec left out from a GeoIP answer — pure.
pub fn apply(m: &mut MirrorState, g: &ClientGeo) {
    let loc = &mut m.location;
    if loc.country.is_none() {
        loc.country = g.country.map(crate::cc_str);
    }
    if loc.continent.is_none() {
        loc.continent = g.continent;
    }
    if (loc.latitude.is_none() || loc.longitude.is_none())
        && let Some([x, y, z]) = g.point
    {
        loc.latitude = Some(z.clamp(-1.0, 1.0).asin().to_degrees());
        loc.longitude = Some(y.atan2(x).to_degrees());
    }
    if m.asns.is_empty()
        && let Some(asn) = g.asn
    {
        m.asns.push(asn);
    }
}

#[cfg(test)]
mod tests {
    use mirrorfleet_crds::geo::Continent;
    use mirrorfleet_crds::state::LocationState;

    use crate::{cc, unit_vector};

    use super::*;

    #[test]
    fn geoip_fills_only_the_gaps() {
        let g = ClientGeo {
            country: cc("DE"),
            continent: Some(Continent::EU),
            point: Some(unit_vector(50.11, 8.68)),
            asn: Some(3320),
        };
        let mut bare = MirrorState::default();
        apply(&mut bare, &g);
        let l = &bare.location;
        assert_eq!(l.country.as_deref(), Some("DE"));
        assert_eq!(l.continent, Some(Continent::EU));
        assert!((l.latitude.unwrap() - 50.11).abs() < 1e-9);
        assert!((l.longitude.unwrap() - 8.68).abs() < 1e-9);
        assert_eq!(bare.asns, [3320]);

        let mut declared = MirrorState {
            location: LocationState {
                country: Some("FR".into()),
                continent: Some(Continent::EU),
                latitude: Some(48.85),
                longitude: Some(2.35),
            },
            asns: vec![64500],
            ..Default::default()
        };
        let before = declared.clone();
        apply(&mut declared, &g);
        assert_eq!(declared, before, "the spec wins");
    }
}
