//! `allowed_outbound_hosts`: which `scheme://host:port` a guest may send requests to.
//!
//! Entries are exact: a scheme, a host (a name, `*.` and a name for its subdomains, an
//! IP literal, or `localhost`) and a port (the scheme's when left out). Nothing else is
//! accepted: no paths, no user info, no bare `*`, so that an entry reads as exactly what
//! it allows.

use std::fmt;
use std::net::IpAddr;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// What an entry's host part names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// One name, lowercase, without a trailing dot.
    Name(String),
    /// `*.suffix`: any name that ends in `.suffix` (not `suffix` itself).
    Subdomains(String),
    /// An IP literal.
    Ip(IpAddr),
}

/// One entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Scheme,
    host: HostPattern,
    port: u16,
}

impl AllowedHost {
    /// Parses `scheme://host[:port]`.
    ///
    /// # Errors
    /// What is wrong with the entry and what a valid one looks like.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let shape = "entries look like \"https://api.example.com\", \"https://*.example.com\" or \"http://127.0.0.1:8080\"";
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| format!("{entry:?} has no scheme; {shape}"))?;
        let scheme = Scheme::parse(&scheme.to_ascii_lowercase()).ok_or_else(|| {
            format!("{entry:?}: the scheme must be http or https (wasi:http speaks nothing else)")
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(format!(
                "{entry:?}: give only scheme, host and port, with no path, query or user; {shape}"
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| {
            format!("{entry:?}: the port must be a number from 1 to 65535; {shape}")
        })?;
        let port = port.unwrap_or(scheme.default_port());
        let host = parse_pattern(host).map_err(|why| format!("{entry:?}: {why}; {shape}"))?;
        Ok(Self { scheme, host, port })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether this entry allows a request to `scheme://host:port`; `host` as in a URI
    /// (IPv6 in brackets), any case.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if scheme != self.scheme || port != self.port {
            return false;
        }
        let host = normalize(host);
        match &self.host {
            HostPattern::Ip(ip) => parse_ip(&host) == Some(*ip),
            HostPattern::Name(name) => *name == host,
            HostPattern::Subdomains(suffix) => {
                parse_ip(&host).is_none()
                    && host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Whether the entry names its destination literally (an IP literal or
    /// `localhost`), which is what allows loopback and private addresses.
    pub fn is_literal(&self) -> bool {
        match &self.host {
            HostPattern::Ip(_) => true,
            HostPattern::Name(name) => name == "localhost",
            HostPattern::Subdomains(_) => false,
        }
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.name())?;
        match &self.host {
            HostPattern::Name(name) => f.write_str(name)?,
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        write!(f, ":{}", self.port)
    }
}

/// The whole allow-list of an activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowedHost>,
}

impl AllowList {
    /// A list of `entries`; empty denies everything.
    pub fn new(entries: Vec<AllowedHost>) -> Self {
        Self { entries }
    }

    /// The first entry that allows `scheme://host:port`.
    pub fn find(&self, scheme: Scheme, host: &str, port: u16) -> Option<&AllowedHost> {
        self.entries
            .iter()
            .find(|entry| entry.allows(scheme, host, port))
    }

    /// The entries.
    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `host[:port]`, with IPv6 hosts in brackets; `None` when the port is not a number
/// from 1 to 65535.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        match after {
            "" => (ip, None),
            _ => (ip, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    match port {
        None => Some((host, None)),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some((host, Some(port))),
            _ => None,
        },
    }
}

fn parse_pattern(host: &str) -> Result<HostPattern, String> {
    let host = normalize(host);
    if let Some(ip) = parse_ip(&host) {
        return Ok(HostPattern::Ip(ip));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host.as_str()),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(if host.contains('*') {
            "`*` may only stand for subdomains, as the first label (`*.example.com`)".into()
        } else {
            format!("{host:?} is not a host name or IP address")
        });
    }
    Ok(if wildcard {
        HostPattern::Subdomains(name.to_owned())
    } else {
        HostPattern::Name(name.to_owned())
    })
}

/// Lowercase, without a trailing dot or IPv6 brackets.
fn normalize(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, scheme: Scheme, host: &str, port: u16) -> bool {
        AllowedHost::parse(entry)
            .unwrap()
            .allows(scheme, host, port)
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        use Scheme::{Http, Https};
        assert!(allows(
            "https://api.example.com",
            Https,
            "api.example.com",
            443
        ));
        assert!(allows(
            "https://api.example.com",
            Https,
            "API.Example.com.",
            443
        ));
        assert!(!allows(
            "https://api.example.com",
            Http,
            "api.example.com",
            80
        ));
        assert!(!allows(
            "https://api.example.com",
            Https,
            "api.example.com",
            8443
        ));
        assert!(!allows(
            "https://api.example.com",
            Https,
            "x.api.example.com",
            443
        ));
        assert!(!allows(
            "https://api.example.com",
            Https,
            "api.example.com.evil.net",
            443
        ));
        assert!(allows("http://127.0.0.1:8080", Http, "127.0.0.1", 8080));
        assert!(!allows("http://127.0.0.1:8080", Http, "127.0.0.1", 80));
        assert!(allows("http://[::1]:9000/", Http, "[::1]", 9000));
        assert!(allows("http://[::1]:9000", Http, "[0:0::1]", 9000));
    }

    #[test]
    fn a_wildcard_matches_subdomains_only() {
        use Scheme::Https;
        let entry = "https://*.s3.amazonaws.com";
        assert!(allows(entry, Https, "bucket.s3.amazonaws.com", 443));
        assert!(allows(entry, Https, "a.b.s3.amazonaws.com", 443));
        assert!(!allows(entry, Https, "s3.amazonaws.com", 443));
        assert!(!allows(entry, Https, "evils3.amazonaws.com", 443));
        assert!(!allows(entry, Https, "s3.amazonaws.com.evil.net", 443));
    }

    #[test]
    fn only_ip_literals_and_localhost_are_literal() {
        let literal = |entry: &str| AllowedHost::parse(entry).unwrap().is_literal();
        assert!(literal("http://127.0.0.1:8080"));
        assert!(literal("http://localhost:8080"));
        assert!(literal("http://[fd00::1]"));
        assert!(!literal("http://my-service.internal"));
        assert!(!literal("https://*.example.com"));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (entry, says) in [
            ("api.example.com", "no scheme"),
            ("ftp://example.com", "http or https"),
            ("https://example.com/path", "no path"),
            ("https://user@example.com", "no path, query or user"),
            ("https://example.com:0", "port"),
            ("https://example.com:99999", "port"),
            ("https://*", "`*` may only"),
            ("https://a.*.example.com", "`*` may only"),
            ("https://*example.com", "`*` may only"),
            ("https://exa mple.com", "not a host name"),
            ("https://", "no path"),
        ] {
            let err = AllowedHost::parse(entry).expect_err(entry);
            assert!(err.contains(says), "{entry}: {err}");
        }
    }

    #[test]
    fn entries_print_with_their_port() {
        let shown = |entry: &str| AllowedHost::parse(entry).unwrap().to_string();
        assert_eq!(
            shown("https://API.example.com"),
            "https://api.example.com:443"
        );
        assert_eq!(shown("http://*.example.com"), "http://*.example.com:80");
        assert_eq!(shown("http://[::1]:8080"), "http://[::1]:8080");
    }
}
