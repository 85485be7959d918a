//! Identity headers: which inbound headers are stripped, and how claim values are written.

use crate::config::HeaderEncoding;
use base64::Engine;

/// Header names that peers and legacy stacks treat as identity, stripped on every request whatever the
/// configuration (oauth2-proxy, mod_auth_openidc, Apache `REMOTE_USER` conventions).
const WELL_KNOWN_IDENTITY: &[&str] = &[
    "remote-user",
    "x-remote-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-user",
    "x-email",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
];

const WELL_KNOWN_PREFIXES: &[&str] = &[
    "x-auth-request-",
    "oidc-claim-",
    "oidc_claim_",
    "x-passerelle-",
];

/// Decides whether an inbound header could pass for identity. Runs on every header of every proxied
/// request, so it compares in place: no allocation per header.
pub struct IdentityHeaderFilter {
    /// Folded (lower-case, `-`) prefixes: the configured one and the well-known ones.
    prefixes: Vec<String>,
    /// Folded exact names: the configured headers and the well-known ones.
    names: Vec<String>,
}

impl IdentityHeaderFilter {
    /// `prefix` and `configured` are compared after lower-casing and folding `_` to `-`, because WSGI,
    /// PHP and CGI fold them (oauth2-proxy CVE-2025-64484).
    pub fn new(prefix: &str, configured: impl IntoIterator<Item = String>) -> Self {
        let mut names: Vec<String> = configured.into_iter().map(|n| fold(&n)).collect();
        names.extend(WELL_KNOWN_IDENTITY.iter().map(|n| fold(n)));
        names.sort();
        names.dedup();
        let mut prefixes: Vec<String> = WELL_KNOWN_PREFIXES.iter().map(|p| fold(p)).collect();
        prefixes.push(fold(prefix));
        prefixes.sort();
        prefixes.dedup();
        IdentityHeaderFilter { prefixes, names }
    }

    pub fn is_identity(&self, name: &str) -> bool {
        let name = name.trim().as_bytes();
        self.prefixes
            .iter()
            .any(|p| name.len() >= p.len() && folded_eq(&name[..p.len()], p.as_bytes()))
            || self.names.iter().any(|n| folded_eq(name, n.as_bytes()))
    }
}

/// `raw` equals `folded` once lower-cased with `_` read as `-`.
pub fn folded_eq(raw: &[u8], folded: &[u8]) -> bool {
    raw.len() == folded.len() && raw.iter().zip(folded).all(|(r, f)| fold_byte(*r) == *f)
}

fn fold_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

fn fold(name: &str) -> String {
    name.trim().bytes().map(|b| fold_byte(b) as char).collect()
}

/// The identity headers of `route` for these claims, in the route's encoding. A claim the session does
/// not hold produces no header (the inbound one was stripped anyway).
pub fn render_headers(
    route: &crate::config::RouteConfig,
    claims: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    route
        .headers
        .iter()
        // Client-certificate claims are set from the connection's handshake (src/proxy/mod.rs), never here.
        .filter(|(_, claim)| !crate::tls::client_certificate::is_claim(claim))
        .filter_map(|(header, claim)| {
            let text = claims.get(claim).and_then(super::claim_text)?;
            let value =
                http::HeaderValue::from_bytes(&encode_value(&text, route.header_encoding)).ok()?;
            Some((header.clone(), value))
        })
        .collect()
}

/// Renders a claim value as header bytes in the configured encoding. Control characters never pass:
/// a claim must not be able to inject a header line, nor a line break for a reader that honours Unicode
/// ones (NEL, U+2028, U+2029). Each encoding is unambiguous: in `rfc2047`, a value that already looks like
/// an encoded word (`=?UTF-8?B?YWRtaW4=?=`) is encoded too, or the app would decode it into another value.
pub fn encode_value(value: &str, encoding: HeaderEncoding) -> Vec<u8> {
    let plain_ascii = value.bytes().all(|b| (0x20..0x7f).contains(&b)) && !value.contains("=?");
    match encoding {
        HeaderEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .encode(value)
            .into_bytes(),
        HeaderEncoding::Percent => percent(value),
        HeaderEncoding::Utf8 => {
            let mut out = String::with_capacity(value.len());
            out.extend(value.chars().filter(|c| !is_line_break_or_control(*c)));
            out.into_bytes()
        }
        HeaderEncoding::Rfc2047 if plain_ascii => value.as_bytes().to_vec(),
        HeaderEncoding::Rfc2047 => format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
        .into_bytes(),
    }
}

