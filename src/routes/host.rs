//! The authority a request is routed on.
//!
//! `b.example`, `B.EXAMPLE`, `b.example.` and `b.example.:443` name one site to DNS, browsers and most
//! upstreams; `bücher.example` and `xn--bcher-kva.example` too. A router comparing them as text sends the
//! odd spellings to the host-less route, with another app's rules (the trailing-dot bypass). So every
//! authority, whether from `Host`, an absolute-form target or a trusted proxy's `X-Forwarded-Host`, is
//! normalised here once, routed on in that form and sent upstream in that form; what cannot be normalised
//! is refused rather than read as something else.

use std::fmt;
use std::net::Ipv6Addr;

/// Why a host was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the host is empty")]
    Empty,
    #[error("the host contains a byte no host name has (control, space, `/`, `\\`, `@`, `%`, not UTF-8)")]
    ForbiddenByte,
    #[error("the port is not a number between 1 and 65535")]
    BadPort,
    #[error("the IPv6 literal is malformed")]
    BadIpv6,
    #[error("the host is not a valid name (empty label, invalid IDNA, label over 63 or name over 253 bytes)")]
    BadName,
}

/// A normalised `host[:port]`: lower-case ASCII (IDNA names in punycode), no trailing dot, IPv6 literals
/// in brackets in canonical form, port without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    /// The host alone, as routes match it.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether `raw` is this authority written exactly as `Display` writes it, so that a received `Host`
    /// can be sent on as it is instead of being formatted again.
    pub fn is_spelled(&self, raw: &[u8]) -> bool {
        let Some(rest) = raw.strip_prefix(self.host.as_bytes()) else {
            return false;
        };
        match (self.port, rest.split_first()) {
            (None, None) => true,
            (Some(port), Some((b':', digits))) => {
                digits.first().is_some_and(|d| *d != b'0')
                    && digits.len() <= 5
                    && digits.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u16>().ok())
                        == Some(port)
            }
            _ => false,
        }
    }

    /// Reads an authority (`Host` value, absolute-form authority, `X-Forwarded-Host` value).
    pub fn parse(raw: &[u8]) -> Result<Authority, HostError> {
        let text = std::str::from_utf8(raw).map_err(|_| HostError::ForbiddenByte)?;
        let text = text.trim_matches([' ', '\t']);
        if text.is_empty() {
            return Err(HostError::Empty);
        }
        if text.len() > 300 {
            return Err(HostError::BadName);
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (literal, after) = rest.split_once(']').ok_or(HostError::BadIpv6)?;
            let address: Ipv6Addr = literal.parse().map_err(|_| HostError::BadIpv6)?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(
                    after.strip_prefix(':').ok_or(HostError::BadIpv6)?,
                )?),
            };
            return Ok(Authority {
                host: format!("[{address}]"),
                port,
            });
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(parse_port(port)?)),
            None => (text, None),
        };
        Ok(Authority {
            host: normalise_host_name(name)?,
            port,
        })
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, HostError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort),
        Ok(port) => Ok(port),
    }
}

/// Normalises a host name (no port): one trailing dot dropped, IDNA to punycode, lower case. Also used
/// for the `host` of routes in the configuration, so both sides of a comparison have the same form.
pub fn normalise_host_name(name: &str) -> Result<String, HostError> {
    if name.bytes().any(|b| {
        matches!(
            b,
            0..=0x20 | 0x7f | b'/' | b'\\' | b'@' | b'%' | b':' | b'[' | b']' | b'#' | b'?'
        )
    }) {
        return Err(HostError::ForbiddenByte);
    }
    if name.is_empty() || name == "." {
        return Err(HostError::Empty);
    }
    let mut ascii = if is_canonical_name(name) {
        name.to_owned()
    } else if name.parse::<std::net::Ipv4Addr>().is_ok() {
        // Dotted decimal without leading zeros (the standard parser refuses them): already the form the WHATWG
        // parser gives back, so the text is kept rather than formatted again on every request.
        return Ok(name.to_owned());
    } else {
        // The WHATWG host parser: UTS 46 (IDNA) mapping to punycode, lower case, IPv4 in its canonical
        // dotted form (`0x7f.1` is 127.0.0.1, as browsers read it).
        match url::Host::parse(name).map_err(|_| HostError::BadName)? {
            url::Host::Domain(domain) => domain,
            url::Host::Ipv4(address) => return Ok(address.to_string()),
            url::Host::Ipv6(_) => return Err(HostError::BadIpv6),
        }
    };
    // One trailing dot, dropped after the mapping so that every spelling of it counts (`。`, `．`).
    if ascii.ends_with('.') {
        ascii.pop();
    }
    let valid = ascii.len() <= 253
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(HostError::BadName);
    }
    Ok(ascii)
}

