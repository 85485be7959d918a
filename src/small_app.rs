//! Responses of the small built-in HTTP apps (admin, echo, development provider), which pingora's
//! `ServeHttp` writes whole: always with a Content-Length and never cached.

use http::Response;

pub fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .unwrap_or_default()
}
