//! The CEL rules (`x-kubernetes-validations`) with which the API server refuses what
//! `mirrorfleet validate` refuses about one object alone beyond plain OpenAPI: assigned
//! country codes, continents that agree with countries, CIDRs without host bits, base URLs
//! with a host, a valid port and no credentials, query or fragment, a mirror that does not
//! exclude a country it serves, and so on. The resource modules attach them with
//! `#[schemars(transform = cel::…)]`, on the field or on the struct.
//!
//! Every rule is evaluated twice, and must mean the same both times: by the API server
//! (cel-go, RE2) and by `mirrorfleet validate` (kube-cel, the Rust `regex` crate). So the rules
//! use only what both implement alike: `matches` with escaped `[`/`]` in classes and no
//! look-around, `contains`/`startsWith`/`split`/`substring`/`indexOf`/`lastIndexOf` (both
//! count code points), `isIP`, `isCIDR`, `cidr(…).masked()`, `format`, and `[x].all(v, …)` to
//! name a value once (kube-cel has no `cel.bind`, `type` or `dyn`).
//!
//! The API server also estimates each rule's worst-case cost from `maxLength`/`maxItems`, and
//! refuses a CRD over budget: 10⁷ per rule (its cost times how many times it may run), 10⁸
//! per CRD (counting only rules above 1% of that). A `matches` costs the string's `maxLength`
//! × 4 bytes × 0.1 × the pattern's length / 4, so a URL of up to 2048 characters in a list of
//! 500 projects pays about 10⁵ per character of pattern: patterns are short, control
//! characters are CEL escapes, and no message concatenates a string of unknown size
//! (`format` is used instead). The Mirror CRD uses most of its budget: with the port range
//! checked in its project URLs too, the server estimated it at 1.04 × 10⁸.
//!
//! Where WHATWG URL parsing (what `validate` uses) or `ipnet` cannot be written in CEL, the
//! rules refuse the rare forms in question, so that `validate` (which evaluates these rules
//! too) and the server still agree: backslashes in http(s)/ftp URLs, an empty authority
//! (`https:///host/`), `%` in their host names, numeric hosts other than four decimal
//! numbers, IPv4-mapped IPv6 hosts and networks, leading zeros and `::` standing for no group
//! in CIDRs. Not checked here: IDNA (UTS 46) validity of non-ASCII and `xn--` host names, and
//! the range of a port of a mirror's project URL (five digits are allowed, up to 99999).
//!
//! Pure: builds strings and schema fragments, no I/O.

use schemars::Schema;
use serde_json::{Map, Value, json};

use crate::geo;

/// One rule: the expression, a message for when it fails (`message_expression` first, the
/// static `message` when that cannot be evaluated) and the field it is about.
#[derive(Debug)]
struct Check {
    rule: String,
    message: String,
    message_expression: Option<String>,
    field_path: Option<String>,
}

impl Check {
    fn new(rule: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            rule: rule.into(),
            message: message.into(),
            message_expression: None,
            field_path: None,
        }
    }

    fn explained(mut self, expression: impl Into<String>) -> Check {
        self.message_expression = Some(expression.into());
        self
    }

    fn at(mut self, field_path: impl Into<String>) -> Check {
        self.field_path = Some(field_path.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut rule = json!({ "rule": self.rule, "message": self.message });
        if let Some(e) = &self.message_expression {
            rule["messageExpression"] = e.as_str().into();
        }
        if let Some(p) = &self.field_path {
            rule["fieldPath"] = p.as_str().into();
        }
        rule
    }
}

/// On a country code (a string whose pattern `^[A-Z]{2}$` comes first): an assigned ISO
/// 3166-1 alpha-2 code.
pub(super) fn country_code(schema: &mut Schema) {
    add(schema.ensure_object(), [assigned_country()]);
}

/// On a list of country codes: each is an assigned ISO 3166-1 alpha-2 code.
pub(super) fn country_items(schema: &mut Schema) {
    if let Some(items) = schema.get_mut("items").and_then(Value::as_object_mut) {
        add(items, [assigned_country()]);
    }
}

/// On a list of networks: each is a CIDR without host bits.
pub(super) fn cidr_items(schema: &mut Schema) {
    if let Some(items) = schema.get_mut("items").and_then(Value::as_object_mut) {
        add(items, cidr());
    }
}

