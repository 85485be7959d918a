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

/// Reads every `name=value` pair of the request's Cookie headers, bounded in count. A pair that is not
/// UTF-8 (an app's `lang=H\xe9l\xe8ne`) is skipped alone: it cannot be one of Passerelle's, and the
/// pairs around it still count.
pub fn parse_cookie_header<'a>(headers: impl Iterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for header in headers {
        for pair in cookie_pairs(header) {
            if out.len() >= 128 {
                return out;
            }
            let Ok(pair) = std::str::from_utf8(pair) else {
                continue;
            };
            let pair = pair.trim();
            if let Some((name, value)) = pair.split_once('=') {
                let value = value.trim().trim_matches('"');
                out.push((name.trim().to_string(), value.to_string()));
            }
        }
    }
    out
}

/// Which of Passerelle's cookies a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnCookie {
    /// The session, or one of its chunks (`name`, `name.N`).
    Session,
    /// A login in progress (`name_flow_<state>`).
    LoginFlow,
    /// A logout in progress (`name_logout`).
    LogoutFlow,
    /// The id_token kept for logout, or one of its chunks (`name_idt`, `name_idt.N`).
    IdTokenHint,
}

/// Passerelle's cookie names, defined once: what is stripped from requests, what an upstream may not
/// set, and what counts as a broken session are the same set, so none of the three can drift.
/// Exact names only: `passerelle_pref` is the app's.
#[derive(Debug, Clone)]
pub struct OwnCookieNames {
    base: String,
}

impl OwnCookieNames {
    pub fn new(base: &str) -> Self {
        OwnCookieNames {
            base: base.to_string(),
        }
    }

