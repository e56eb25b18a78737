//! Mirror fixtures for tests and benchmarks (feature `fixtures`, and this crate's own tests):
//! a [`MirrorState`] described in one expression, so that every test and benchmark builds its
//! fleet the same way:
//!
//! ```text
//! MirrorState::test("lyon").in_country("FR").at(45.76, 4.84).carrying("p", "https://lyon.example/p/")
//! ```
//!
//! Must not be part of a production build: only dev-dependencies turn the feature on. Pure
//! constructors: no I/O, no randomness, no clock.

use super::fleet::{MirrorProjectState, MirrorState};
use crate::geo;

impl MirrorState {
    /// An enabled mirror named `name`, sponsored by `s`, of weight 100, reachable over IPv4
    /// and IPv6 — located nowhere and carrying nothing until told.
    pub fn test(name: &str) -> MirrorState {
        MirrorState {
            name: name.into(),
            sponsor: "s".into(),
            enabled: true,
            weight: 100,
            ipv4: true,
            ipv6: true,
            ..Default::default()
        }
    }

    /// In the country `code` (ISO 3166-1 alpha-2, upper case), on that country's continent
    /// (none for a code that is not a country).
    pub fn in_country(mut self, code: &str) -> Self {
        self.location.country = Some(code.into());
        self.location.continent = geo::country(code).map(|c| c.continent);
        self
    }

    /// At (`latitude`, `longitude`), in degrees.
    pub fn at(mut self, latitude: f64, longitude: f64) -> Self {
        self.location.latitude = Some(latitude);
        self.location.longitude = Some(longitude);
        self
    }

    /// Carries `project` at `base_url`: its HTTPS URL when the base starts with `https://`,
    /// its HTTP URL otherwise. Carrying the same project again with the other scheme gives
    /// it both URLs.
    pub fn carrying(mut self, project: &str, base_url: impl Into<String>) -> Self {
        let base = base_url.into();
        let at = match self.projects.iter().position(|p| p.project == project) {
            Some(i) => i,
            None => {
                self.projects.push(MirrorProjectState {
                    project: project.into(),
                    ..Default::default()
                });
                self.projects.len() - 1
            }
        };
        let carrier = &mut self.projects[at];
        if base.starts_with("https://") {
            carrier.https = Some(base);
        } else {
            carrier.http = Some(base);
        }
        self
    }

    /// Sponsored by `sponsor`.
    pub fn sponsored_by(mut self, sponsor: &str) -> Self {
        self.sponsor = sponsor.into();
        self
    }

    /// Declares `mbps` of bandwidth (its capacity: weight × bandwidth).
    pub fn bandwidth(mut self, mbps: u64) -> Self {
        self.bandwidth_mbps = Some(mbps);
        self
    }

    /// Prefers clients of these networks (CIDRs).
    pub fn with_networks(mut self, cidrs: &[&str]) -> Self {
        self.networks = cidrs.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// In these autonomous systems.
    pub fn with_asns(mut self, asns: &[u32]) -> Self {
        self.asns = asns.to_vec();
        self
    }

    /// Anything else (restrictions, maintenance, sub-trees …), changed in place.
    pub fn with(mut self, change: impl FnOnce(&mut MirrorState)) -> Self {
        change(&mut self);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Continent;

    #[test]
    fn the_builder_fills_what_it_names_and_nothing_else() {
        let m = MirrorState::test("lyon")
            .in_country("FR")
            .at(45.76, 4.84)
            .carrying("p", "https://lyon.example/p/")
            .carrying("p", "http://lyon.example/p/")
            .carrying("q", "http://lyon.example/q/")
            .with_networks(&["192.0.2.0/24"])
            .with_asns(&[64500])
            .bandwidth(3000)
            .sponsored_by("acme");
        assert_eq!(m.location.country.as_deref(), Some("FR"));
        assert_eq!(m.location.continent, Some(Continent::EU), "the country's");
        assert_eq!(
            (m.location.latitude, m.location.longitude),
            (Some(45.76), Some(4.84))
        );
        assert_eq!(m.projects.len(), 2, "one carrier per project");
        assert_eq!(
            m.projects[0].https.as_deref(),
            Some("https://lyon.example/p/")
        );
        assert_eq!(
            m.projects[0].http.as_deref(),
            Some("http://lyon.example/p/")
        );
        assert_eq!(m.projects[1].https, None, "only the scheme given");
        assert_eq!(m.networks, ["192.0.2.0/24"]);
        assert_eq!(m.asns, [64500]);
        assert_eq!((m.bandwidth_mbps, m.sponsor.as_str()), (Some(3000), "acme"));
        assert!(m.enabled && m.ipv4 && m.ipv6 && m.weight == 100);
        assert_eq!(
            MirrorState::test("x").in_country("XX").location.continent,
            None,
            "no continent for an unknown code"
        );
    }
}