/// On an object with `country` and `continent`: the continent is the country's.
pub(super) fn continent_of_country(schema: &mut Schema) {
    let map = continent_map();
    let check = Check::new(
        format!(
            "!has(self.country) || !has(self.continent) || !(self.country in {map}) || {map}[self.country] == self.continent"
        ),
        "is not the continent of this country",
    )
    .explained(format!(
        "self.country + ' is in ' + {map}[self.country] + ', not ' + self.continent"
    ))
    .at(".continent");
    add(schema.ensure_object(), [check]);
}

/// On a mirror's spec: no country in `restrictions.excludedCountries` is one the mirror serves
/// (its own country or one of `additionalCountries`).
pub(super) fn excluded_not_served(schema: &mut Schema) {
    let served = "(has(self.location) && has(self.location.country) && self.location.country == c) || (has(self.additionalCountries) && c in self.additionalCountries)";
    let excluded = "self.restrictions.excludedCountries";
    let check = Check::new(
        format!("!has(self.restrictions) || !has({excluded}) || !{excluded}.exists(c, {served})"),
        "names a country this mirror serves; it cannot also be excluded",
    )
    .explained(format!(
        "{excluded}.filter(c, {served})[0] + ' is a country this mirror serves; it cannot also be excluded'"
    ))
    .at(".restrictions.excludedCountries");
    add(schema.ensure_object(), [check]);
}

/// On a mirror's restrictions: `countryOnly` and `continentOnly` are not both set.
pub(super) fn one_area_restriction(schema: &mut Schema) {
    let check = Check::new(
        "!(has(self.countryOnly) && self.countryOnly && has(self.continentOnly) && self.continentOnly)",
        "countryOnly already implies a narrower area; set only one of countryOnly and continentOnly",
    )
    .at(".continentOnly");
    add(schema.ensure_object(), [check]);
}

/// On a mirror's spec: an http(s) URL whose host is an IPv4 (IPv6) address needs `ipv4`
/// (`ipv6`) in `addressFamilies`.
pub(super) fn address_families(schema: &mut Schema) {
    let checks = [("ipv4", "IPv4", "ipv6"), ("ipv6", "IPv6", "ipv4")].map(|(family, name, other)| {
        // The URL rules have made sure that the authority ends at the first `/`; a URL with
        // credentials is refused by them, and not looked at here.
        let on = |scheme: &str| {
            let literal = if family == "ipv4" {
                format!("isIP(p.{scheme}.split('/')[2].split(':')[0])")
            } else {
                format!("p.{scheme}.startsWith('{scheme}://[')")
            };
            format!("(has(p.{scheme}) && {literal})")
        };
        let (http, https) = (on("http"), on("https"));
        Check::new(
            format!(
                "(has(self.addressFamilies) && '{family}' in self.addressFamilies) || !self.projects.exists(p, {http} || {https})"
            ),
            format!("a project's host is an {name} address, but addressFamilies is [{other}]"),
        )
        .explained(format!(
            "'the host of %s is an {name} address, but addressFamilies is [{other}]'.format([(self.projects.filter(p, {http}).map(p, p.http) + self.projects.filter(p, {https}).map(p, p.https))[0]])"
        ))
        .at(".projects")
    });
    add(schema.ensure_object(), checks);
}

/// On a string field whose pattern says `[^\s]`: refuses the white space that the Rust
/// `regex` crate's `\s` matches and RE2's does not (`validate`'s pattern check refuses it).
pub(super) fn no_unicode_space(schema: &mut Schema) {
    add(schema.ensure_object(), [unicode_space()]);
}

/// On an `http://`, `https://` or `ftp://` base URL.
pub(super) fn special_url(schema: &mut Schema) {
    add(schema.ensure_object(), url(Authority::Special, Port::Range));
}

/// On an `rsync://` base URL.
pub(super) fn rsync_url(schema: &mut Schema) {
    add(schema.ensure_object(), url(Authority::Opaque, Port::Range));
}

/// [`special_url`] for a field of a mirror's project (a list of up to 500).
pub(super) fn special_url_in_long_list(schema: &mut Schema) {
    add(
        schema.ensure_object(),
        url(Authority::Special, Port::FiveDigits),
    );
}

/// [`rsync_url`] for a field of a mirror's project (a list of up to 500).
pub(super) fn rsync_url_in_long_list(schema: &mut Schema) {
    add(
        schema.ensure_object(),
        url(Authority::Opaque, Port::FiveDigits),
    );
}