    /// Classifies a cookie name as a browser stores it: surrounding spaces ignored, and the `__Host-` or
    /// `__Secure-` prefix in any case (browsers compare prefixes without case).
    pub fn classify(&self, name: &[u8]) -> Option<OwnCookie> {
        let name = name.trim_ascii();
        let name = strip_prefix_ignore_case(name, b"__host-")
            .or_else(|| strip_prefix_ignore_case(name, b"__secure-"))
            .unwrap_or(name);
        let rest = name.strip_prefix(self.base.as_bytes())?;
        let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
        match rest {
            b"" => Some(OwnCookie::Session),
            [b'.', d @ ..] if digits(d) => Some(OwnCookie::Session),
            b"_logout" => Some(OwnCookie::LogoutFlow),
            b"_idt" => Some(OwnCookie::IdTokenHint),
            _ => {
                if let Some(d) = rest.strip_prefix(b"_idt.") {
                    return digits(d).then_some(OwnCookie::IdTokenHint);
                }
                let state = rest.strip_prefix(b"_flow_")?;
                (!state.is_empty()
                    && state
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
                .then_some(OwnCookie::LoginFlow)
            }
        }
    }

    /// The cookie a `Set-Cookie` value would set, if it is one of Passerelle's. A nameless cookie
    /// (`=passerelle=x`) is read as browsers send it back: `passerelle=x`.
    pub fn set_by(&self, set_cookie: &[u8]) -> Option<OwnCookie> {
        let pair = set_cookie.split(|b| *b == b';').next().unwrap_or(b"");
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if !name.trim_ascii().is_empty() {
            return self.classify(name);
        }
        let inner = value.split(|b| *b == b'=').next().unwrap_or(b"");
        self.classify(inner)
    }

    /// [`Self::strip`] over a request's `Cookie` lines.
    pub fn strip_request(&self, headers: &http::HeaderMap) -> Option<Vec<u8>> {
        self.strip(
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        )
    }

    /// The `Cookie` header lines without Passerelle's cookies, as one line; `None` when none of them was
    /// there and they were one line (the header is then forwarded untouched). Several lines — HTTP/2 lets a
    /// browser send each cookie in a field of its own — are always joined with "; " (RFC 9113 §8.2.3).
    /// Works on bytes: a pair that is not UTF-8 is the app's and passes as it came. One pass, on every
    /// proxied request.
    pub fn strip<'a>(&self, lines: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
        let mut kept = Vec::new();
        let mut found = false;
        let mut count = 0;
        let lines = lines.inspect(|_| count += 1);
        for pair in lines.flat_map(cookie_pairs) {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split(|b| *b == b'=').next().unwrap_or(b"");
            if self.classify(name).is_some() {
                found = true;
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
        (found || count > 1).then_some(kept)
    }
}

/// The `;`-separated pieces of one `Cookie` line, as `split` gives them (empty ones included). memchr finds
/// the separators many bytes at a time: a session cookie is hundreds of bytes, read twice on every request.
fn cookie_pairs(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(i) => {
                rest = Some(&current[i + 1..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &text[prefix.len()..])
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

/// Whether any chunk of `base` is in the request, whatever its index: an app's `base_pref` is not one.
pub fn any_chunk(cookies: &[(String, String)], base: &str) -> bool {
    cookies.iter().any(|(n, _)| {
        n.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('.')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

/// A value too large for the cookies a browser keeps and [`join`] reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} bytes do not fit in {MAX_CHUNKS} cookies")]
pub struct TooLarge(pub usize);

/// Largest `Set-Cookie` value Passerelle writes: browsers keep cookies up to 4,096 bytes of name, value
/// and attributes, and silently drop larger ones (the login then loops).
pub const MAX_SET_COOKIE: usize = 4096;

/// `Set-Cookie` values writing `value` under `name` in as many chunks as it takes, and deleting the
/// chunks the request has beyond them (`present`). Refused above what [`join`] reads back, so a value
/// written is always a value read.
pub fn write_chunked(
    spec: &CookieSpec,
    name: &str,
    value: &str,
    max_age: Duration,
    present: usize,
) -> Result<Vec<String>, TooLarge> {
    let parts = split(value);
    if parts.len() > MAX_CHUNKS {
        return Err(TooLarge(value.len()));
    }
    let mut out = Vec::with_capacity(parts.len().max(present));
    for (i, part) in parts.iter().enumerate() {
        let cookie = spec.set(&chunk_name(name, i), part, Some(max_age));
        if cookie.len() > MAX_SET_COOKIE {
            return Err(TooLarge(value.len()));
        }
        out.push(cookie);
    }
    for i in parts.len()..present {
        out.push(spec.delete(&chunk_name(name, i)));
    }
    Ok(out)
}

/// `Set-Cookie` values deleting `name`: every chunk the request has, and the first one in any case.
pub fn delete_chunked(spec: &CookieSpec, name: &str, cookies: &[(String, String)]) -> Vec<String> {
    let n = present_chunks(cookies, name).max(1);
    (0..n).map(|i| spec.delete(&chunk_name(name, i))).collect()
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

    #[test]
    fn cookie_pairs_are_what_split_gives() {
        for line in [
            &b""[..],
            b";",
            b";;",
            b"a=1",
            b"a=1;",
            b";a=1",
            b"a=1; b=2;; c",
            b" passerelle=xyz ; lang=H\xe9l\xe8ne;x",
        ] {
            let ours: Vec<&[u8]> = cookie_pairs(line).collect();
            let split: Vec<&[u8]> = line.split(|b| *b == b';').collect();
            assert_eq!(ours, split, "{:?}", String::from_utf8_lossy(line));
        }
    }

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
    fn own_cookie_names_are_exact() {
        let own = OwnCookieNames::new("passerelle");
        for (name, kind) in [
            ("passerelle", OwnCookie::Session),
            ("passerelle.1", OwnCookie::Session),
            ("passerelle.12", OwnCookie::Session),
            ("__Host-passerelle", OwnCookie::Session),
            ("__host-passerelle.2", OwnCookie::Session),
            ("__Secure-passerelle", OwnCookie::Session),
            (" passerelle ", OwnCookie::Session),
            ("passerelle_flow_AbCdEfGhIjKl", OwnCookie::LoginFlow),
            ("__Host-passerelle_flow_a-b_c", OwnCookie::LoginFlow),
            ("passerelle_logout", OwnCookie::LogoutFlow),
            ("passerelle_idt", OwnCookie::IdTokenHint),
            ("passerelle_idt.3", OwnCookie::IdTokenHint),
        ] {
            assert_eq!(own.classify(name.as_bytes()), Some(kind), "{name}");
        }
        for name in [
            "passerelle_pref",
            "passerelle2",
            "passerelle.x",
            "passerelle.",
            "Passerelle",
            "passerelle_flow_",
            "passerelle_flow_a.b",
            "passerelle_idt.",
            "passerelle_idtx",
            "passerelle_logout2",
            "__Host-passerelle_pref",
            "xpasserelle",
            "",
        ] {
            assert_eq!(own.classify(name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn set_cookie_names_are_read_as_browsers_read_them() {
        let own = OwnCookieNames::new("passerelle");
        for set in [
            "passerelle=x; Path=/",
            " passerelle =x",
            "__HOST-passerelle=x; Secure; Path=/",
            "=passerelle=x",
            "passerelle.4=x",
            "passerelle_idt.1=x; Path=/.passerelle",
        ] {
            assert!(own.set_by(set.as_bytes()).is_some(), "{set}");
        }
        for set in [
            "passerelle_pref=1",
            "JSESSIONID=passerelle",
            "a=passerelle=x",
            "passerelle2=1",
        ] {
            assert!(own.set_by(set.as_bytes()).is_none(), "{set}");
        }
    }

    #[test]
    fn stripping_keeps_the_apps_cookies_byte_for_byte() {
        let own = OwnCookieNames::new("passerelle");
        let line: &[u8] = b"lang=H\xe9l\xe8ne; passerelle=abc; app=1";
        assert_eq!(
            own.strip([line].into_iter()).unwrap(),
            b"lang=H\xe9l\xe8ne; app=1"
        );
        let two: [&[u8]; 2] = [b"passerelle.1=x;a=1", b"b=\xff; __Host-passerelle_idt=y"];
        assert_eq!(own.strip(two.into_iter()).unwrap(), b"a=1; b=\xff");
        let none: &[u8] = b"passerelle_pref=1; app=2";
        assert_eq!(own.strip([none].into_iter()), None);
        let split: [&[u8]; 2] = [b"a=1", b"b=2;c=3"];
        assert_eq!(
            own.strip(split.into_iter()).unwrap(),
            b"a=1; b=2; c=3",
            "HTTP/2's split fields, joined"
        );
        let only: &[u8] = b"passerelle=abc";
        assert_eq!(own.strip([only].into_iter()).unwrap(), b"");
        let parsed = parse_cookie_header([line].into_iter());
        assert_eq!(parsed, jar(&[("passerelle", "abc"), ("app", "1")]));
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
