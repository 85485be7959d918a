//! Cookie names, attributes, reading and splitting.
//!
//! A session larger than one cookie is split into numbered chunks (`name`, `name.1`, …), because browsers
//! drop cookies over ~4 KB and the resulting redirect loops are the most reported problem of the peers
//! (oauth2-proxy #644, envoy #27875). Stale chunks are deleted when a session shrinks.

use std::time::Duration;

/// Largest value in one cookie; with name and attributes the header stays under 4096 bytes.
pub const CHUNK_SIZE: usize = 3800;
/// More chunks than this is refused: a header flood, not a session.
pub const MAX_CHUNKS: usize = 6;
/// At most this many login flows (tabs logging in at once) are kept; older ones are dropped.
pub const MAX_FLOWS: usize = 4;

/// Reads every `name=value` pair of the request's Cookie headers, bounded in count.
pub fn parse_cookie_header<'a>(headers: impl Iterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for header in headers {
        let Ok(text) = std::str::from_utf8(header) else {
            continue;
        };
        for pair in text.split(';') {
            if out.len() >= 128 {
                return out;
            }
            let pair = pair.trim();
            if let Some((name, value)) = pair.split_once('=') {
                let value = value.trim().trim_matches('"');
                out.push((name.trim().to_string(), value.to_string()));
            }
        }
    }
    out
}

/// The attributes every cookie of Passerelle shares.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    pub secure: bool,
    pub path: String,
}

impl CookieSpec {
    /// `__Host-` binds the cookie to this exact host over https (no Domain, Path=/), so a sibling
    /// subdomain cannot plant a session.
    pub fn name(&self, base: &str) -> String {
        if self.secure && self.path == "/" {
            format!("__Host-{base}")
        } else {
            base.to_string()
        }
    }

    pub fn set(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        let mut cookie = cookie::Cookie::build((name.to_string(), value.to_string()))
            .path(self.path.clone())
            .http_only(true)
            .secure(self.secure)
            .same_site(cookie::SameSite::Lax);
        if let Some(age) = max_age {
            cookie = cookie.max_age(cookie::time::Duration::seconds(
                age.as_secs().min(i64::MAX as u64) as i64,
            ));
        }
        cookie.build().to_string()
    }

    pub fn delete(&self, name: &str) -> String {
        format!(
            "{name}=; Path={}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly{}; SameSite=Lax",
            self.path,
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// Name of chunk `index` of a split cookie.
pub fn chunk_name(base: &str, index: usize) -> String {
    if index == 0 {
        base.to_string()
    } else {
        format!("{base}.{index}")
    }
}

/// Splits `value` into cookie-sized chunks.
pub fn split(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while rest.len() > CHUNK_SIZE {
        let (head, tail) = rest.split_at(CHUNK_SIZE);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// Joins the chunks of `base` found among `cookies`; `None` when absent, too many, or duplicated
/// (two cookies of the same name mean one was planted: refuse rather than guess).
pub fn join(cookies: &[(String, String)], base: &str) -> Option<String> {
    let mut joined = String::new();
    for index in 0..=MAX_CHUNKS {
        let mut values = cookies.iter().filter(|(n, _)| is_chunk(n, base, index));
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => return None,
            (Some((_, v)), None) => {
                if index == MAX_CHUNKS {
                    return None;
                }
                joined.push_str(v);
            }
            (None, _) => break,
        }
    }
    (!joined.is_empty()).then_some(joined)
}

/// `name` is chunk `index` of `base`; compared in place, as this runs on every authenticated request.
fn is_chunk(name: &str, base: &str, index: usize) -> bool {
    match name.strip_prefix(base) {
        Some("") => index == 0,
        Some(rest) => {
            index > 0
                && rest.strip_prefix('.').and_then(|d| d.parse::<usize>().ok()) == Some(index)
                && !rest[1..].starts_with('0')
        }
        None => false,
    }
}

/// Indices of the chunks of `base` present in the request, to delete the ones a new value no longer uses.
pub fn present_chunks(cookies: &[(String, String)], base: &str) -> usize {
    (0..=MAX_CHUNKS)
        .take_while(|i| cookies.iter().any(|(n, _)| is_chunk(n, base, *i)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn split_and_join_round_trip() {
        let value = "x".repeat(CHUNK_SIZE * 2 + 10);
        let parts = split(&value);
        assert_eq!(parts.len(), 3);
        let cookies: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (chunk_name("s", i), p.to_string()))
            .collect();
        assert_eq!(join(&cookies, "s").unwrap(), value);
        assert_eq!(present_chunks(&cookies, "s"), 3);
    }

    #[test]
    fn duplicates_and_floods_are_refused() {
        assert_eq!(join(&jar(&[("s", "a"), ("s", "b")]), "s"), None);
        let flood: Vec<_> = (0..=MAX_CHUNKS)
            .map(|i| (chunk_name("s", i), "a".to_string()))
            .collect();
        assert_eq!(join(&flood, "s"), None);
        assert_eq!(join(&jar(&[("other", "a")]), "s"), None);
    }

    #[test]
    fn parses_several_headers_and_bounds_count() {
        let h1 = b"a=1; b=2".as_slice();
        let h2 = b"c=\"3\"".as_slice();
        let parsed = parse_cookie_header([h1, h2].into_iter());
        assert_eq!(parsed, jar(&[("a", "1"), ("b", "2"), ("c", "3")]));
        let many = (0..500)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("; ");
        assert_eq!(
            parse_cookie_header([many.as_bytes()].into_iter()).len(),
            128
        );
    }

    #[test]
    fn host_prefix_only_when_secure_at_root() {
        let spec = CookieSpec {
            secure: true,
            path: "/".into(),
        };
        assert_eq!(spec.name("passerelle"), "__Host-passerelle");
        let set = spec.set("__Host-passerelle", "v", Some(Duration::from_secs(60)));
        assert!(
            set.contains("HttpOnly")
                && set.contains("Secure")
                && set.contains("SameSite=Lax")
                && set.contains("Max-Age=60")
        );
        let plain = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        assert_eq!(plain.name("passerelle"), "passerelle");
        assert!(!plain.set("passerelle", "v", None).contains("Secure"));
    }
}
