//! The server's certificates: chosen per connection by the name the client asked for (SNI), and replaced
//! while running — on reload, and when the files change on disk (certbot, an ACME client, a Kubernetes
//! secret) — without closing a connection.
//!
//! pingora builds each TLS listener's rustls configuration once, at start. The configuration is given a
//! resolver instead of a certificate: each handshake asks it, and it answers from a table swapped whole
//! (`ArcSwap`), so a renewal is one pointer store and a handshake never waits on a lock or a file.
//! A pair that does not load (unreadable, not PEM, the key not the certificate's) never replaces a
//! working one: the running certificate stays and the log says why.

use crate::config::{HostPattern, ServerCertificate};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read `{path}`: {reason}")]
    Read { path: String, reason: String },
    #[error("`{0}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(String),
    #[error("`{path}`: a certificate cannot be parsed: {reason}")]
    Unparsable { path: String, reason: String },
    #[error("`{0}` holds no PEM private key (PKCS#8, EC or RSA)")]
    NoKey(String),
    #[error("`{0}` is not valid now (expired, or not yet valid): a renewal never replaces a working certificate with it")]
    OutsideValidity(String),
    #[error("the key in `{key}` does not go with the certificate in `{cert}`: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
}

/// A certificate chain and its key, checked to go together, with the leaf's expiry for the log.
#[derive(Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    pub not_after: Option<SystemTime>,
    pub valid_now: bool,
}

impl std::fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("chain", &self.key.cert.len())
            .field("key", &"***")
            .finish()
    }
}

/// Reads `cert` (PEM chain, leaf first) and `key` (PEM private key) and checks that they go together.
pub fn load(cert: &str, key: &str) -> Result<LoadedCertificate, CertificateError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| CertificateError::Read {
            path: path.to_string(),
            reason: e.to_string(),
        })
    };
    let cert_pem = read(cert)?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&cert_pem) {
        let der = item.map_err(|e| CertificateError::Unparsable {
            path: cert.to_string(),
            reason: e.to_string(),
        })?;
        chain.push(der);
    }
    let Some(leaf) = chain.first() else {
        return Err(CertificateError::NoCertificate(cert.to_string()));
    };
    let (not_after, valid_now) = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, parsed)) => (
            u64::try_from(parsed.validity().not_after.timestamp())
                .ok()
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            parsed.validity().is_valid(),
        ),
        Err(e) => {
            return Err(CertificateError::Unparsable {
                path: cert.to_string(),
                reason: e.to_string(),
            })
        }
    };
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|_| CertificateError::NoKey(key.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
        CertificateError::Mismatch {
            cert: cert.to_string(),
            key: key.to_string(),
            reason: e.to_string(),
        }
    })?;
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        not_after,
        valid_now,
    })
}

