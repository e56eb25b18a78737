//! Each rule of the generated CRDs, evaluated as `mirrorfleet validate` evaluates it (kube-cel):
//! a row per rule and case, with the path and message it must give. Whether the API server
//! gives the same verdicts is `tests/crd_admission.rs`'s job.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use serde_json::{Value, json};

use super::super::crds;

/// The problems kube-cel finds in `spec` of a `kind`, as `path: message`.
fn problems(kind: &str, spec: Value) -> Vec<String> {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let version = crd.spec.versions.into_iter().next().unwrap();
    let schema = serde_json::to_value(version.schema.unwrap().open_api_v3_schema.unwrap()).unwrap();
    let compiled = kube_cel::compile_schema(&schema);
    match kube_cel::Validator::new().validate_compiled(&compiled, &json!({ "spec": spec }), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

/// A mirror carrying debian over `https` from `https`, with `extra` merged into its spec.
fn mirror(https: &str, extra: Value) -> Value {
    let mut spec = json!({
        "sponsorRef": "rhein-hosting",
        "projects": [{ "project": "debian", "https": https }],
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

/// A project whose source is `source`, with `extra` merged into its spec.
fn project(source: Value, extra: Value) -> Value {
    let mut spec = json!({ "routing": { "pathPrefix": "/p/" }, "source": source });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

fn rule(countries: Value, networks: Value) -> Value {
    json!({
        "match": { "countries": countries, "networks": networks },
        "action": "Prefer",
        "mirrors": ["m"],
    })
}

const OK: &str = "https://mirror.example.org/debian/";

#[test]
fn country_codes_are_assigned_ones() {
    let rows: &[(&str, Value, &[&str])] = &[
        (
            "assigned",
            mirror(OK, json!({"location": {"country": "DE"}})),
            &[],
        ),
        (
            "a mistaken code gets its hint",
            mirror(OK, json!({"location": {"country": "UK"}})),
            &[
                "spec.location.country: UK is not an ISO 3166-1 alpha-2 country code (the United Kingdom is GB)",
            ],
        ),
        (
            "each item of a list",
            mirror(OK, json!({"additionalCountries": ["FR", "XX"]})),
            &["spec.additionalCountries[1]: XX is not an ISO 3166-1 alpha-2 country code"],
        ),
        (
            "excluded countries too",
            mirror(OK, json!({"restrictions": {"excludedCountries": ["EU"]}})),
            &[
                "spec.restrictions.excludedCountries[0]: EU is not an ISO 3166-1 alpha-2 country code (EU is not a country; use a continent field)",
            ],
        ),
    ];
    for (why, spec, want) in rows {
        assert_eq!(problems("Mirror", spec.clone()), *want, "{why}");
    }
    assert_eq!(
        problems("RegionRule", rule(json!(["EL"]), json!([]))),
        ["spec.match.countries[0]: EL is not an ISO 3166-1 alpha-2 country code (Greece is GR)"],
        "a rule's countries"
    );
    let fallback =
        json!({"fallbacks": [{"url": "https://origin.example.org/p/", "country": "ZZ"}]});
    assert_eq!(
        problems("Project", project(json!({"local": "/srv/p"}), fallback)),
        ["spec.fallbacks[0].country: ZZ is not an ISO 3166-1 alpha-2 country code"],
        "a fallback's country"
    );
}

#[test]
fn continents_are_the_countries() {
    let spec = mirror(
        OK,
        json!({"location": {"country": "DE", "continent": "NA"}}),
    );
    assert_eq!(
        problems("Mirror", spec),
        ["spec.location.continent: DE is in EU, not NA"]
    );
    let spec = mirror(
        OK,
        json!({"location": {"country": "XX", "continent": "NA"}}),
    );
    assert_eq!(
        problems("Mirror", spec),
        ["spec.location.country: XX is not an ISO 3166-1 alpha-2 country code"],
        "an unknown country is reported once, as unknown"
    );
    let fallback = json!({"fallbacks": [{"url": "https://origin.example.org/p/", "country": "JP", "continent": "AS"}]});
    assert_eq!(
        problems("Project", project(json!({"local": "/srv/p"}), fallback)),
        Vec::<String>::new()
    );
}

#[test]
fn networks_are_canonical_cidrs() {
    let networks = json!([
        "192.0.2.0/24",
        "2001:DB8::/32",
        "10.1.2.3/8",
        "not-a-network",
        "010.0.0.0/8",
        "10.0.0.0/08",
        "::ffff:10.0.0.0/104",
        "1::2:3:4:5:6:7:8/128",
        "2001:db8::1/32"
    ]);
    assert_eq!(
        problems("Mirror", mirror(OK, json!({"networks": networks}))),
        [
            "spec.networks[2]: 10.1.2.3/8 has host bits set; the network is 10.0.0.0/8",
            "spec.networks[3]: \"not-a-network\" is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
            "spec.networks[4]: \"010.0.0.0/8\" is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
            "spec.networks[5]: \"10.0.0.0/08\" is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
            "spec.networks[6]: \"::ffff:10.0.0.0/104\" is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
            "spec.networks[7]: \"1::2:3:4:5:6:7:8/128\" is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
            "spec.networks[8]: 2001:db8::1/32 has host bits set; the network is 2001:db8::/32",
        ]
    );
    assert_eq!(
        problems("RegionRule", rule(json!([]), json!(["198.51.100.7/24"]))),
        [
            "spec.match.networks[0]: 198.51.100.7/24 has host bits set; the network is 198.51.100.0/24"
        ]
    );
}

#[test]
fn base_urls_have_a_host_and_nothing_secret_or_ambiguous() {
    let path = "spec.projects[0].https";
    let rows: &[(&str, &str, &[&str])] = &[
        ("plain", OK, &[]),
        ("a port", "https://mirror.example.org:8443/debian/", &[]),
        ("an IPv4 host", "https://192.0.2.10/debian/", &[]),
        (
            "an IDN host (not checked)",
            "https://bücher.example/debian/",
            &[],
        ),
        (
            "credentials, never echoed",
            "https://user:hunter2@mirror.example.org/debian/",
            &[
                "spec.projects[0].https: https://mirror.example.org/debian/ must not carry credentials: manifests are public, so put credentials in a Secret",
            ],
        ),
        (
            "an empty userinfo is no credential",
            "https://@mirror.example.org/debian/",
            &[],
        ),
        (
            "a query",
            "https://mirror.example.org/debian/?x=/",
            &[
                "spec.projects[0].https: https://mirror.example.org/debian/?x=/ must not have a query or fragment",
            ],
        ),
        (
            "a backslash: browsers go to mirror.example.org, curl to evil.example",
            "https://mirror.example.org\\@evil.example/",
            &[
                "spec.projects[0].https: https://evil.example/ must not carry credentials: manifests are public, so put credentials in a Secret",
                "spec.projects[0].https: \"https://mirror.example.org\\@evil.example/\" must not contain a backslash: browsers read it as /, other clients do not",
            ],
        ),
        (
            "no host",
            "https:///debian/",
            &["spec.projects[0].https: https:///debian/ has no host"],
        ),
        (
            "a forbidden host character",
            "https://mirror<1>.example.org/debian/",
            &[
                "spec.projects[0].https: \"https://mirror<1>.example.org/debian/\" is not a valid URL: invalid host or port",
            ],
        ),
        (
            "an IPv4 address out of range",
            "https://192.0.2.256/debian/",
            &[
                "spec.projects[0].https: \"https://192.0.2.256/debian/\" is not a valid URL: invalid IPv4 address (write it as four decimal numbers, e.g. 192.0.2.1)",
            ],
        ),
        (
            "a domain ending in a number",
            "https://mirror.123/debian/",
            &[
                "spec.projects[0].https: \"https://mirror.123/debian/\" is not a valid URL: invalid IPv4 address (write it as four decimal numbers, e.g. 192.0.2.1)",
            ],
        ),
        (
            "an IPv6 address that is not one",
            "https://[2001:db8::g]/debian/",
            &[
                "spec.projects[0].https: \"https://[2001:db8::g]/debian/\" is not a valid URL: invalid IPv6 address",
            ],
        ),
        (
            "a port of six digits (in a mirror's list, five are allowed)",
            "https://mirror.example.org:443443/debian/",
            &[
                "spec.projects[0].https: \"https://mirror.example.org:443443/debian/\" is not a valid URL: invalid host or port",
            ],
        ),
    ];
    for (why, url, want) in rows {
        // Both families, so that the address family rule stays out of these rows.
        let spec = mirror(url, json!({"addressFamilies": ["ipv4", "ipv6"]}));
        let got = problems("Mirror", spec);
        assert!(got.iter().all(|p| p.starts_with(path)), "{why}: {got:?}");
        assert_eq!(got, *want, "{why}");
    }
}

#[test]
fn source_urls_are_checked_to_the_port_and_rsync_hosts_are_opaque() {
    let rows: &[(&str, Value, &[&str])] = &[
        (
            "credentials in an rsync URL",
            json!({"rsync": "rsync://user:hunter2@origin.example.org/secret/"}),
            &[
                "spec.source.rsync: rsync://origin.example.org/secret/ must not carry credentials: manifests are public, so put credentials in a Secret",
            ],
        ),
        (
            "an rsync host may hold a %",
            json!({"rsync": "rsync://a%zz/m/"}),
            &[],
        ),
        (
            "but not a backslash",
            json!({"rsync": "rsync://origin\\example.org/m/"}),
            &[
                "spec.source.rsync: \"rsync://origin\\example.org/m/\" is not a valid URL: invalid host or port",
            ],
        ),
        (
            "a port above 65535",
            json!({"http": "https://origin.example.org:65536/p/"}),
            &[
                "spec.source.http: \"https://origin.example.org:65536/p/\" is not a valid URL: invalid port number",
            ],
        ),
        (
            "port 65535",
            json!({"http": "https://origin.example.org:065535/p/"}),
            &[],
        ),
        (
            "no host",
            json!({"rsync": "rsync:///module/"}),
            &["spec.source.rsync: rsync:///module/ has no host"],
        ),
    ];
    for (why, source, want) in rows {
        assert_eq!(
            problems("Project", project(source.clone(), json!({}))),
            *want,
            "{why}"
        );
    }
}

#[test]
fn rules_spanning_fields_of_a_mirror() {
    let rows: &[(&str, Value, &[&str])] = &[
        (
            "its own country excluded",
            mirror(
                OK,
                json!({"location": {"country": "DE"}, "restrictions": {"excludedCountries": ["FR", "DE"]}}),
            ),
            &[
                "spec.restrictions.excludedCountries: DE is a country this mirror serves; it cannot also be excluded",
            ],
        ),
        (
            "an additional country excluded",
            mirror(
                OK,
                json!({"additionalCountries": ["AT"], "restrictions": {"excludedCountries": ["AT"]}}),
            ),
            &[
                "spec.restrictions.excludedCountries: AT is a country this mirror serves; it cannot also be excluded",
            ],
        ),
        (
            "two area restrictions",
            mirror(
                OK,
                json!({"location": {"country": "DE"}, "restrictions": {"countryOnly": true, "continentOnly": true}}),
            ),
            &[
                "spec.restrictions.continentOnly: countryOnly already implies a narrower area; set only one of countryOnly and continentOnly",
            ],
        ),
        (
            "an IPv4 host on an IPv6-only mirror",
            mirror(
                "https://192.0.2.10/debian/",
                json!({"addressFamilies": ["ipv6"]}),
            ),
            &[
                "spec.projects: the host of https://192.0.2.10/debian/ is an IPv4 address, but addressFamilies is [ipv6]",
            ],
        ),
        (
            "an IPv6 host on an IPv4-only mirror (the default)",
            mirror("https://[2001:db8::10]/debian/", json!({})),
            &[
                "spec.projects: the host of https://[2001:db8::10]/debian/ is an IPv6 address, but addressFamilies is [ipv4]",
            ],
        ),
        (
            "both families",
            mirror(
                "https://[2001:db8::10]/debian/",
                json!({"addressFamilies": ["ipv4", "ipv6"]}),
            ),
            &[],
        ),
    ];
    for (why, spec, want) in rows {
        assert_eq!(problems("Mirror", spec.clone()), *want, "{why}");
    }
}

#[test]
fn white_space_the_schema_pattern_misses_on_the_server() {
    // `validate` refuses these by the pattern `[^\s]` already; the rule is for RE2's `\s`.
    let spec = json!({"displayName": "S", "url": "https://sponsor.example/\u{a0}x"});
    assert_eq!(
        problems("Sponsor", spec),
        ["spec.url: \"https://sponsor.example/\u{a0}x\" must not contain white space"]
    );
}
