//! Validation of the TLS front door: `server.tls` (one certificate or several by SNI), `server.hsts` and
//! `server.redirect_http`.

use super::raw::{OneOrMany, RawServer, RawTls, S};
use super::types::{ClientCa, HostPattern, ServerCertificate, ServerTls};
use super::{ConfigError, Validator};
use std::net::SocketAddr;

impl Validator<'_> {
    pub(super) fn server_tls(&self, raw: &S<OneOrMany<RawTls>>) -> Result<ServerTls, ConfigError> {
        let entries: Vec<(&RawTls, String)> = match raw.get_ref() {
            OneOrMany::One(t) => vec![(t, "server.tls".to_string())],
            OneOrMany::Many(list) if list.is_empty() => {
                return self.err(
                    raw.span(),
                    "server.tls",
                    "at least one certificate: { cert = \"…\", key = \"…\" }",
                )
            }
            OneOrMany::Many(list) => list
                .iter()
                .enumerate()
                .map(|(i, t)| (t.get_ref(), format!("server.tls[{i}]")))
                .collect(),
        };
        let several = entries.len() > 1;
        let mut certificates: Vec<ServerCertificate> = Vec::new();
        for (t, key) in &entries {
            let cert = self.pem_file(&t.cert, &format!("{key}.cert"), "CERTIFICATE")?;
            let private = self.pem_file(&t.key, &format!("{key}.key"), "PRIVATE KEY")?;
            // Loaded now as the listener will load it: a key that is not the certificate's is found by
            // `check`, not by the first browser.
            crate::tls::certificates::load(&cert, &private)
                .or_else(|e| self.err(t.key.span(), format!("{key}.key"), e.to_string()))?;
            let mut hosts = Vec::new();
            if let Some(list) = &t.hosts {
                for h in list.get_ref() {
                    let pattern = HostPattern::parse(h.get_ref())
                        .or_else(|m| self.err(h.span(), format!("{key}.hosts"), m))?;
                    if let Some(other) =
                        certificates.iter().position(|c| c.hosts.contains(&pattern))
                    {
                        return self.err(
                            h.span(),
                            format!("{key}.hosts"),
                            format!("`{}` is already the name of server.tls[{other}]: each name picks one certificate", h.get_ref()),
                        );
                    }
                    hosts.push(pattern);
                }
            } else if several && certificates.iter().any(|c| c.hosts.is_empty()) {
                return self.err(
                    t.cert.span(),
                    format!("{key}.hosts"),
                    "only one certificate may go without `hosts` (it answers every other name): add `hosts = [\"…\"]`",
                );
            }
            certificates.push(ServerCertificate {
                cert,
                key: private,
                hosts,
            });
        }
        // One rustls configuration serves the listener: its client CA cannot differ by SNI.
        let mut client_ca: Option<ClientCa> = None;
        for (t, entry) in &entries {
            let Some(f) = &t.client_ca else { continue };
            let key = format!("{entry}.client_ca");
            let (path, pem) = self.read_file(f, &key)?;
            let roots = super::tls_files::certificates(&pem)
                .or_else(|m| self.err(f.span(), key.clone(), format!("`{path}`: {m}")))?;
            let ca = ClientCa { file: path, roots };
            crate::tls::client_certificate::verifier(&ca).or_else(|e| {
                self.err(
                    f.span(),
                    key.clone(),
                    format!("`{}` cannot verify client certificates: {e}", ca.file),
                )
            })?;
            match &client_ca {
                Some(first) if first.roots != ca.roots => {
                    return self.err(f.span(), key, "one listener asks for client certificates with one CA: give the same `client_ca` on every entry, or on one only")
                }
                _ => client_ca = Some(ca),
            }
        }
        Ok(ServerTls {
            certificates,
            client_ca,
        })
    }

    /// `server.hsts`: a `Strict-Transport-Security` value (RFC 6797) with a `max-age`.
    pub(super) fn hsts(&self, raw: &RawServer) -> Result<Option<http::HeaderValue>, ConfigError> {
        let Some(value) = &raw.hsts else {
            return Ok(None);
        };
        let key = "server.hsts";
        let text = value.get_ref().trim();
        let mut max_age = None;
        let mut seen: Vec<String> = Vec::new();
        for directive in text.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let name = directive
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            // RFC 6797 §6.1: a browser ignores the whole header when a directive appears twice.
            if seen.contains(&name) {
                return self.err(
                    value.span(),
                    key,
                    format!("`{name}` is given twice: browsers would ignore the header"),
                );
            }
            seen.push(name);
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            match (name.to_ascii_lowercase().as_str(), arg) {
                ("max-age", Some(a)) => match a.parse::<u64>() {
                    Ok(n) => max_age = Some(n),
                    Err(_) => {
                        return self.err(
                            value.span(),
                            key,
                            format!("max-age `{a}` is not a number of seconds"),
                        )
                    }
                },
                ("includesubdomains", None) | ("preload", None) => {}
                _ => {
                    return self.err(
                        value.span(),
                        key,
                        format!("`{directive}` is not a Strict-Transport-Security directive (max-age=N, includeSubDomains, preload)"),
                    )
                }
            }
        }
        if max_age.is_none() {
            return self.err(
                value.span(),
                key,
                "needs a max-age, like \"max-age=31536000; includeSubDomains\"",
            );
        }
        if !served_over_https(raw) {
            return self.err(
                value.span(),
                key,
                "only for a site served over https: set `server.tls`, or `server.public_url = \"https://…\"` behind a TLS-terminating proxy",
            );
        }
        http::HeaderValue::from_str(text)
            .map(Some)
            .or_else(|_| self.err(value.span(), key, "not a valid header value"))
    }

    /// `server.redirect_http`: plain-HTTP addresses that answer every request with a redirect to https.
    pub(super) fn redirect_http(&self, raw: &RawServer) -> Result<Vec<SocketAddr>, ConfigError> {
        let Some(list) = &raw.redirect_http else {
            return Ok(Vec::new());
        };
        let key = "server.redirect_http";
        if !served_over_https(raw) {
            return self.err(
                list.span(),
                key,
                "redirects to https: set `server.tls`, or `server.public_url = \"https://…\"` behind a TLS-terminating proxy",
            );
        }
        list.get_ref()
            .iter()
            .map(|a| self.socket_addr(a, key))
            .collect()
    }
}

/// Passerelle terminates TLS, or a proxy in front of it does for an https public URL.
fn served_over_https(raw: &RawServer) -> bool {
    raw.tls.is_some()
        || raw
            .public_url
            .as_ref()
            .is_some_and(|u| u.get_ref().starts_with("https://"))
}