/// On an object with base URL fields: none carries credentials. This rule sits on the object
/// rather than on each field because the API server quotes the value of a string field in its
/// message when a rule on it fails, and a password must not end up in CI logs.
pub(super) fn no_credentials(fields: &'static [&'static str]) -> impl FnMut(&mut Schema) {
    move |schema: &mut Schema| {
        let checks = fields.iter().map(|field| {
            let url = format!("self.{field}");
            let authority = format!("{url}.split('/')[2]");
            let host_port = format!("{authority}.substring({authority}.lastIndexOf('@') + 1)");
            let credentials = "must not carry credentials: manifests are public, so put credentials in a Secret";
            // The message shows the URL with everything up to the authority's last `@` left
            // out.
            Check::new(
                format!("!has({url}) || {url}.matches('^[^/]*//(:?@)?[^/@]*/')"),
                credentials,
            )
            .explained(format!(
                "'%s//%s%s {credentials}'.format([{url}.split('/')[0], {host_port}, {url}.substring(size({url}.split('/')[0]) + 2 + size({authority}))])"
            ))
            .at(format!(".{field}"))
        });
        add(schema.ensure_object(), checks);
    }
}

/// The host syntax of a URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Authority {
    /// `http`, `https`, `ftp`: a domain name or an IP address.
    Special,
    /// `rsync`: an opaque host, anything but a few characters.
    Opaque,
}

/// How far a port is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// 0 to 65535.
    Range,
    /// At most five digits (leading zeros aside): what fits the cost budget in a long list.
    FiveDigits,
}

