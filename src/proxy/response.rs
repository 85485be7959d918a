//! What an upstream's response may not carry to the browser.
//!
//! An app behind Passerelle is trusted with the identity of the requests it gets, not with the other apps:
//! it must not set Passerelle's cookies (one app could fix the session another app's users get), and a
//! response made for one identified person must not be stored by a shared cache and served to the next.

use crate::config::CachePolicy;
use crate::session::cookies::OwnCookieNames;
use pingora::http::ResponseHeader;

/// Removes every upstream `Set-Cookie` that would set one of Passerelle's cookies; returns how many.
pub fn remove_own_set_cookies(response: &mut ResponseHeader, own: &OwnCookieNames) -> usize {
    let values = response.headers.get_all(http::header::SET_COOKIE);
    if !values.iter().any(|v| own.set_by(v.as_bytes()).is_some()) {
        return 0;
    }
    let (removed, kept): (Vec<_>, Vec<_>) = values
        .iter()
        .cloned()
        .partition(|v| own.set_by(v.as_bytes()).is_some());
    response.remove_header(&http::header::SET_COOKIE);
    for value in kept {
        // The values came out of a header map: appending them back cannot fail.
        let _ = response.append_header(http::header::SET_COOKIE, value);
    }
    removed.len()
}

/// Headers that tell a CDN how to cache, overriding `Cache-Control` for it (RFC 9213 `CDN-Cache-Control`
/// and its vendor forms, `Surrogate-Control`).
fn is_cdn_cache_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("surrogate-control")
        || name
            .len()
            .checked_sub("cdn-cache-control".len())
            .is_some_and(|start| {
                name.is_char_boundary(start)
                    && name[start..].eq_ignore_ascii_case("cdn-cache-control")
            })
}

fn remove_cdn_cache_headers(response: &mut ResponseHeader) {
    if !response
        .headers
        .keys()
        .any(|n| is_cdn_cache_header(n.as_str()))
    {
        return;
    }
    let names: Vec<http::HeaderName> = response
        .headers
        .keys()
        .filter(|n| is_cdn_cache_header(n.as_str()))
        .cloned()
        .collect();
    for name in names {
        response.remove_header(&name);
    }
}

/// A response that sets one of Passerelle's cookies is stored nowhere: a cached copy would hand that
/// session to whoever gets the copy.
pub fn forbid_storage(response: &mut ResponseHeader) {
    let _ = response.insert_header(http::header::CACHE_CONTROL, "no-store");
    response.remove_header(&http::header::EXPIRES);
    remove_cdn_cache_headers(response);
}

/// A response made for an identified person: shared caches may not keep it (`public` becomes `private`,
/// `s-maxage` goes, `private` when the app said nothing, whose heuristic caching would otherwise
/// apply), and private caches key it on the cookie.
pub fn keep_private(response: &mut ResponseHeader, policy: CachePolicy) {
    if policy == CachePolicy::Upstream {
        return;
    }
    let no_store = if response.headers.contains_key(http::header::CACHE_CONTROL) {
        make_cache_control_private(response)
    } else {
        // What most apps send: no cache header at all, nothing to parse.
        let _ = response.insert_header(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("private"),
        );
        false
    };
    // A response no cache may store needs no cache key.
    if !no_store {
        add_vary_cookie(response);
    }
    remove_cdn_cache_headers(response);
}

/// Rewrites the app's `Cache-Control` so that shared caches may not keep the response; returns whether it
/// says `no-store`.
fn make_cache_control_private(response: &mut ResponseHeader) -> bool {
    let directives = comma_list(response, http::header::CACHE_CONTROL);
    let kept: Vec<&str> = directives
        .iter()
        .map(String::as_str)
        .filter(|d| !directive_is(d, &["public", "s-maxage", "proxy-revalidate"]))
        .collect();
    let private = kept
        .iter()
        .any(|d| directive_is(d, &["private", "no-store"]));
    if !private || kept.len() != directives.len() {
        let lead = (!private).then_some("private");
        let value = lead
            .into_iter()
            .chain(kept.iter().copied())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = response.insert_header(http::header::CACHE_CONTROL, value);
    }
    kept.iter().any(|d| directive_is(d, &["no-store"]))
}

