//! Responses Passerelle writes itself. Every one carries a Content-Length (pingora#498: without it an
//! HTTP/1.1 client waits for a body that never comes) and is written with `write_response_header`, which
//! keeps the connection alive, unlike `respond_error` (pingora#190).

use crate::pages;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::borrow::Cow;
use std::sync::Arc;

/// `server.hsts` of the running generation: every answer Passerelle writes carries it, as proxied ones do
/// (set by each generation, like the pages' branding).
static HSTS: arc_swap::ArcSwapOption<http::HeaderValue> = arc_swap::ArcSwapOption::const_empty();

pub fn set_hsts(value: Option<http::HeaderValue>) {
    HSTS.store(value.map(Arc::new));
}

pub struct Reply {
    status: u16,
    headers: Vec<(Cow<'static, str>, String)>,
    /// Headers whose values may hold bytes outside ASCII (identity in `utf8` encoding).
    values: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
}

impl Reply {
    fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            headers: vec![(Cow::Borrowed("Cache-Control"), "no-store".into())],
            values: Vec::new(),
            body: body.into(),
        }
    }

    /// A 302 to `location`. Never cached: a cached login redirect replays a spent state (oauth2-proxy #1098).
    pub fn redirect(location: &str) -> Self {
        Reply::new(302, Bytes::new()).header("Location", location.to_string())
    }

    pub fn html(status: u16, page: String) -> Self {
        Reply::new(status, page)
            .header("Content-Type", "text/html; charset=utf-8".into())
            .header("Content-Security-Policy", pages::content_security_policy())
            .header("X-Frame-Options", "DENY".into())
            .header("X-Content-Type-Options", "nosniff".into())
            .header("Referrer-Policy", "no-referrer".into())
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Reply::new(status, serde_json::to_vec(value).unwrap_or_default())
            .header("Content-Type", "application/json".into())
            .header("X-Content-Type-Options", "nosniff".into())
    }

    /// A public document (the assertion keys): cacheable, readable from any origin.
    pub fn public_json(body: Bytes, max_age: u32) -> Self {
        Reply::new(200, body)
            .header("Content-Type", "application/jwk-set+json".into())
            .header("Cache-Control", format!("public, max-age={max_age}"))
            .header("Access-Control-Allow-Origin", "*".into())
            .header("X-Content-Type-Options", "nosniff".into())
    }

    /// A static image of the pages (the logo). An SVG opened on its own runs no script: it is sandboxed.
    pub fn asset(body: Bytes, content_type: &'static str) -> Self {
        Reply::new(200, body)
            .header("Content-Type", content_type.into())
            .header("Cache-Control", "public, max-age=3600".into())
            .header("X-Content-Type-Options", "nosniff".into())
            .header(
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; sandbox".into(),
            )
    }

    pub fn text(status: u16, text: &str) -> Self {
        Reply::new(status, text.to_string())
            .header("Content-Type", "text/plain; charset=utf-8".into())
            .header("X-Content-Type-Options", "nosniff".into())
    }

    /// Sets a header, replacing any earlier value of the same name.
    pub fn header(mut self, name: impl Into<Cow<'static, str>>, value: String) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value));
        self
    }

    /// Sets a header from a ready value (bytes as they are).
    pub fn header_value(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value));
        self
    }

    pub fn cookies(mut self, set_cookies: impl IntoIterator<Item = String>) -> Self {
        self.headers.extend(
            set_cookies
                .into_iter()
                .map(|c| (Cow::Borrowed("Set-Cookie"), c)),
        );
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub async fn send(self, session: &mut Session) -> pingora::Result<()> {
        let mut header = ResponseHeader::build(
            self.status,
            Some(self.headers.len() + self.values.len() + 1),
        )?;
        for (name, value) in self.headers {
            header.append_header(name.into_owned(), value)?;
        }
        for (name, value) in self.values {
            header.append_header(name, value)?;
        }
        header.insert_header("Content-Length", self.body.len().to_string())?;
        if let Some(hsts) = HSTS.load().as_deref() {
            header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        if self.body.is_empty() || head_only {
            session
                .write_response_header(Box::new(header), true)
                .await?;
        } else {
            session
                .write_response_header(Box::new(header), false)
                .await?;
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(())
    }
}
