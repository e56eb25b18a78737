//! Request facts that come from the connection and headers: the client's address and the
//! scheme it used. Forwarding headers (`X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`)
//! are believed only when the peer is a configured trusted proxy, and then only up to the
//! first hop that is not itself trusted — unlike Mirrorbits, which lets anyone claim any
//! address and location.

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{FORWARDED, HeaderName};
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether `ip` is in one of `nets` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[2001:db8::1]:1234`, `[2001:db8::1]` or `192.0.2.1:1234`.
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(host, _)| host.parse().ok())
}

/// The client's address: the peer, or — when the peer is trusted — the rightmost forwarded hop
/// that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    // Walk the hops from the right: the first one that is not a trusted proxy is the client.
    let mut client = peer;
    let mut xff = headers.get_all(&X_FORWARDED_FOR).iter().rev().peekable();
    if xff.peek().is_some() {
        for v in xff.filter_map(|v| v.to_str().ok()) {
            for hop in v.rsplit(',').filter_map(parse_hop) {
                client = hop.to_canonical();
                if !trusted(client, proxies) {
                    return client;
                }
            }
        }
        return client;
    }
    for v in headers
        .get_all(FORWARDED)
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
    {
        for element in v.rsplit(',') {
            for pair in element.split(';') {
                let Some((k, val)) = pair.split_once('=') else {
                    continue;
                };
                if !k.trim().eq_ignore_ascii_case("for") {
                    continue;
                }
                if let Some(hop) = parse_hop(val) {
                    client = hop.to_canonical();
                    if !trusted(client, proxies) {
                        return client;
                    }
                }
            }
        }
    }
    client
}

/// Whether the client came over HTTPS, as a trusted proxy says (`X-Forwarded-Proto` or
/// `Forwarded: proto=`).
pub fn came_over_https(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> bool {
    if !trusted(peer, proxies) {
        return false;
    }
    if let Some(v) = headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
    {
        return v
            .split(',')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    }
    headers
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ',']).any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("proto")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let untrusted: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_ip(untrusted, &h, &proxies),
            untrusted,
            "anyone else's header is ignored"
        );
        assert!(!came_over_https(untrusted, &h, &proxies));
        let proxy: IpAddr = "10.2.2.2".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &proxies),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert!(came_over_https(proxy, &h, &proxies));
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(
            client_ip(proxy, &spoof, &proxies),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "a client cannot prepend its own hop"
        );
        let fwd = headers(&[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]);
        let v6_proxy: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            client_ip(v6_proxy, &fwd, &proxies),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        assert!(came_over_https(v6_proxy, &fwd, &proxies));
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &h, &proxies),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "IPv4-mapped peers"
        );
    }
}