/// The certificates of one moment: by host pattern, and the one for every other name.
struct CertTable {
    /// Exact names first, then wildcards, longest suffix first: the most specific pattern wins.
    by_host: Vec<(HostPattern, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl CertTable {
    fn new(entries: &[(ServerCertificate, LoadedCertificate)]) -> Option<CertTable> {
        let default = entries
            .iter()
            .find(|(c, _)| c.hosts.is_empty())
            .or_else(|| entries.first())
            .map(|(_, l)| l.key.clone())?;
        let by_host = entries
            .iter()
            .flat_map(|(c, l)| c.hosts.iter().map(|h| (h.clone(), l.key.clone())))
            .collect();
        Some(CertTable::with(by_host, default))
    }

    fn with(
        mut by_host: Vec<(HostPattern, Arc<CertifiedKey>)>,
        default: Arc<CertifiedKey>,
    ) -> Self {
        by_host.sort_by_key(|(h, _)| match h {
            HostPattern::Exact(_) => (0, 0),
            HostPattern::Subdomains(s) => (1, usize::MAX - s.len()),
        });
        CertTable { by_host, default }
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.by_host
            .iter()
            .find(|(h, _)| h.matches(&name))
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// When a file was last seen changed: modification time, size and inode (a renewal may move a new file
/// into place with the old time).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The listener's certificates, as the TLS handshakes see them.
pub struct CertStore {
    table: ArcSwap<CertTable>,
    /// What the table was built from, and how the files looked then: the watcher compares against it.
    source: Mutex<(Vec<ServerCertificate>, Vec<Stamp>)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

fn stamps(entries: &[ServerCertificate]) -> Vec<Stamp> {
    entries
        .iter()
        .flat_map(|c| [stamp(&c.cert), stamp(&c.key)])
        .collect()
}

fn load_all(
    entries: &[ServerCertificate],
) -> Result<Vec<(ServerCertificate, LoadedCertificate)>, CertificateError> {
    entries
        .iter()
        .map(|c| load(&c.cert, &c.key).map(|l| (c.clone(), l)))
        .collect()
}

impl CertStore {
    /// The store for `entries`, which the configuration check has loaded once already.
    pub fn new(entries: &[ServerCertificate]) -> Result<Arc<CertStore>, CertificateError> {
        let loaded = load_all(entries)?;
        let table = CertTable::new(&loaded)
            .ok_or_else(|| CertificateError::NoCertificate(String::new()))?;
        log_loaded(&loaded, "server certificate loaded");
        Ok(Arc::new(CertStore {
            table: ArcSwap::from_pointee(table),
            source: Mutex::new((entries.to_vec(), stamps(entries))),
        }))
    }

    /// Replaces the certificates with `entries` (a reload's), or keeps the running ones if any fails.
    pub fn replace(&self, entries: &[ServerCertificate]) -> Result<(), CertificateError> {
        let Ok(mut source) = self.source.lock() else {
            return Ok(());
        };
        let stamps = stamps(entries);
        let changed = source.0 != entries || source.1 != stamps;
        if !changed {
            return Ok(());
        }
        let result = self.install(entries);
        // A refused pair is not tried again until its files change again.
        *source = (entries.to_vec(), stamps);
        result
    }

    fn install(&self, entries: &[ServerCertificate]) -> Result<(), CertificateError> {
        let loaded = load_all(entries)?;
        // At the start an expired certificate is served (and warned about): there is nothing better. A renewal
        // that brings one is a mistake in the files (an old backup restored, a clock off), not an improvement.
        if let Some((c, _)) = loaded.iter().find(|(_, l)| !l.valid_now) {
            return Err(CertificateError::OutsideValidity(c.cert.clone()));
        }
        if let Some(table) = CertTable::new(&loaded) {
            self.table.store(Arc::new(table));
            log_loaded(
                &loaded,
                "server certificate renewed: new connections use it",
            );
        }
        Ok(())
    }

    /// Reloads the certificates if one of their files changed since last seen.
    pub fn check_files(&self) {
        let entries = match self.source.lock() {
            Ok(source) => source.0.clone(),
            Err(_) => return,
        };
        if let Err(e) = self.replace(&entries) {
            tracing::error!(error = %e, "the changed server certificate cannot be used: the running one stays until the files change again");
        }
    }
}

fn log_loaded(loaded: &[(ServerCertificate, LoadedCertificate)], message: &str) {
    for (c, l) in loaded {
        let days_left = l
            .not_after
            .map(|t| match t.duration_since(SystemTime::now()) {
                Ok(d) => (d.as_secs() / 86_400) as i64,
                Err(e) => -((e.duration().as_secs() / 86_400) as i64) - 1,
            });
        tracing::info!(cert = %c.cert, hosts = c.hosts.len(), days_left, "{message}");
        if days_left.is_some_and(|d| d < 14) {
            tracing::warn!(cert = %c.cert, days_left, "the server certificate expires soon: renew it (the new files are picked up without a restart)");
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.table.load().pick(hello.server_name()))
    }
}

/// Polls the certificate files and reloads them when they change: an ACME client renews without telling us.
pub struct CertWatcher {
    pub store: Arc<CertStore>,
    pub interval: Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let store = self.store.clone();
                    // Reading files blocks: off the workers.
                    let _ = tokio::task::spawn_blocking(move || store.check_files()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Arc<CertifiedKey> {
        // Only identity matters to `pick`: a chain of one fake certificate and a real key.
        let provider = rustls::crypto::ring::default_provider();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let der = PrivateKeyDer::try_from(pkcs8.as_ref().to_vec()).unwrap();
        let signing = provider.key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![n])],
            signing,
        ))
    }

    #[test]
    fn the_most_specific_pattern_wins_and_other_names_get_the_default() {
        let (a, b, c, d) = (key(1), key(2), key(3), key(4));
        let table = CertTable::with(
            vec![
                (HostPattern::Subdomains(".gouv.fr".into()), b),
                (HostPattern::Subdomains(".rie.gouv.fr".into()), c),
                (HostPattern::Exact("agents.rie.gouv.fr".into()), d),
            ],
            a,
        );
        let first = |name: Option<&str>| table.pick(name).cert[0].as_ref()[0];
        assert_eq!(first(None), 1);
        assert_eq!(first(Some("example.org")), 1);
        assert_eq!(first(Some("app.gouv.fr")), 2);
        assert_eq!(first(Some("App.RIE.gouv.fr.")), 3);
        assert_eq!(first(Some("agents.rie.gouv.fr")), 4);
        assert_eq!(
            first(Some("gouv.fr")),
            1,
            "a wildcard does not cover the apex"
        );
    }
}
