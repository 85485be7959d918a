//! The built-in echo upstream: a page showing the headers it received, so a newcomer sees at once what
//! an application behind Passerelle is told.

use crate::pages::{escape, layout};
use crate::small_app::response;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct Echo {
    /// Passerelle's endpoint prefix, for the logout link.
    pub prefix: String,
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
            let rows: String = headers
                .iter()
                .map(|(n, v)| {
                    let mark = if n.starts_with("x-auth-") {
                        " style=\"background:#e3e3fd\""
                    } else {
                        ""
                    };
                    format!(
                        "<tr{mark}><th>{}</th><td>{}</td></tr>",
                        escape(n),
                        escape(v)
                    )
                })
                .collect();
            let body = format!(
                "<h1>Application de démonstration</h1><p>Cette page montre les en-têtes HTTP reçus par l'application placée derrière Passerelle. \
Les en-têtes d'identité (<code>X-Auth-*</code>) sont surlignés.</p><p><strong>{} {}</strong></p><table>{rows}</table>\
<p><a class=\"btn secondary\" href=\"{}/logout\">Se déconnecter</a></p>",
                escape(req.method.as_str()),
                escape(&req.uri.to_string()),
                escape(&self.prefix)
            );
            (
                "text/html; charset=utf-8",
                layout("Application de démonstration", &body).into_bytes(),
            )
        };
        response(200, content_type, body)
    }
}
