//! GeoIP, in one place: where a client or a mirror is.
//!
//! - [`Geo`] ([`reader`]): City/Country and ASN databases in MaxMind format, looked up without
//!   a lock and swapped when their files change;
//! - [`build`] (feature `build`): those databases made from Debian's libloc data;
//! - [`Locator`] ([`locate`]): a mirror's missing location filled in from its host's address;
//! - country helpers: two-letter codes as bytes ([`Cc`]), points on the unit sphere and
//!   great-circle distances, and the ISO 3166-1 table ([`country`], [`countries`],
//!   [`Continent`]).
//!
//! The country table itself stays in `mirrorfleet_crds::geo`, because continents are part of
//! the state schema; it is re-exported here. This crate does no HTTP, knows no Kubernetes and
//! no store: the redirector, the operator and the node agent all link it.

#[cfg(feature = "build")]
pub mod build;
pub mod locate;
pub mod reader;

pub use locate::Locator;
pub use mirrorfleet_crds::geo::{Continent, Country, countries, country};
pub use reader::Geo;

/// What GeoIP could not do; each message names the file or the line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database could not be opened.
    #[error("cannot open GeoIP database {path}")]
    Open {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// The libloc dump could not be read or run.
    #[error("cannot read the libloc dump")]
    Dump(#[source] std::io::Error),
    /// A line of the dump is malformed.
    #[error("line {line} of the dump: {why}")]
    Parse {
        /// Line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Writing a database failed.
    #[error("cannot write {path}: {why}")]
    Write {
        /// The file.
        path: String,
        /// What happened.
        why: String,
    },
}

/// A two-letter country code as bytes.
pub type Cc = [u8; 2];

/// Parses a country code (any case; `None` unless two bytes).
pub fn cc(s: &str) -> Option<Cc> {
    let b = s.as_bytes();
    (b.len() == 2).then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}

/// A country code as text.
pub fn cc_str(c: Cc) -> String {
    String::from_utf8_lossy(&c).into_owned()
}

/// A point on the unit sphere, for distances without trigonometry per request.
pub fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (la, lo) = (lat.to_radians(), lon.to_radians());
    [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
}

/// Great-circle distance in km between two unit vectors.
pub fn distance_km(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let dot = (a[0] * b[0] + a[1] * b[1] + a[2] * b[2]).clamp(-1.0, 1.0);
    dot.acos() * 6371.0
}

/// What GeoIP says of an address: country, continent, location, autonomous system.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientGeo {
    /// Country.
    pub country: Option<Cc>,
    /// Continent.
    pub continent: Option<Continent>,
    /// Unit vector of its location.
    pub point: Option<[f64; 3]>,
    /// Autonomous system.
    pub asn: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_and_distances() {
        assert_eq!(cc("de"), Some(*b"DE"), "upper-cased");
        assert_eq!(cc("DEU"), None, "two letters only");
        assert_eq!(cc_str(*b"FR"), "FR");
        let paris = unit_vector(48.86, 2.35);
        let berlin = unit_vector(52.52, 13.40);
        let d = distance_km(&paris, &berlin);
        assert!((870.0..890.0).contains(&d), "Paris–Berlin is ~878 km: {d}");
        assert!(distance_km(&paris, &paris) < 1e-6);
    }
}
