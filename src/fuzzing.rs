//! Fuzz targets: the parsers that read what a client (or an operator's file) sends, each fed arbitrary
//! bytes and checked against the property that makes it safe, not only against panics.
//!
//! One definition, two drivers: `tests/fuzz_targets.rs` runs them under proptest in `cargo test` (brief,
//! on stable, in CI), and `fuzz/` runs them under libFuzzer with cargo-fuzz (coverage-guided, nightly,
//! `scripts/fuzz.sh`). A target panics only when its property is broken; it returns whether the input got
//! past the parser's first refusals, so the proptest driver can check its generators reach the depths.

use crate::config::{self, HostPattern, SessionConfig};
use crate::redirect::validate_return_to;
use crate::routes::normalise_path;
use crate::session::codec::{KeyRing, Purpose};
use crate::session::cookies::{parse_cookie_header, CookieSpec};
use crate::session::{SessionManager, SessionState};
use std::sync::OnceLock;
use std::time::Duration;

const PURPOSES: [Purpose; 4] = [
    Purpose::Session,
    Purpose::LoginFlow,
    Purpose::LogoutFlow,
    Purpose::IdTokenHint,
];

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::new(&[[0x5a; 32], [0xa5; 32]]))
}

/// The cookie codec: arbitrary text never opens (only Passerelle's keys make payloads); what is sealed
/// opens to the same bytes, for its purpose only; one flipped bit anywhere is refused.
pub fn cookie_codec(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    for purpose in PURPOSES {
        assert!(
            ring().open(purpose, &text).is_err(),
            "arbitrary text opened as {purpose:?}"
        );
    }
    let purpose = PURPOSES[data.first().map_or(0, |b| usize::from(*b) % PURPOSES.len())];
    let sealed = ring().seal(purpose, data);
    assert_eq!(ring().open(purpose, &sealed).as_deref(), Ok(data));
    for other in PURPOSES.into_iter().filter(|p| *p != purpose) {
        assert!(ring().open(other, &sealed).is_err(), "opened for {other:?}");
    }
    let mut bytes = sealed.into_bytes();
    let at = data.len().wrapping_mul(31) % bytes.len();
    // Flip a bit of one base64url character into another valid one, so the change reaches the payload.
    bytes[at] = match bytes[at] {
        b'A' => b'B',
        _ => b'A',
    };
    let tampered = String::from_utf8(bytes).expect("base64url is ASCII");
    assert!(
        ring().open(purpose, &tampered).is_err(),
        "tampered payload opened"
    );
    true
}

fn sessions() -> &'static SessionManager {
    static SESSIONS: OnceLock<SessionManager> = OnceLock::new();
    SESSIONS.get_or_init(|| {
        SessionManager::new(SessionConfig {
            keys: vec![[0x5a; 32]],
            cookie_name: "passerelle".into(),
            idle_timeout: Duration::from_secs(1800),
            max_lifetime: Duration::from_secs(43200),
            login_timeout: Duration::from_secs(600),
            secure: None,
            logout_clear_site_data: Vec::new(),
            store: crate::config::SessionStore::Cookie,
            redis: None,
            recheck_interval: Duration::from_secs(30),
            redis_grace: Duration::from_secs(60),
        })
        .expect("no Redis configured")
    })
}

/// A `Cookie` header as a client sends it (any bytes, any chunk names): never a session.
pub fn session_cookies(data: &[u8]) -> bool {
    let cookies = parse_cookie_header(data.split(|b| *b == b'\n'));
    let mut reached = false;
    for secure in [false, true] {
        let spec = CookieSpec {
            secure,
            path: "/".into(),
        };
        // Without Redis, loading never waits: the future is ready at once.
        let state = futures_util::FutureExt::now_or_never(sessions().load(&cookies, &spec))
            .expect("cookie sessions never wait");
        match state {
            SessionState::Valid { .. } => {
                panic!("a forged Cookie header was accepted as a session")
            }
            SessionState::None => {}
            _ => reached = true,
        }
    }
    reached
}

fn allowed_hosts() -> &'static [HostPattern] {
    static HOSTS: OnceLock<Vec<HostPattern>> = OnceLock::new();
    HOSTS.get_or_init(|| {
        vec![
            HostPattern::Exact("app.example.gouv.fr".into()),
            HostPattern::Subdomains(".interieur.gouv.fr".into()),
        ]
    })
}

/// Return URLs (`rd`): what is accepted is a local path that stays local, or an http(s) URL on an
/// allow-listed host; and accepting is stable (the accepted form validates to itself).
pub fn return_url(data: &[u8]) -> bool {
    let Ok(raw) = std::str::from_utf8(data) else {
        return false;
    };
    let Some(accepted) = validate_return_to(raw, allowed_hosts()) else {
        return false;
    };
    assert!(
        !accepted
            .bytes()
            .any(|b| b <= 0x20 || b >= 0x7f || b == b'\\'),
        "accepted {accepted:?} with a byte browsers reinterpret"
    );
    if accepted.starts_with('/') {
        assert!(
            !accepted.starts_with("//"),
            "accepted a scheme-relative {accepted:?}"
        );
    } else {
        let url = url::Url::parse(&accepted).expect("an accepted absolute URL parses");
        assert!(matches!(url.scheme(), "http" | "https"), "{accepted:?}");
        let host = url.host_str().unwrap_or_default();
        assert!(
            allowed_hosts().iter().any(|p| p.matches(host)),
            "accepted {accepted:?}: host {host:?} is not allow-listed"
        );
    }
    assert_eq!(
        validate_return_to(&accepted, allowed_hosts()).as_deref(),
        Some(accepted.as_str()),
        "validation is not stable for {raw:?}"
    );
    true
}

/// Request paths: a normalised path has no `//`, no `.`/`..` segment and no control byte, matches
/// without `;parameters`, and normalises to itself (what is matched is what the upstream receives).
pub fn request_path(data: &[u8]) -> bool {
    let Ok(raw) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(path) = normalise_path(raw) else {
        return false;
    };
    let forward = &path.forward;
    assert!(forward.starts_with('/'), "{forward:?}");
    assert!(!forward.contains("//"), "{raw:?} → {forward:?}");
    assert!(
        !forward.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'),
        "{forward:?}"
    );
    for segment in forward.split('/') {
        let bare = segment.split(';').next().unwrap_or("");
        assert!(
            bare != "." && bare != "..",
            "{raw:?} → {forward:?} keeps a dot segment"
        );
    }
    assert!(!path.matching.contains(';'), "{:?}", path.matching);
    // What is matched has no empty segment either: `/;x/admin` must not match as `//admin`, which no
    // route prefix covers, while the upstream reads `/admin`.
    assert!(
        !path.matching.contains("//"),
        "{raw:?} is matched as {:?}",
        path.matching
    );
    assert_eq!(
        normalise_path(forward).as_ref(),
        Ok(&path),
        "not idempotent for {raw:?}"
    );
    true
}

/// Configuration text: refused with `file:line: key: message`, or accepted; never a panic. "Deep" is
/// well-formed TOML, which reaches the validation of every key.
pub fn config_text(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let well_formed = toml::from_str::<toml::Table>(&text).is_ok();
    if let Err(e) = config::parse(&text, "fuzz.toml") {
        let message = e.to_string();
        assert!(
            message.starts_with("fuzz.toml:"),
            "an error that does not name the file: {message}"
        );
        let line: usize = message["fuzz.toml:".len()..]
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an error without a line number: {message}"));
        assert!(
            line >= 1 && line <= text.lines().count().max(1) + 1,
            "line {line} is outside the file: {message}"
        );
    }
    well_formed
}