/// Whether a `Cache-Control` directive (`name` or `name=value`) is one of `names`, in any case.
fn directive_is(directive: &str, names: &[&str]) -> bool {
    let name = directive.split('=').next().unwrap_or("").trim();
    names.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The members of a comma-separated header, over all its lines, trimmed, empty ones left out.
fn comma_list(response: &ResponseHeader, name: http::HeaderName) -> Vec<String> {
    response
        .headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|m| m.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

fn add_vary_cookie(response: &mut ResponseHeader) {
    if !response.headers.contains_key(http::header::VARY) {
        let _ =
            response.insert_header(http::header::VARY, http::HeaderValue::from_static("Cookie"));
        return;
    }
    let values = comma_list(response, http::header::VARY);
    if values
        .iter()
        .any(|f| f == "*" || f.eq_ignore_ascii_case("cookie"))
    {
        return;
    }
    let mut fields = values;
    fields.push("Cookie".to_string());
    let _ = response.insert_header(http::header::VARY, fields.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), v.to_string()).unwrap();
        }
        r
    }

    fn values(r: &ResponseHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn upstreams_cannot_set_passerelles_cookies() {
        let own = OwnCookieNames::new("passerelle");
        let mut r = response(&[
            ("Set-Cookie", "passerelle=forged; Path=/"),
            ("Set-Cookie", "JSESSIONID=1; Path=/"),
            ("Set-Cookie", "__Host-passerelle.1=x; Secure; Path=/"),
            ("Set-Cookie", "passerelle_pref=dark"),
            ("Set-Cookie", "=passerelle_idt=x"),
        ]);
        assert_eq!(remove_own_set_cookies(&mut r, &own), 3);
        assert_eq!(
            values(&r, "set-cookie"),
            ["JSESSIONID=1; Path=/", "passerelle_pref=dark"]
        );
        let mut clean = response(&[("Set-Cookie", "a=1")]);
        assert_eq!(remove_own_set_cookies(&mut clean, &own), 0);
        assert_eq!(values(&clean, "set-cookie"), ["a=1"]);
    }

    #[test]
    fn identified_responses_stay_private() {
        let mut r = response(&[
            ("Cache-Control", "public, max-age=3600, s-maxage=600"),
            ("Vary", "Accept-Encoding"),
            ("CDN-Cache-Control", "max-age=600"),
            ("Cloudflare-CDN-Cache-Control", "max-age=600"),
            ("Surrogate-Control", "max-age=600"),
        ]);
        keep_private(&mut r, CachePolicy::Private);
        assert_eq!(values(&r, "cache-control"), ["private, max-age=3600"]);
        assert_eq!(values(&r, "vary"), ["Accept-Encoding, Cookie"]);
        for gone in [
            "cdn-cache-control",
            "cloudflare-cdn-cache-control",
            "surrogate-control",
        ] {
            assert!(values(&r, gone).is_empty(), "{gone}");
        }
        let mut bare = response(&[]);
        keep_private(&mut bare, CachePolicy::Private);
        assert_eq!(values(&bare, "cache-control"), ["private"]);
        assert_eq!(values(&bare, "vary"), ["Cookie"]);
        let mut no_store = response(&[("Cache-Control", "no-store"), ("Vary", "*")]);
        keep_private(&mut no_store, CachePolicy::Private);
        assert_eq!(values(&no_store, "cache-control"), ["no-store"]);
        assert_eq!(values(&no_store, "vary"), ["*"]);
        let mut theirs = response(&[("Cache-Control", "public, max-age=60")]);
        keep_private(&mut theirs, CachePolicy::Upstream);
        assert_eq!(values(&theirs, "cache-control"), ["public, max-age=60"]);
    }

    #[test]
    fn responses_setting_our_cookies_are_never_stored() {
        let mut r = response(&[
            ("Cache-Control", "public, max-age=3600"),
            ("Expires", "Wed, 21 Oct 2099 07:28:00 GMT"),
            ("CDN-Cache-Control", "max-age=600"),
        ]);
        forbid_storage(&mut r);
        assert_eq!(values(&r, "cache-control"), ["no-store"]);
        assert!(values(&r, "expires").is_empty());
        assert!(values(&r, "cdn-cache-control").is_empty());
    }
}
