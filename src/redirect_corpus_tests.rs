//! The open-redirect corpus: several hundred payloads from the peers' history (oauth2-proxy's
//! `testdata/openredirects.txt` families, RFC 3986 edge cases, browser normalisations), every one refused
//! by the validator that serves login, logout and post-logout.

use crate::config::HostPattern;
use crate::redirect::validate_return_to;

fn allowed() -> Vec<HostPattern> {
    vec![
        HostPattern::parse("app.example.gouv.fr").unwrap(),
        HostPattern::parse("*.interne.gouv.fr").unwrap(),
    ]
}

/// Targets an attacker wants to reach, written the ways browsers still resolve to another host.
const EVIL_HOSTS: &[&str] = &[
    "evil.fr",
    "evil.fr:443",
    "evil.fr.",
    "EVIL.FR",
    "127.0.0.1",
    "2130706433",
    "0x7f.1",
    "[::1]",
    "app.example.gouv.fr.evil.fr",
    "app.example.gouv.fr@evil.fr",
    "evilapp.example.gouv.fr",
    "interne.gouv.fr",
    "xn--app-example-gouv-fr.evil.fr",
    "app。example。gouv。fr",
    "evil%2efr",
];

/// Ways to make a path or a string read as "another host" by a browser.
const PREFIXES: &[&str] = &[
    "//",
    "///",
    "////",
    "/\\",
    "\\/",
    "\\\\",
    "/\\/",
    "//\\",
    "/%2F",
    "/%2f/",
    "%2F%2F",
    "%2f%2f",
    "/%5C",
    "/%5c/",
    "%5C%5C",
    "/%252F%252F",
    "/%25252F/",
    "%252F%252F",
    "/%09/",
    "/%0a/",
    "/%0d/",
    "/%20/",
    "/\t/",
    "/ /",
    " //",
    "\t//",
    "\n//",
    "https://",
    "http://",
    "https:",
    "http:",
    "https:/",
    "http:/",
    "https:\\\\",
    "HTTPS://",
    "hTtP://",
    "//%09",
    "/.//",
    "/./\\",
    "//.",
    "///\\;@",
    "ftp://",
    "ws://",
    "//@",
    "@",
    ":",
    "https://@",
    "/../",
    "/%2e%2e/",
    "/.%2e//",
    "/%20%20/",
];

const SCHEMES: &[&str] = &[
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "java\tscript:alert(1)",
    "javascript://%0aalert(1)",
    " javascript:alert(1)",
    "javascript&colon;alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD4=",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "blob:https://evil.fr/x",
    "about:blank",
    "mailto:a@evil.fr",
    "\u{0000}javascript:alert(1)",
    "\u{200b}//evil.fr",
    "／／evil.fr",
    "⁄⁄evil.fr",
    "%E2%80%AE//evil.fr",
];

pub fn corpus() -> Vec<String> {
    let mut payloads = Vec::new();
    for prefix in PREFIXES {
        for host in EVIL_HOSTS {
            payloads.push(format!("{prefix}{host}"));
            payloads.push(format!("{prefix}{host}/"));
        }
    }
    payloads.extend(SCHEMES.iter().map(|s| s.to_string()));
    // Trailing `#`, `?` and credentials on otherwise allowed-looking targets.
    for tail in ["#", "?", "#@evil.fr", "?@evil.fr"] {
        payloads.push(format!("//evil.fr{tail}"));
        payloads.push(format!("https://evil.fr{tail}app.example.gouv.fr"));
    }
    payloads.extend(
        [
            "https://user:pass@app.example.gouv.fr/",
            "https://app.example.gouv.fr@evil.fr/",
            "https://app.example.gouv.fr%40evil.fr/",
            "https://evil.fr\\@app.example.gouv.fr/",
            "https://evil.fr#@app.example.gouv.fr/",
            "https://evil.fr?@app.example.gouv.fr/",
            "https://app.example.gouv.fr\\.evil.fr/",
            "https:/\\app.example.gouv.fr.evil.fr",
            "ftp://app.example.gouv.fr/",
            "",
            " ",
            "\t",
            "relative/path",
            "../../evil",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    payloads.push(format!("/{}", "a".repeat(3000)));
    payloads
}

#[test]
fn every_open_redirect_payload_is_refused() {
    let corpus = corpus();
    assert!(corpus.len() >= 300, "corpus has {} payloads", corpus.len());
    let accepted: Vec<&String> = corpus
        .iter()
        .filter(|p| validate_return_to(p, &allowed()).is_some())
        .collect();
    assert!(
        accepted.is_empty(),
        "{} of {} payloads accepted: {:?}",
        accepted.len(),
        corpus.len(),
        accepted
    );
}

/// Odd-looking but local: the browser stays on our host (the path is `/@evil.fr`, `/javascript:…`), and a
/// query may carry a URL.
#[test]
fn legitimate_targets_still_pass() {
    for ok in [
        "/",
        "/dossier/42?onglet=pieces",
        "/a/b#section",
        "/%C3%A9t%C3%A9",
        "https://app.example.gouv.fr/x?y=1",
        "https://svc.interne.gouv.fr/",
        "/@evil.fr",
        "/javascript:alert(1)",
        "/search?next=https://evil.fr//x",
        "/a.b/c..d/.e",
    ] {
        assert!(validate_return_to(ok, &allowed()).is_some(), "{ok}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the input, an accepted return URL is a local path that stays local however often it
        /// is decoded, or an http(s) URL on an allow-listed host.
        #[test]
        fn accepted_targets_are_local_or_allowed(raw in "[/\\\\%a-zA-Z0-9:.@?#&=;\t -]{0,40}") {
            if let Some(target) = validate_return_to(&raw, &allowed()) {
                if target.starts_with('/') {
                    let decoded = percent_encoding::percent_decode_str(&target).decode_utf8_lossy().to_string();
                    prop_assert!(!decoded.starts_with("//") && !decoded.starts_with("/\\"), "{target}");
                } else {
                    let url = url::Url::parse(&target).unwrap();
                    prop_assert!(matches!(url.scheme(), "http" | "https"));
                    let host = url.host_str().unwrap_or_default();
                    prop_assert!(allowed().iter().any(|p| p.matches(host)), "{target}");
                }
            }
        }
    }
}
