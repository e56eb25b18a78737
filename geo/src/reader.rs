//! Reading GeoIP: a City or Country database and an ASN database in MaxMind format (GeoLite2, DB-IP
//! lite, IPinfo lite, or the ones `mirrorfleet geoip build` makes from Debian's libloc data).
//! The databases are held behind an [`ArcSwap`]: lookups borrow the current pair without a
//! lock, and [`Geo::reload_if_changed`] swaps in new files (checked by size and mtime).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use maxminddb::Reader;
use mirrorfleet_crds::geo::{self as countries, Continent};
use serde::Deserialize;

use crate::{ClientGeo, Error, cc, unit_vector};

#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    country: Option<Iso<'a>>,
    #[serde(borrow)]
    registered_country: Option<Iso<'a>>,
    #[serde(borrow)]
    continent: Option<Code<'a>>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Iso<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Code<'a> {
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
}

#[derive(Default)]
struct Dbs {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    stamps: [Option<(u64, SystemTime)>; 2],
}

/// The GeoIP databases, reloadable.
pub struct Geo {
    paths: [Option<PathBuf>; 2],
    dbs: ArcSwap<Dbs>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &PathBuf) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// An opened database (if configured) and the file's (size, mtime) when opened.
type Opened = (Option<Reader<Vec<u8>>>, Option<(u64, SystemTime)>);

fn open(path: &Option<PathBuf>) -> Result<Opened, Error> {
    let Some(p) = path else {
        return Ok((None, None));
    };
    let s = stamp(p);
    let r = Reader::open_readfile(p).map_err(|source| Error::Open {
        path: p.display().to_string(),
        source,
    })?;
    Ok((Some(r), s))
}

impl Geo {
    /// Opens the databases (either may be absent).
    pub fn open(city: Option<PathBuf>, asn: Option<PathBuf>) -> Result<Geo, Error> {
        let paths = [city, asn];
        let (c, cs) = open(&paths[0])?;
        let (a, as_) = open(&paths[1])?;
        Ok(Geo {
            dbs: ArcSwap::from_pointee(Dbs {
                city: c,
                asn: a,
                stamps: [cs, as_],
            }),
            paths,
        })
    }

    /// No databases: every client is unlocated.
    pub fn none() -> Geo {
        Geo {
            paths: [None, None],
            dbs: ArcSwap::from_pointee(Dbs::default()),
        }
    }

    /// Reopens a database whose file changed; keeps the old one if the new one is broken.
    /// Returns whether anything was swapped.
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let current = self.dbs.load();
        let now = [
            self.paths[0].as_ref().and_then(stamp),
            self.paths[1].as_ref().and_then(stamp),
        ];
        if now == current.stamps {
            return Ok(false);
        }
        let (c, cs) = if now[0] != current.stamps[0] {
            open(&self.paths[0])?
        } else {
            (None, current.stamps[0])
        };
        let (a, as_) = if now[1] != current.stamps[1] {
            open(&self.paths[1])?
        } else {
            (None, current.stamps[1])
        };
        // Readers are not clonable: reopen the unchanged one too (rare: only on a change).
        let c = match c {
            Some(c) => Some(c),
            None => open(&self.paths[0])?.0,
        };
        let a = match a {
            Some(a) => Some(a),
            None => open(&self.paths[1])?.0,
        };
        self.dbs.store(Arc::new(Dbs {
            city: c,
            asn: a,
            stamps: [cs, as_],
        }));
        Ok(true)
    }

    /// Looks up a client. Country-only databases give the country's approximate centroid.
    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        let dbs = self.dbs.load();
        let mut out = ClientGeo::default();
        if let Some(r) = &dbs.city
            && let Ok(Some(rec)) = r.lookup(ip).and_then(|l| l.decode::<CityRecord<'_>>())
        {
            let iso = rec
                .country
                .and_then(|c| c.iso_code)
                .or(rec.registered_country.and_then(|c| c.iso_code));
            out.country = iso.and_then(cc);
            out.continent = rec
                .continent
                .and_then(|c| c.code)
                .and_then(Continent::from_code)
                .or_else(|| iso.and_then(countries::country).map(|c| c.continent));
            let point = rec.location.and_then(|l| l.latitude.zip(l.longitude));
            let centroid = iso.and_then(countries::country).and_then(|c| c.centroid);
            out.point = point.or(centroid).map(|(a, b)| unit_vector(a, b));
        }
        if let Some(r) = &dbs.asn
            && let Ok(Some(rec)) = r.lookup(ip).and_then(|l| l.decode::<AsnRecord>())
        {
            out.asn = rec.autonomous_system_number;
        }
        out
    }
}
