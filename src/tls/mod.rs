//! The TLS front door: how a `server.tls` listener is set up (ALPN h2 and http/1.1, certificates by SNI
//! that renew while running) and what each TLS connection carries for the requests it multiplexes.

pub mod certificates;
pub mod client_certificate;
pub mod redirect_http;

use certificates::CertStore;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use std::any::Any;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// How many requests one connection may have in the proxy at once: twice the streams HTTP/2 lets it open
/// (`MAX_CONCURRENT_STREAMS`). A stream the client resets is closed for the HTTP/2 layer at once, while the
/// request it started is still being decided and proxied: without this count, opening and resetting
/// streams in a loop (rapid reset, CVE-2023-44487) would start unbounded work from one connection.
pub const MAX_IN_FLIGHT: u32 = 2 * MAX_CONCURRENT_STREAMS;

/// Streams an HTTP/2 client may have open at once (nginx and pingora: 100 and 128).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// What Passerelle keeps per TLS connection, shared by every request on it (pingora's digest extension).
#[derive(Debug, Default)]
pub struct Connection {
    in_flight: Arc<AtomicU32>,
    /// The verified client certificate, when the listener asks for one and the client showed it.
    pub client: Option<client_certificate::ClientIdentity>,
}

impl Connection {
    /// Counts one more request on this connection; `None` when it already has `MAX_IN_FLIGHT`.
    pub fn enter(&self) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.in_flight.clone());
        (before < MAX_IN_FLIGHT).then_some(guard)
    }
}

/// One request counted on its connection until it is dropped (with the request's context).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Attaches a `Connection` to each TLS connection once its handshake is done.
struct Callbacks;

#[async_trait::async_trait]
impl TlsAccept for Callbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // Only a listener with `client_ca` asks for a certificate, and rustls has verified any it got.
        let client = tls
            .peer_certificate_der()
            .and_then(client_certificate::ClientIdentity::from_der);
        Some(Arc::new(Connection {
            in_flight: Arc::default(),
            client,
        }))
    }
}

/// The settings of one `server.tls` listener: HTTP/2 offered first, HTTP/1.1 kept, and the certificate
/// asked of `store` at each handshake. TLS 1.2 and 1.3 only, with rustls' AEAD/ECDHE suites (SECURITY.md).
pub fn listener_settings(
    store: Arc<CertStore>,
    client_ca: Option<&crate::config::ClientCa>,
) -> Result<TlsSettings, String> {
    let mut settings =
        TlsSettings::with_callbacks(Box::new(Callbacks)).map_err(|e| e.to_string())?;
    settings.set_cert_resolver(store);
    if let Some(ca) = client_ca {
        settings.set_client_cert_verifier(client_certificate::verifier(ca)?);
    }
    settings.enable_h2();
    Ok(settings)
}

/// The connection state of a request that came over TLS.
pub fn connection(digest: Option<&pingora::protocols::Digest>) -> Option<&Connection> {
    let ssl = digest?.ssl_digest.as_ref()?;
    ssl.extension.get::<Connection>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_has_at_most_max_in_flight_requests_and_each_ended_one_frees_its_place() {
        let connection = Connection::default();
        let held: Vec<InFlight> = (0..MAX_IN_FLIGHT)
            .map(|_| connection.enter().expect("under the limit"))
            .collect();
        assert!(connection.enter().is_none(), "one over the limit");
        assert!(
            connection.enter().is_none(),
            "a refused request holds no place"
        );
        drop(held.into_iter().next());
        assert!(
            connection.enter().is_some(),
            "an ended request frees its place"
        );
    }
}