/// The rules on a base URL but credentials (the field's pattern has already required
/// `scheme://…/`). Each looks at the authority (up to the first `/`, once `\`, `?` and `#`
/// are refused) and says one thing, as `validate` does; a URL with several problems gets
/// several messages.
fn url(authority: Authority, port: Port) -> Vec<Check> {
    // The host: a bracketed IPv6 address or, for http(s)/ftp, a domain name (IDNA is not
    // checked) or IPv4 address without the WHATWG forbidden domain code points, for rsync an
    // opaque host without the forbidden host code points. Within a CEL string, so `\\[` is a
    // regex `\[`, and control characters are CEL escapes (the pattern's length is its cost).
    let host = match authority {
        Authority::Special => r"(\\[[^/]*\\]|[^/@:\\[\\]\\\\%<>^|\u0000-\u0020\u007f]+)",
        Authority::Opaque => r"(\\[[^/]*\\]|[^/@:\\[\\]\\\\<>^|\u0000\t\n\r ]+)",
    };
    let port_digits = match port {
        Port::Range => "(:[0-9]*)?",
        Port::FiveDigits => "(:0*[0-9]{0,5})?",
    };
    let host_port = "self.split('/')[2].substring(self.split('/')[2].lastIndexOf('@') + 1)";
    let ipv6 =
        "hp.contains(']') && [hp.substring(1, hp.indexOf(']'))].all(v, isIP(v) && v.contains(':'))";
    let ip = match authority {
        Authority::Opaque => format!("!hp.startsWith('[') || ({ipv6})"),
        // A host ending in a number is an IPv4 address to the WHATWG parser; this takes only
        // the usual four decimal numbers (not `1`, `0x7f.1` or `010.0.0.1`).
        Authority::Special => format!(
            r"hp.startsWith('[') ? ({ipv6}) : [hp.split(':')[0]].all(h, !h.matches(r'(^|\.)([0-9]+|0[xX][0-9a-fA-F]*)\.?$') || isIP(h))"
        ),
    };
    let invalid = |why: &str| format!(r#"'"' + self + '" is not a valid URL: {why}'"#);
    let mut checks = vec![unicode_space()];
    if authority == Authority::Special {
        // The WHATWG parser (`validate`'s) reads a backslash in an http(s) or ftp URL as `/`;
        // curl and most other clients do not.
        checks.push(
            Check::new(
                r"!self.contains('\\')",
                "must not contain a backslash: browsers read it as /, other clients do not",
            )
            .explained(r#"'"' + self + '" must not contain a backslash: browsers read it as /, other clients do not'"#),
        );
    }
    checks.push(
        Check::new("!self.matches('[?#]')", "must not have a query or fragment")
            .explained("self + ' must not have a query or fragment'"),
    );
    checks.push(
        Check::new(
            format!("self.matches('^[^/]*//([^/]*@)?{host}{port_digits}/')"),
            "is not a valid URL: invalid host or port",
        )
        .explained(format!(
            "self.split('/')[2] == '' ? self + ' has no host' : {}",
            invalid("invalid host or port")
        )),
    );
    let ip_problem = match authority {
        Authority::Opaque => invalid("invalid IPv6 address"),
        Authority::Special => format!(
            "self.contains('//[') || self.contains('@[') ? {} : {}",
            invalid("invalid IPv6 address"),
            invalid("invalid IPv4 address (write it as four decimal numbers, e.g. 192.0.2.1)")
        ),
    };
    checks.push(
        Check::new(
            format!("[{host_port}].all(hp, {ip})"),
            "is not a valid URL: invalid IP address",
        )
        .explained(ip_problem),
    );
    if port == Port::Range {
        checks.push(
            Check::new(
                format!(
                    "[{host_port}].all(hp, hp.lastIndexOf(':') <= hp.lastIndexOf(']') || [hp.substring(hp.lastIndexOf(':') + 1)].all(p, p.matches('^0*[0-9]{{0,5}}$') && int('0' + p) <= 65535))"
                ),
                "is not a valid URL: invalid port number",
            )
            .explained(invalid("invalid port number")),
        );
    }
    checks
}

/// An assigned ISO 3166-1 alpha-2 code, on a string.
fn assigned_country() -> Check {
    let codes: Vec<String> = geo::countries()
        .iter()
        .map(|c| format!("'{}'", c.code))
        .collect();
    let hints: String = geo::MISTAKEN_CODES
        .iter()
        .map(|(code, hint)| format!("self == '{code}' ? ' ({hint})' : "))
        .collect();
    // The static message is what kube-cel shows for `null` (the API server skips nulls).
    Check::new(
        format!("self in [{}]", codes.join(", ")),
        "must be an ISO 3166-1 alpha-2 country code; to give none, leave the field out rather than writing null",
    )
    .explained(format!(
        "self + ' is not an ISO 3166-1 alpha-2 country code' + ({hints}'')"
    ))
}

/// Every assigned code with its continent, as a CEL map literal.
fn continent_map() -> String {
    let pairs: Vec<String> = geo::countries()
        .iter()
        .map(|c| format!("'{}': '{}'", c.code, c.continent.code()))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// A CIDR as `validate` reads it (`ipnet`), and as cel-go's `isCIDR` does (`netip`): the two
/// differ only on leading zeros (`010.0.0.0/8`, `/08`), on `::` standing for no group at all
/// (`1::2:3:4:5:6:7:8`) and on IPv4-mapped IPv6 (both `isCIDR`s refuse those); this refuses
/// all of them. Then: no host bits.
fn cidr() -> [Check; 2] {
    let valid = r"isCIDR(self) && !self.matches(r'(^|[.:])0[0-9]+\.|\.0[0-9]+/|/0[0-9]') && !(self.contains('::') && self.matches(r'^:*([0-9A-Fa-f]{1,4}:+){7}[0-9A-Fa-f]|^:*([0-9A-Fa-f]{1,4}:+){6}[0-9]+\.'))";
    [
        Check::new(valid, "is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32")
            .explained(r#"'"' + self + '" is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32'"#),
        Check::new(
            format!("!({valid}) || cidr(self).masked() == cidr(self)"),
            "has host bits set: give the network address",
        )
        .explained(
            "'%s has host bits set; the network is %s'.format([self, string(cidr(self).masked())])",
        ),
    ]
}

/// White space that the Rust `regex` crate's `\s` matches and RE2's `\s` does not (as CEL
/// escapes, so that the pattern stays short).
fn unicode_space() -> Check {
    Check::new(
        r"!self.matches('[\u000B\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]')",
        "must not contain white space",
    )
    .explained(r#"'"' + self + '" must not contain white space'"#)
}

/// Appends `checks` to the `x-kubernetes-validations` of the schema `at`.
fn add(at: &mut Map<String, Value>, checks: impl IntoIterator<Item = Check>) {
    let list = at
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        list.extend(checks.into_iter().map(|c| c.to_json()));
    }
}

#[cfg(test)]
mod tests;
