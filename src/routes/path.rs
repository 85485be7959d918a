//! Request-path normalisation.
//!
//! The access decision must be taken on exactly the path the upstream will receive (oauth2-proxy
//! CVE-2026-41059, Envoy CVE-2019-9901, Istio CVE-2021-31920, Shiro CVE-2020-1957). So the path is
//! normalised once here, matched in that form, and forwarded in that same form. What cannot be normalised
//! without guessing how the upstream would read it is refused.

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("the path contains a control character, a space, a backslash or a non-ASCII byte")]
    ForbiddenByte,
    #[error("the path contains an encoded `/`, `\\`, `%`, NUL or control character")]
    AmbiguousEncoding,
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
    #[error("a `.` or `..` segment carries `;` parameters")]
    DotSegmentParameters,
    /// `/;x/admin`: matched as `//admin` but read as `/admin` by servlet containers, which drop the
    /// parameters and then the empty segment.
    #[error("a segment is only `;` parameters, without a name")]
    NamelessParameters,
    #[error("the path is too long")]
    TooLong,
}

/// A normalised request path: what is matched and what is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalisedPath {
    /// Forwarded to the upstream: dot segments resolved, `//` collapsed, unreserved escapes decoded,
    /// `;parameters` kept (Java session ids live there).
    pub forward: String,
    /// Matched against routes: `forward` without the `;parameters` of each segment, which servlet
    /// containers strip before their own mapping.
    pub matching: String,
}

const MAX_PATH: usize = 8192;

/// Normalises the path part of a request target (no query string: the caller splits it off first and
/// queries never take part in matching).
pub fn normalise_path(raw: &str) -> Result<NormalisedPath, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_normal(raw) {
        return Ok(NormalisedPath {
            forward: raw.to_owned(),
            matching: raw.to_owned(),
        });
    }
    normalise_segments(raw)
}

