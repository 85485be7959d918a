//! How an https upstream is reached: which CAs are trusted, which client certificate is shown, which
//! name is sent and verified.

use crate::config::RouteConfig;
use pingora::upstreams::peer::{HttpPeer, PeerOptions};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use sha2::Digest;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Built once per route and generation; each request's peer takes `Arc` clones of it.
pub struct PeerTls {
    ca: Option<Arc<[WrappedX509]>>,
    /// The CA file, for the log line of a refused certificate.
    ca_file: Option<String>,
    client: Option<Arc<CertKey>>,
    sni: String,
    verify_hostname: bool,
    /// Keeps apart, in pingora's connection pool, connections verified under different trust: pingora
    /// keys reuse on address, SNI and client certificate, not on the CAs.
    group: u64,
}

impl PeerTls {
    /// The route's settings; the certificates were parsed when the configuration was validated, so
    /// nothing here can fail.
    pub fn new(route: &RouteConfig) -> Self {
        let t = &route.upstream_tls;
        let ca: Option<Arc<[WrappedX509]>> = t.ca.as_ref().map(|(_, ders)| {
            ders.iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect::<Vec<_>>()
                .into()
        });
        let client = t
            .client
            .as_ref()
            .map(|c| Arc::new(CertKey::new(c.chain.clone(), c.key.clone())));
        let sni = t
            .sni
            .clone()
            .unwrap_or_else(|| route.upstreams[0].host.clone());
        // Everything a connection's trust depends on. The client certificate too: pingora's own key
        // hashes only its serial, which two certificates from different CAs (or self-signed) may share.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        t.ca.as_ref().map(|(_, d)| d).hash(&mut hasher);
        t.verify_hostname.hash(&mut hasher);
        if let Some(c) = &t.client {
            c.chain.hash(&mut hasher);
            sha2::Sha256::digest(&c.key).as_slice().hash(&mut hasher);
        }
        Self {
            ca,
            ca_file: t.ca.as_ref().map(|(path, _)| path.clone()),
            client,
            sni,
            verify_hostname: t.verify_hostname,
            group: hasher.finish(),
        }
    }

    pub fn sni(&self) -> &str {
        &self.sni
    }

    pub fn ca_file(&self) -> Option<&str> {
        self.ca_file.as_deref()
    }

    pub fn verifies_hostname(&self) -> bool {
        self.verify_hostname
    }

    pub fn has_client_certificate(&self) -> bool {
        self.client.is_some()
    }

    pub fn apply_options(&self, options: &mut PeerOptions) {
        // Always on: pingora skips every check only when asked, or when SNI is empty (never here).
        options.verify_cert = true;
        options.verify_hostname = self.verify_hostname;
        options.ca = self.ca.clone();
    }

    /// The client certificate and the pool key, which live on the peer rather than its options.
    pub fn apply_client(&self, peer: &mut HttpPeer) {
        peer.client_cert_key = self.client.clone();
        peer.group_key = self.group;
    }

    /// Everything, for an HTTP health check's template.
    pub fn apply(&self, peer: &mut HttpPeer) {
        self.apply_options(&mut peer.options);
        self.apply_client(peer);
    }
}
