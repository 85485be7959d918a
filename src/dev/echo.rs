//! The built-in echo upstream: a page showing the headers it received, so a newcomer sees at once what
//! an application behind Passerelle is told.

use crate::config::HeaderEncoding;
use crate::identity::headers::decode_value;
use crate::pages::{escape, layout};
use crate::small_app::response;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct Echo {
    /// Passerelle's endpoint prefix, for the logout link.
    pub prefix: String,
    /// How Passerelle encodes identity values (`server.header_encoding`), to show them decoded.
    pub encoding: HeaderEncoding,
    /// The identity header names of every route (lower case): shown decoded, and their presence means
    /// someone is signed in.
    pub identity_headers: Vec<String>,
}

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        // `?fixed`: a constant two-byte answer, whatever the request carried, so a benchmark compares
        // Passerelle's own cost across routes rather than the echo's work on longer header lists.
        if req
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "fixed"))
        {
            return response(200, "text/plain", b"ok".to_vec());
        }
        let wants_json = req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("application/json"));
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (content_type, body) = if wants_json {
            let map: Vec<serde_json::Value> = headers
                .iter()
                .map(|(n, v)| serde_json::json!([n, v]))
                .collect();
            ("application/json", serde_json::to_vec(&serde_json::json!({"method": req.method.as_str(), "uri": req.uri.to_string(), "headers": map})).unwrap_or_default())
        } else {
            let is_identity = |n: &str| self.identity_headers.iter().any(|h| h == n);
            let signed_in = headers.iter().any(|(n, _)| is_identity(n));
            let rows: String = headers
                .iter()
                .map(|(n, v)| {
                    let decoded = match is_identity(n) {
                        true => decode_value(v.as_bytes(), self.encoding)
                            .filter(|d| d != v)
                            .map(|d| format!("<br><span class=\"en\">lu par l'application : <strong>{}</strong></span>", escape(&d)))
                            .unwrap_or_default(),
                        false => String::new(),
                    };
                    let mark = if is_identity(n) { " class=\"identity\"" } else { "" };
                    format!(
                        "<tr{mark}><th>{}</th><td><code>{}</code>{decoded}</td></tr>",
                        escape(n),
                        escape(v)
                    )
                })
                .collect();
            let encoding = match self.encoding {
                HeaderEncoding::Percent => "pourcent (UTF-8 encodé en %XX, comme une URL : <code>H%C3%A9l%C3%A8ne</code> se lit Hélène)",
                HeaderEncoding::Utf8 => "UTF-8 brut",
                HeaderEncoding::Base64 => "base64 (UTF-8)",
                HeaderEncoding::Rfc2047 => "RFC 2047 (<code>=?UTF-8?B?…?=</code> pour les valeurs non ASCII)",
            };
            let action = match signed_in {
                true => format!(
                    "<p><a class=\"btn secondary\" href=\"{}/logout\">Se déconnecter</a></p>",
                    escape(&self.prefix)
                ),
                false => format!(
                    "<p>Vous n'êtes pas connecté : cette page est publique. <a class=\"btn\" href=\"{}/login?rd=%2F\">Se connecter</a></p>",
                    escape(&self.prefix)
                ),
            };
            let body = format!(
                "<h1>Application de démonstration</h1><p>Cette page montre les en-têtes HTTP reçus par l'application placée derrière Passerelle. \
Les en-têtes d'identité sont en gras ; leur valeur est encodée en {encoding} : la valeur lue par l'application est donnée en dessous.</p>\
<p><strong>{} {}</strong></p><table>{rows}</table>{action}",
                escape(req.method.as_str()),
                escape(&req.uri.to_string()),
            );
            (
                "text/html; charset=utf-8",
                layout("Application de démonstration", &body).into_bytes(),
            )
        };
        response(200, content_type, body)
    }
}