/// A path the general case would give back unchanged, in both forms: printable ASCII without `%`, `\`,
/// `#` or `;`, no empty segment but a final one, no `.` or `..` segment. What almost every request
/// carries, so it skips the copies and the segment list.
fn is_already_normal(raw: &str) -> bool {
    if !raw
        .bytes()
        .all(|b| matches!(b, 0x21..=0x7e) && !matches!(b, b'%' | b'\\' | b'#' | b';'))
    {
        return false;
    }
    let mut segments = raw[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// The general case: escapes decoded or refused, dot segments resolved, empty segments dropped.
fn normalise_segments(raw: &str) -> Result<NormalisedPath, PathError> {
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let ends_with_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/') {
        let bare = segment.split(';').next().unwrap_or("");
        match bare {
            "" if segment.is_empty() => continue,
            "" => return Err(PathError::NamelessParameters),
            "." | ".." if segment.len() != bare.len() => {
                return Err(PathError::DotSegmentParameters)
            }
            "." => continue,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut forward = String::with_capacity(decoded.len());
    let mut matching = String::with_capacity(decoded.len());
    for segment in &segments {
        forward.push('/');
        forward.push_str(segment);
        matching.push('/');
        matching.push_str(segment.split(';').next().unwrap_or(""));
    }
    if segments.is_empty() || ends_with_slash {
        forward.push('/');
        matching.push('/');
    }
    Ok(NormalisedPath { forward, matching })
}

/// Decodes `%XX` escapes of unreserved characters (RFC 3986 §2.3), upper-cases the others, and refuses
/// the escapes that would change the path structure once decoded by the upstream.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PathError::BadEscape)?;
            match value {
                b'/' | b'\\' | b'%' | 0x00..=0x1f | 0x7f => {
                    return Err(PathError::AmbiguousEncoding)
                }
                v if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => out.push(v as char),
                v => {
                    out.push('%');
                    out.push_str(&format!("{v:02X}"));
                }
            }
            i += 3;
            continue;
        }
        if b <= 0x20 || b >= 0x7f || b == b'\\' || b == b'#' {
            return Err(PathError::ForbiddenByte);
        }
        out.push(b as char);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(p: &str) -> String {
        normalise_path(p).unwrap().forward
    }

    #[test]
    fn resolves_dots_and_collapses_slashes() {
        assert_eq!(fwd("/"), "/");
        assert_eq!(fwd("/a/b"), "/a/b");
        assert_eq!(fwd("/a/b/"), "/a/b/");
        assert_eq!(fwd("//admin"), "/admin");
        assert_eq!(fwd("/public/../admin"), "/admin");
        assert_eq!(fwd("/public/%2e%2e/admin"), "/admin");
        assert_eq!(fwd("/public/.%2E/admin"), "/admin");
        assert_eq!(fwd("/a/./b/."), "/a/b/");
        assert_eq!(fwd("/a/b/.."), "/a/");
    }

    #[test]
    fn decodes_unreserved_and_keeps_reserved_encoded() {
        assert_eq!(fwd("/%61dmin"), "/admin");
        assert_eq!(fwd("/a%3fb"), "/a%3Fb");
        assert_eq!(fwd("/caf%c3%a9"), "/caf%C3%A9");
    }

    #[test]
    fn refuses_ambiguous_input() {
        assert_eq!(normalise_path("/a%2fb"), Err(PathError::AmbiguousEncoding));
        assert_eq!(normalise_path("/a%2Fb"), Err(PathError::AmbiguousEncoding));
        assert_eq!(normalise_path("/a%5cb"), Err(PathError::AmbiguousEncoding));
        assert_eq!(normalise_path("/a%00"), Err(PathError::AmbiguousEncoding));
        assert_eq!(
            normalise_path("/a%252e%252e/"),
            Err(PathError::AmbiguousEncoding)
        );
        assert_eq!(normalise_path("/a\\b"), Err(PathError::ForbiddenByte));
        assert_eq!(normalise_path("/a#b"), Err(PathError::ForbiddenByte));
        assert_eq!(normalise_path("/a b"), Err(PathError::ForbiddenByte));
        assert_eq!(normalise_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalise_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalise_path("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalise_path("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(normalise_path("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(
            normalise_path("/public/..;x/admin"),
            Err(PathError::DotSegmentParameters)
        );
        for nameless in [
            "/;/admin",
            "/;x=1/admin",
            "//;/admin",
            "/public/../;/admin",
            "/a/;",
        ] {
            assert_eq!(
                normalise_path(nameless),
                Err(PathError::NamelessParameters),
                "{nameless}"
            );
        }
    }

    #[test]
    fn matching_form_drops_segment_parameters() {
        let p = normalise_path("/admin;jsessionid=ABC/page").unwrap();
        assert_eq!(p.forward, "/admin;jsessionid=ABC/page");
        assert_eq!(p.matching, "/admin/page");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn path_like() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("/"),
                Just("."),
                Just(".."),
                Just("%2e"),
                Just("%2F"),
                Just("%25"),
                Just(";"),
                Just("a"),
                Just("é"),
                Just("%41"),
                Just("\\"),
                Just("#"),
                Just(" ")
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Whatever comes in, normalisation never panics, and what it accepts is stable: normalising the
        /// forwarded form again gives the same result, and neither form can climb or hide a segment.
        #[test]
        fn normalisation_is_total_and_idempotent(raw in path_like()) {
            if let Ok(p) = normalise_path(&raw) {
                prop_assert!(p.forward.starts_with('/'));
                for form in [&p.forward, &p.matching] {
                    prop_assert!(!form.contains("//"), "{form}");
                    prop_assert!(!form.split('/').any(|s| s == "." || s == ".."), "{form}");
                    prop_assert!(!form.contains('\\') && !form.contains('#'), "{form}");
                }
                let again = normalise_path(&p.forward).expect("a normalised path is valid");
                prop_assert_eq!(&again, &p);
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(raw in ".{0,64}") {
            let _ = normalise_path(&raw);
        }

        /// The shortcut for paths already in normal form gives exactly what the general case gives.
        #[test]
        fn the_shortcut_agrees_with_the_general_case(raw in path_like()) {
            let raw = format!("/{raw}");
            if is_already_normal(&raw) {
                prop_assert_eq!(normalise_segments(&raw), normalise_path(&raw));
                prop_assert_eq!(normalise_segments(&raw).map(|p| p.forward), Ok(raw.clone()));
            }
        }
    }
}