/// A name the WHATWG parser would give back unchanged: lower-case letters, digits, `-`, `_` and dots, no
/// punycode label (its decoding must be checked), and a last label that starts with a letter, so it cannot
/// be read as an IPv4 number. What almost every request carries, so it skips the IDNA machinery.
fn is_canonical_name(name: &str) -> bool {
    let last = name.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && last.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && !name.split('.').any(|label| label.starts_with("xn--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, HostError> {
        Authority::parse(raw.as_bytes()).map(|a| a.to_string())
    }

    #[test]
    fn spellings_of_one_site_are_one_authority() {
        for (raw, expected) in [
            ("b.example", "b.example"),
            ("B.EXAMPLE", "b.example"),
            ("b.example.", "b.example"),
            ("B.EXAMPLE\u{3002}", "b.example"),
            ("b.example\u{ff0e}", "b.example"),
            ("b.example.:8080", "b.example:8080"),
            ("B.Example.:80", "b.example:80"),
            ("b.example:0080", "b.example:80"),
            ("b.example:65535", "b.example:65535"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
            ("[::1]", "[::1]"),
            ("[0:0::1]:8080", "[::1]:8080"),
            ("[::FFFF:7F00:1]", "[::ffff:127.0.0.1]"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("127.000.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("localhost", "localhost"),
            ("my_host.intra", "my_host.intra"),
            (" b.example ", "b.example"),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(expected), "{raw}");
        }
        let a = Authority::parse(b"b.example.:8080").unwrap();
        assert_eq!((a.host(), a.port()), ("b.example", Some(8080)));
    }

    #[test]
    fn an_authority_is_spelled_only_as_it_is_displayed() {
        for raw in [
            "b.example",
            "B.EXAMPLE",
            "b.example.",
            "b.example:8080",
            "b.example:08080",
            "b.example.:8080",
            " b.example",
            "127.0.0.1:8080",
            "127.000.0.1",
            "[::1]:443",
            "[0:0::1]",
            "bücher.example",
        ] {
            let a = Authority::parse(raw.as_bytes()).unwrap();
            assert_eq!(a.is_spelled(raw.as_bytes()), a.to_string() == raw, "{raw}");
            assert!(a.is_spelled(a.to_string().as_bytes()), "{raw}");
        }
        let a = Authority::parse(b"b.example:8080").unwrap();
        for other in [
            "b.example",
            "b.example:80",
            "b.example:8081",
            "b.example:80800",
            "b.examplex:8080",
        ] {
            assert!(!a.is_spelled(other.as_bytes()), "{other}");
        }
        assert!(!Authority::parse(b"b.example")
            .unwrap()
            .is_spelled(b"b.example:80"));
    }

    #[test]
    fn the_fast_path_agrees_with_the_whatwg_parser() {
        for name in [
            "b.example",
            "localhost",
            "a-b.c_d.example",
            "-a.example",
            "a--b.example",
            "x1.example",
            "b.example.",
            "a.b.c.d.example",
        ] {
            assert!(is_canonical_name(name), "{name}");
            let parsed = match url::Host::parse(name).unwrap() {
                url::Host::Domain(d) => d,
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(parsed, name);
        }
        for name in [
            "B.example",
            "1.2.3.4",
            "b.0x7f",
            "b.1",
            "xn--bcher-kva.example",
            "a.xn--zz",
            "bücher.example",
            "",
        ] {
            assert!(!is_canonical_name(name), "{name}");
        }
    }

    #[test]
    fn what_is_not_a_host_is_refused() {
        for raw in [
            "",
            ".",
            "b.example..",
            "b.example\u{3002}.",
            "\u{3002}",
            ".b.example",
            "b..example",
            "b.example/x",
            "b.example\\x",
            "u@b.example",
            "%62.example",
            "b example",
            "b.example\x01",
            "b.example\x7f",
            "b.example:",
            "b.example:0",
            "b.example:65536",
            "b.example:123456",
            "b.example:abc",
            "b.example:-1",
            "a:b:c",
            "[::1",
            "[zz]",
            "[::1]x",
            "[::1]:",
            "[fe80::1%25eth0]",
            "xn--zz",
            "a.xn--",
            "b.example#",
            "b.example?",
            "b.ex!ample",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}example", "abcdefghi.".repeat(26)),
        ] {
            assert!(
                norm(raw).is_err(),
                "{raw:?} must be refused, got {:?}",
                norm(raw)
            );
        }
        assert_eq!(
            Authority::parse(b"b\xff.example"),
            Err(HostError::ForbiddenByte)
        );
    }

    #[test]
    fn config_names_use_the_same_form() {
        assert_eq!(
            normalise_host_name("Bücher.Example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalise_host_name("app.example.").unwrap(), "app.example");
        assert!(normalise_host_name("app..example").is_err());
    }
}
