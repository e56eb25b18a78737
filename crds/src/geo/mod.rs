//! Countries and continents: ISO 3166-1 alpha-2 codes, the continent each belongs to, and an
//! approximate centroid used when a location is known only by country. Pure data, no I/O.

mod countries;

use serde::{Deserialize, Serialize};

/// One ISO 3166-1 country.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Country {
    /// The alpha-2 code, upper case.
    pub code: &'static str,
    /// The English short name.
    pub name: &'static str,
    /// The continent (as GeoIP databases assign it).
    pub continent: Continent,
    /// Approximate centre (latitude, longitude): the mean of its tzdata cities. Good enough to
    /// rank continents and neighbours, not to measure distances within a country.
    pub centroid: Option<(f64, f64)>,
}

/// Looks up a country by its alpha-2 code (upper case).
pub fn country(code: &str) -> Option<&'static Country> {
    countries::COUNTRIES
        .binary_search_by(|c| c.code.cmp(code))
        .ok()
        .map(|i| &countries::COUNTRIES[i])
}

/// Every country, sorted by code.
pub fn countries() -> &'static [Country] {
    countries::COUNTRIES
}

/// Codes that people write for a country but that ISO 3166-1 does not assign to it, with the
/// hint a message about them should give (the same hints as `mirrorfleet validate`'s).
pub const MISTAKEN_CODES: &[(&str, &str)] = &[
    ("UK", "the United Kingdom is GB"),
    ("EL", "Greece is GR"),
    ("EU", "EU is not a country; use a continent field"),
];

/// A continent code, as GeoIP databases use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
pub enum Continent {
    /// Africa.
    AF,
    /// Antarctica.
    AN,
    /// Asia.
    AS,
    /// Europe.
    EU,
    /// North America (with Central America and the Caribbean).
    NA,
    /// Oceania.
    OC,
    /// South America.
    SA,
}

impl Continent {
    /// The two-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Continent::AF => "AF",
            Continent::AN => "AN",
            Continent::AS => "AS",
            Continent::EU => "EU",
            Continent::NA => "NA",
            Continent::OC => "OC",
            Continent::SA => "SA",
        }
    }

    /// Parses a two-letter continent code (upper case).
    pub fn from_code(code: &str) -> Option<Continent> {
        Some(match code {
            "AF" => Continent::AF,
            "AN" => Continent::AN,
            "AS" => Continent::AS,
            "EU" => Continent::EU,
            "NA" => Continent::NA,
            "OC" => Continent::OC,
            "SA" => Continent::SA,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_lookup_finds_codes_and_continents() {
        let de = country("DE").expect("DE is a country");
        assert_eq!(de.continent, Continent::EU);
        let (lat, lon) = de.centroid.expect("DE has zone.tab cities");
        assert!(
            (47.0..55.0).contains(&lat) && (5.0..15.0).contains(&lon),
            "{lat},{lon}"
        );
        assert_eq!(country("BR").map(|c| c.continent), Some(Continent::SA));
        assert_eq!(country("JP").map(|c| c.continent), Some(Continent::AS));
        assert!(country("XX").is_none());
        assert!(country("de").is_none(), "codes are upper case");
    }

    #[test]
    fn table_is_sorted_and_complete() {
        let all = countries();
        assert_eq!(all.len(), 249);
        assert!(all.windows(2).all(|w| w[0].code < w[1].code));
    }

    #[test]
    fn continent_codes_round_trip() {
        for c in [
            Continent::AF,
            Continent::AN,
            Continent::AS,
            Continent::EU,
            Continent::NA,
            Continent::OC,
            Continent::SA,
        ] {
            assert_eq!(Continent::from_code(c.code()), Some(c));
        }
        assert_eq!(Continent::from_code("XX"), None);
    }
}
