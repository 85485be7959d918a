//! The fuzz targets of `passerelle::fuzzing`, driven by proptest: arbitrary bytes, and inputs built from the
//! fragments attackers use (encodings, dot segments, chunk names, TOML keys), which random bytes would
//! almost never hit. `cargo test` runs a brief pass (PASSERELLE_FUZZ_CASES, default 2,000 per generator);
//! `scripts/fuzz.sh` runs long passes, and libFuzzer ones when a nightly toolchain is there.

use passerelle::fuzzing;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};

fn cases() -> u32 {
    std::env::var("PASSERELLE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Runs `target` on `cases()` inputs from each strategy; panics (with proptest's minimal input) on a
/// broken property, and reports the number of executions. The strategies after the first (arbitrary
/// bytes) are structured: each must get some inputs past the parser, or it tests nothing deep.
fn fuzz(name: &str, target: fn(&[u8]) -> bool, strategies: Vec<BoxedStrategy<Vec<u8>>>) {
    let executions = AtomicU64::new(0);
    for (index, strategy) in strategies.into_iter().enumerate() {
        let deep = AtomicU64::new(0);
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
            ..Config::default()
        });
        let result = runner.run(&strategy, |input| {
            executions.fetch_add(1, Ordering::Relaxed);
            if target(&input) {
                deep.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("fuzz target {name}: {e}");
        }
        let deep = deep.load(Ordering::Relaxed);
        eprintln!("fuzz target {name}, generator {index}: {deep} inputs past the parser");
        assert!(
            index == 0 || deep > 0,
            "fuzz target {name}: generator {index} never got past the parser"
        );
    }
    eprintln!(
        "fuzz target {name}: {} executions, no property broken",
        executions.load(Ordering::Relaxed)
    );
}

fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max).boxed()
}

/// Strings made of 1..`max` fragments picked from `fragments`.
fn from_fragments(fragments: &'static [&'static str], max: usize) -> BoxedStrategy<Vec<u8>> {
    prefixed("", fragments, max)
}

/// `prefix` then 1..`max` fragments.
fn prefixed(
    prefix: &'static str,
    fragments: &'static [&'static str],
    max: usize,
) -> BoxedStrategy<Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(fragments), 1..max)
        .prop_map(move |parts| format!("{prefix}{}", parts.concat()).into_bytes())
        .boxed()
}

const URL_FRAGMENTS: &[&str] = &[
    "/",
    "/",
    "//",
    "\\",
    "/\\",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%252f",
    "%09",
    "%0a",
    "%0d",
    "%00",
    "\t",
    " ",
    "@",
    ":",
    "http:",
    "https:",
    "javascript:",
    "data:",
    "evil.example",
    "app.example.gouv.fr",
    "x.interieur.gouv.fr",
    "interieur.gouv.fr.evil",
    ".",
    "..",
    "#",
    "?",
    "&",
    "=",
    "rd",
    "%",
    "%25",
    "%2e",
    "。",
    "／",
    "＼",
    "ⓔ",
    "a",
    "app",
    "~",
    ";",
    "user:pw@",
    "[::1]",
    "127.0.0.1",
    ":443",
];

const PATH_FRAGMENTS: &[&str] = &[
    "/",
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ";",
    ";jsessionid=1",
    "%3b",
    "%3B",
    "%2f",
    "%5c",
    "%00",
    "%25",
    "%252e",
    "%41",
    "%7e",
    "~",
    "#",
    "%23",
    "a",
    "admin",
    "public",
    "api",
    "\\",
    "%",
    "%g0",
    "%c3%a9",
    "é",
    " ",
    "\u{0}",
    "?",
];

const COOKIE_FRAGMENTS: &[&str] = &[
    "passerelle",
    "passerelle.1",
    "passerelle.2",
    "passerelle.6",
    "passerelle.7",
    "passerelle.01",
    "passerelle.+1",
    "__Host-passerelle",
    "__Host-passerelle.1",
    "passerelle_flow",
    "=",
    "; ",
    ";",
    "\"",
    "AQ",
    "AAAA",
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "____",
    "-_-_",
    "%3D",
    " ",
    "\n",
    ",",
];