/// What an application reads from a header in `encoding`: the inverse of [`encode_value`], for the demo's
/// echo page (and as the reference for the decoding README gives). `None`: not a value of that encoding.
pub fn decode_value(bytes: &[u8], encoding: HeaderEncoding) -> Option<String> {
    use base64::engine::general_purpose::STANDARD;
    match encoding {
        HeaderEncoding::Utf8 => String::from_utf8(bytes.to_vec()).ok(),
        HeaderEncoding::Base64 => String::from_utf8(STANDARD.decode(bytes).ok()?).ok(),
        HeaderEncoding::Percent => {
            String::from_utf8(percent_encoding::percent_decode(bytes).collect()).ok()
        }
        HeaderEncoding::Rfc2047 => {
            let text = std::str::from_utf8(bytes).ok()?;
            match text
                .strip_prefix("=?UTF-8?B?")
                .and_then(|t| t.strip_suffix("?="))
            {
                Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok(),
                None => Some(text.to_string()),
            }
        }
    }
}

/// C0, DEL, C1 (NEL, U+0085, included) and the Unicode line and paragraph separators.
fn is_line_break_or_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Percent-encodes non-ASCII bytes, controls and `%` itself, so the encoding is reversible.
fn percent(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_decodes_to_the_claim() {
        for encoding in [
            HeaderEncoding::Percent,
            HeaderEncoding::Utf8,
            HeaderEncoding::Base64,
            HeaderEncoding::Rfc2047,
        ] {
            for value in ["Hélène", "Nouméa", "plain", "100% =?UTF-8?B?x?="] {
                let wire = encode_value(value, encoding);
                assert_eq!(
                    decode_value(&wire, encoding).as_deref(),
                    Some(value),
                    "{encoding:?}"
                );
            }
        }
    }

    #[test]
    fn strips_case_underscore_and_prefix_variants() {
        let f = IdentityHeaderFilter::new("X-Auth-", ["X-Email-Agent".to_string()]);
        for name in [
            "X-Auth-Sub",
            "x-auth-sub",
            "X_AUTH_SUB",
            "x_Auth-Anything",
            "X-Email-Agent",
            "x_email_agent",
            "Remote-User",
            "REMOTE_USER",
            "X-Forwarded-Email",
            "X_Forwarded_User",
            "oidc_claim_email",
        ] {
            assert!(f.is_identity(name), "{name} must be stripped");
        }
        for name in ["Accept", "X-Request-Id", "Authorization", "X-Authorized"] {
            assert!(!f.is_identity(name), "{name} must pass");
        }
    }

    #[test]
    fn rfc2047_encodes_what_already_looks_like_an_encoded_word() {
        for value in ["=?UTF-8?B?YWRtaW4=?=", "=?utf-8?q?admin?=", "x =?", "=?"] {
            let out = encode_value(value, HeaderEncoding::Rfc2047);
            let b64 = base64::engine::general_purpose::STANDARD.encode(value);
            assert_eq!(out, format!("=?UTF-8?B?{b64}?=").into_bytes(), "{value}");
        }
        assert_eq!(encode_value("admin", HeaderEncoding::Rfc2047), b"admin");
        assert_eq!(encode_value("a=b?c", HeaderEncoding::Rfc2047), b"a=b?c");
    }

    #[test]
    fn utf8_drops_every_control_and_unicode_line_break() {
        let value = "a\u{0}b\nc\rd\u{7f}e\u{85}f\u{9f}g\u{2028}h\u{2029}i\u{80}é";
        assert_eq!(
            String::from_utf8(encode_value(value, HeaderEncoding::Utf8)).unwrap(),
            "abcdefghié"
        );
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let out = encode_value(&format!("<{c}>"), HeaderEncoding::Utf8);
            let out = String::from_utf8(out).unwrap();
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                assert_eq!(out, "<>", "U+{:04X} must not pass", c as u32);
            } else {
                assert_eq!(out, format!("<{c}>"), "U+{:04X} must pass", c as u32);
            }
        }
    }

    #[test]
    fn encodes_non_ascii_values() {
        assert_eq!(
            encode_value("Hélène", HeaderEncoding::Percent),
            b"H%C3%A9l%C3%A8ne"
        );
        assert_eq!(encode_value("100%", HeaderEncoding::Percent), b"100%25");
        assert_eq!(
            encode_value("a\r\nX-Evil: 1", HeaderEncoding::Percent),
            b"a%0D%0AX-Evil: 1"
        );
        assert_eq!(encode_value("a\r\nb", HeaderEncoding::Utf8), b"ab");
        assert_eq!(
            encode_value("Hélène", HeaderEncoding::Utf8),
            "Hélène".as_bytes()
        );
        assert_eq!(
            encode_value("Hélène", HeaderEncoding::Base64),
            b"SMOpbMOobmU="
        );
        assert_eq!(
            encode_value("Hélène", HeaderEncoding::Rfc2047),
            b"=?UTF-8?B?SMOpbMOobmU=?="
        );
        assert_eq!(encode_value("plain", HeaderEncoding::Rfc2047), b"plain");
    }
}
