//! Return-URL validation: where a browser may be sent after login or logout.
//!
//! Only local paths, or absolute http(s) URLs on an allow-listed host. One validator serves login,
//! logout and post-logout, so the three cannot drift apart (oauth2-proxy's open-redirect history:
//! `/\evil`, `//evil`, `/%09/evil`, …).

use crate::config::HostPattern;

const MAX_LEN: usize = 2048;

/// Returns the URL to redirect to, or `None` if `raw` is not acceptable.
pub fn validate_return_to(raw: &str, allowed_hosts: &[HostPattern]) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_LEN {
        return None;
    }
    // Whitespace, controls, backslashes and non-ASCII are what browsers strip or reinterpret.
    if raw.bytes().any(|b| b <= 0x20 || b >= 0x7f || b == b'\\') {
        return None;
    }
    if raw.starts_with('/') {
        return local_path_ok(raw).then(|| raw.to_string());
    }
    let url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        _ => return None,
    };
    // The URL parser may rewrite what it read (IDNA, dots); accept only what it reads back verbatim.
    if !raw.to_ascii_lowercase().contains(&host) {
        return None;
    }
    allowed_hosts
        .iter()
        .any(|p| p.matches(&host))
        .then(|| url.to_string())
}

/// A local path must stay local however many times it is decoded: `//`, `/\` and their encodings are
/// scheme-relative URLs to another host.
fn local_path_ok(path: &str) -> bool {
    let mut current = path.to_string();
    for _ in 0..4 {
        if !current.starts_with('/') || has_slash_slash(&current) {
            return false;
        }
        if current.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
            return false;
        }
        if !current.contains('%') {
            return true;
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .to_string();
        if decoded == current {
            return true;
        }
        current = decoded;
    }
    false
}

/// In the path part (queries may carry URLs), a slash then only whitespace, or one or two dots, then a
/// slash or backslash: `//`, `/ /`, `/./`, `/../`, `/\`. Browsers and frameworks turn these into
/// scheme-relative URLs or climb out of the path (oauth2-proxy's `[/\\](?:[\s\v]*|\.{1,2})[/\\]`).
fn has_slash_slash(text: &str) -> bool {
    let path = text.split(['?', '#']).next().unwrap_or("");
    let bytes = path.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/' || **b == b'\\')
        .any(|(i, _)| {
            let rest = &path[i + 1..];
            let after_space = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{0b}');
            let after_dots = rest
                .strip_prefix("..")
                .or_else(|| rest.strip_prefix('.'))
                .unwrap_or("x");
            [after_space, after_dots]
                .iter()
                .any(|r| r.starts_with('/') || r.starts_with('\\'))
        })
}

#[cfg(test)]
#[path = "redirect_corpus_tests.rs"]
mod corpus_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<HostPattern> {
        vec![
            HostPattern::parse("app.example.gouv.fr").unwrap(),
            HostPattern::parse("*.interne.gouv.fr").unwrap(),
        ]
    }

    #[test]
    fn accepts_local_paths_and_allowed_hosts() {
        for ok in [
            "/",
            "/app?x=1&y=%2F",
            "/a/b#frag",
            "https://app.example.gouv.fr/x",
            "https://svc.interne.gouv.fr/",
        ] {
            assert!(validate_return_to(ok, &allowed()).is_some(), "{ok}");
        }
    }

    #[test]
    fn refuses_open_redirects() {
        for bad in [
            "//evil.fr",
            "/\\evil.fr",
            "\\\\evil.fr",
            "/%2F/evil.fr",
            "/%2f%2fevil.fr",
            "/%5Cevil.fr",
            "/%252F%252Fevil.fr",
            "https://evil.fr",
            "https://app.example.gouv.fr.evil.fr/",
            "https://evilapp.example.gouv.fr/",
            "https://interne.gouv.fr/",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://user@app.example.gouv.fr/",
            " /x",
            "/x\n",
            "/\t/evil.fr",
            "http:evil.fr",
            "evil.fr",
            "",
            "https://app。example.gouv.fr/",
            "/%09/evil.fr",
        ] {
            assert!(
                validate_return_to(bad, &allowed()).is_none(),
                "{bad:?} must be refused"
            );
        }
    }
}