const CONFIG_FRAGMENTS: &[&str] = &[
    "[server]\n",
    "[session]\n",
    "[providers.op]\n",
    "[[route]]\n",
    "[route.headers]\n",
    "[route.require]\n",
    "listen = [\"127.0.0.1:8080\"]\n",
    "public_url = \"https://app.example.gouv.fr\"\n",
    "prefix = \"/.passerelle\"\n",
    "trusted_proxies = [\"10.0.0.0/8\"]\n",
    "keys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n",
    "keys = []\n",
    "idle_timeout = \"30m\"\n",
    "max_lifetime = \"0s\"\n",
    "logout_clear_site_data = [\"cookies\"]\n",
    "kind = \"oidc\"\n",
    "kind = \"proconnect\"\n",
    "kind = \"nc-connect\"\n",
    "kind = \"dev\"\n",
    "network = \"rie\"\n",
    "version = 2\n",
    "issuer = \"https://op.example.gouv.fr\"\n",
    "client_id = \"c\"\n",
    "client_secret = \"s\"\n",
    "client_secret = \"env:SURELY_UNSET_X\"\n",
    "id_token_algs = [\"none\"]\n",
    "acr = { essential = true, values = [\"eidas2\"] }\n",
    "path = \"/\"\n",
    "path = \"/api\"\n",
    "path = \"relative\"\n",
    "host = \"*.example.gouv.fr\"\n",
    "upstream = \"http://127.0.0.1:9000\"\n",
    "upstream = [\"http://127.0.0.1:9000\", \"http://[::1]:9\"]\n",
    "upstream = \"ftp://x\"\n",
    "auth = \"public\"\n",
    "auth = \"optional\"\n",
    "scopes = [\"email\"]\n",
    "scopes = [\"siret\", \"birth\"]\n",
    "\"X-Auth-Email\" = \"email\"\n",
    "\"X-Auth-Siret\" = \"siret\"\n",
    "\"Host\" = \"sub\"\n",
    "siret = [\"12345678901234\"]\n",
    "email_domain = [\"interieur.gouv.fr\"]\n",
    "provider = \"op\"\n",
    "provider = \"missing\"\n",
    "= ",
    "\"",
    "[",
    "]",
    "\n",
    "#",
    "é",
    "\u{0}",
];

const BASE_CONFIG: &str = "[session]\nkeys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n\
[providers.op]\nkind = \"oidc\"\nissuer = \"https://op.example.gouv.fr\"\nclient_id = \"c\"\n\
client_secret = \"s\"\n[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:9000\"\n\
scopes = [\"email\"]\n[route.headers]\n\"X-Auth-Email\" = \"email\"\n";

/// The valid base configuration with its lines shuffled into a mix of fragments.
fn mutated_config() -> BoxedStrategy<Vec<u8>> {
    let lines: Vec<&'static str> = BASE_CONFIG.split_inclusive('\n').collect();
    (
        proptest::collection::vec(proptest::sample::select(CONFIG_FRAGMENTS), 0..8),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        proptest::collection::vec(any::<bool>(), 0..20),
    )
        .prop_map(move |(extra, at, drop)| {
            let mut out: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.get(*i).copied().unwrap_or(false))
                .map(|(_, l)| *l)
                .collect();
            for (fragment, index) in extra.into_iter().zip(at) {
                let position = index.index(out.len() + 1);
                out.insert(position, fragment);
            }
            out.concat().into_bytes()
        })
        .boxed()
}

#[test]
fn fuzz_cookie_codec() {
    fuzz("cookie_codec", fuzzing::cookie_codec, vec![bytes(4096)]);
}

#[test]
fn fuzz_session_cookies() {
    fuzz(
        "session_cookies",
        fuzzing::session_cookies,
        vec![bytes(2048), from_fragments(COOKIE_FRAGMENTS, 24)],
    );
}

#[test]
fn fuzz_return_url() {
    fuzz(
        "return_url",
        fuzzing::return_url,
        vec![
            bytes(256),
            from_fragments(URL_FRAGMENTS, 12),
            prefixed("/", URL_FRAGMENTS, 8),
            prefixed("https://", URL_FRAGMENTS, 6),
        ],
    );
}

#[test]
fn fuzz_request_path() {
    fuzz(
        "request_path",
        fuzzing::request_path,
        vec![bytes(256), prefixed("/", PATH_FRAGMENTS, 16)],
    );
}

#[test]
fn fuzz_config_text() {
    fuzz(
        "config_text",
        fuzzing::config_text,
        vec![
            bytes(512),
            from_fragments(CONFIG_FRAGMENTS, 24),
            mutated_config(),
        ],
    );
}
