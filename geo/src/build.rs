//! Building GeoIP databases (`mirrorfleet geoip build`): country and ASN databases in MaxMind format from Debian's
//! libloc-database (IPFire, CC BY-SA 4.0), so mirrorfleet works out of the box without a
//! MaxMind licence. libloc has no coordinates: each country's record carries the approximate
//! centroid from `mirrorfleet_crds::geo` (the mean of its tzdata cities) — good enough to rank
//! continents and neighbours, not to measure distances within a country.
//!
//! Input is the text of `location dump` (blocks of `net:`, `country:`, `aut-num:` lines,
//! supernets before their subnets); output is `country.mmdb` (GeoLite2-Country shaped, with a
//! `location`) and `asn.mmdb` (GeoLite2-ASN shaped).

use std::path::Path;

use ipnet::IpNet;
use mirrorfleet_crds::geo;
use serde::Serialize;

use crate::Error;

#[derive(Serialize)]
struct Code<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct Iso<'a> {
    iso_code: &'a str,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct CountryRecord<'a> {
    continent: Code<'a>,
    country: Iso<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location>,
}

#[derive(Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
}

/// What a build wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// Networks with a country written.
    pub countries: usize,
    /// Networks with an ASN written.
    pub asns: usize,
    /// Networks skipped (aliased IPv6 ranges, unknown countries).
    pub skipped: usize,
}

/// Builds the two databases from a dump's text into `out`.
pub fn build(dump: &str, out: &Path) -> Result<Built, Error> {
    let mut country_db = mmdb_writer::Writer::builder("GeoLite2-Country")
        .languages(["en"])
        .description(&[(
            "en",
            "mirrorfleet country database from libloc (IPFire, CC BY-SA 4.0)",
        )])
        .build();
    let mut asn_db = mmdb_writer::Writer::builder("GeoLite2-ASN")
        .description(&[(
            "en",
            "mirrorfleet ASN database from libloc (IPFire, CC BY-SA 4.0)",
        )])
        .build();
    let mut built = Built::default();
    let mut block: (Option<(IpNet, usize)>, Option<String>, Option<u32>) = (None, None, None);
    let mut flush = |b: &mut (Option<(IpNet, usize)>, Option<String>, Option<u32>),
                     built: &mut Built| {
        let (Some((net, _)), cc, asn) = std::mem::take(b) else {
            return;
        };
        if let Some(c) = cc.as_deref().and_then(geo::country) {
            let rec = CountryRecord {
                continent: Code {
                    code: c.continent.code(),
                },
                country: Iso { iso_code: c.code },
                location: c.centroid.map(|(latitude, longitude)| Location {
                    latitude,
                    longitude,
                    accuracy_radius: 1000,
                }),
            };
            match country_db.insert(net, &rec) {
                Ok(()) => built.countries += 1,
                Err(_) => built.skipped += 1,
            }
        } else if cc.is_some() {
            built.skipped += 1;
        }
        if let Some(n) = asn {
            match asn_db.insert(
                net,
                &AsnRecord {
                    autonomous_system_number: n,
                },
            ) {
                Ok(()) => built.asns += 1,
                Err(_) => built.skipped += 1,
            }
        }
    };
    for (i, line) in dump.lines().enumerate() {
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() {
                flush(&mut block, &mut built);
            }
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "net" => {
                flush(&mut block, &mut built);
                let net: IpNet = value.parse().map_err(|_| Error::Parse {
                    line: i + 1,
                    why: format!("{value:?} is not a network"),
                })?;
                block.0 = Some((net, i + 1));
            }
            "country" if block.0.is_some() => block.1 = Some(value.to_owned()),
            "aut-num" if block.0.is_some() => {
                block.2 =
                    Some(
                        value
                            .trim_start_matches("AS")
                            .parse()
                            .map_err(|_| Error::Parse {
                                line: i + 1,
                                why: format!("{value:?} is not an AS number"),
                            })?,
                    )
            }
            _ => {}
        }
    }
    flush(&mut block, &mut built);
    for (db, name) in [(country_db, "country.mmdb"), (asn_db, "asn.mmdb")] {
        let path = out.join(name);
        let fail = |why: String| Error::Write {
            path: path.display().to_string(),
            why,
        };
        let bytes = db.to_bytes().map_err(|e| fail(e.to_string()))?;
        let tmp = path.with_extension("mmdb.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| fail(e.to_string()))?;
        // Renamed into place, so a running redirector never reads a half-written file.
        std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
    }
    Ok(built)
}

/// Runs `location dump` (Debian's `location` package).
pub fn dump_from_libloc() -> Result<String, Error> {
    let out = std::process::Command::new("location")
        .arg("dump")
        .output()
        .map_err(Error::Dump)?;
    if !out.status.success() {
        return Err(Error::Dump(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| Error::Dump(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_becomes_lookupable_databases() {
        let dump = "# header\n\naut-num: AS13335\nname: CLOUDFLARE\n\nnet: 1.0.0.0/8\ncountry: AU\n\nnet: 1.0.0.0/24\ncountry: AU\naut-num: 13335\nis-anycast: yes\n\nnet: 193.99.144.0/24\ncountry: DE\naut-num: 12306\n\nnet: 2a00:1450::/32\ncountry: IE\naut-num: 15169\n\nnet: 2001::/32\ncountry: US\n";
        let dir = tempfile::tempdir().unwrap();
        let built = build(dump, dir.path()).unwrap();
        assert_eq!(
            (built.countries, built.asns, built.skipped),
            (4, 3, 1),
            "{built:?}"
        );
        let country = maxminddb::Reader::open_readfile(dir.path().join("country.mmdb")).unwrap();
        let asn = maxminddb::Reader::open_readfile(dir.path().join("asn.mmdb")).unwrap();
        let cc = |ip: &str| {
            let r = country.lookup(ip.parse().unwrap()).unwrap();
            r.decode::<maxminddb::geoip2::Country>()
                .unwrap()
                .and_then(|c| c.country.iso_code.map(str::to_owned))
        };
        assert_eq!(cc("193.99.144.80").as_deref(), Some("DE"));
        assert_eq!(cc("1.2.3.4").as_deref(), Some("AU"));
        assert_eq!(cc("2a00:1450:4001:80b::200e").as_deref(), Some("IE"));
        assert_eq!(cc("8.8.8.8"), None);
        let n = asn
            .lookup("1.0.0.1".parse().unwrap())
            .unwrap()
            .decode::<maxminddb::geoip2::Asn>()
            .unwrap()
            .unwrap();
        assert_eq!(n.autonomous_system_number, Some(13335));
        assert!(
            build("net: not-a-net\n", dir.path())
                .unwrap_err()
                .to_string()
                .starts_with("line 1 of the dump")
        );
    }
}
