//! The media type of a `Content-Type` header: its part before any parameter, trimmed and lowercased,
//! as HTTP compares it (RFC 9110 §8.3.1). Used on what providers and clients send, which varies in case
//! and parameters (`application/JSON; charset=utf-8`).

pub fn media_type(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_case_do_not_matter() {
        let mut h = http::HeaderMap::new();
        assert_eq!(media_type(&h), None);
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(" Application/X-WWW-Form-Urlencoded ; charset=UTF-8"),
        );
        assert_eq!(
            media_type(&h).as_deref(),
            Some("application/x-www-form-urlencoded")
        );
    }
}
