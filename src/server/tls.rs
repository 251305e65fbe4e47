//! TLS termination with rustls: the certificate and key come from files and are re-read when
//! they change, without dropping a connection; new handshakes get the new pair.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, the aws-lc-rs provider named explicitly
//! (a process-wide default would panic if another provider were ever linked in).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::metrics::Metrics;
use crate::sources::content_hash;
use crate::sources::watch::FileWatch;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "server.tls.cert: cannot read {path}: {reason}\n  fix: point it at a PEM file holding the certificate chain, leaf first"
    )]
    Cert { path: String, reason: String },
    #[error(
        "server.tls.key: cannot read {path}: {reason}\n  fix: point it at a PEM file holding the private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    Key { path: String, reason: String },
    #[error(
        "server.tls: the key in {key} does not belong to the certificate in {cert}\n  fix: give the key the certificate was issued for"
    )]
    Mismatch { cert: String, key: String },
    #[error("server.tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let display = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: display(&files.cert),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: display(&files.cert),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: display(&files.key),
        reason: e.to_string(),
    })?;
    let signing = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: display(&files.cert),
                key: display(&files.key),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Hands every handshake the current certificate.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server side of TLS: the rustls config and the resolver behind it.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    resolver: Arc<CertResolver>,
    files: TlsFiles,
}

impl Tls {
    pub fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(load(files)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            resolver,
            files: files.clone(),
        })
    }

    /// Re-reads the files when either changes (and every minute); a pair that fails to load
    /// or does not match is refused and the current one kept.
    pub fn spawn_reloader(&self, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
        let resolver = self.resolver.clone();
        let files = self.files.clone();
        let mut cert_watch = FileWatch::new(&files.cert);
        let mut key_watch = FileWatch::new(&files.key);
        tokio::spawn(async move {
            let mut last = fingerprint(&files);
            loop {
                tokio::select! {
                    () = cert_watch.changed(Duration::from_secs(60)) => {}
                    () = key_watch.changed(Duration::from_secs(60)) => {}
                }
                let now = fingerprint(&files);
                if now == last {
                    continue;
                }
                match load(&files) {
                    Ok(key) => {
                        resolver.current.store(Arc::new(key));
                        last = now;
                        metrics.count_reload("tls", "ok");
                        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        // The cert and key are often written one after the other: a mismatch
                        // may be momentary, so the next change is tried again.
                        metrics.count_reload("tls", "error");
                        tracing::warn!("TLS reload refused, keeping the current certificate: {e}");
                    }
                }
            }
        })
    }
}

fn fingerprint(files: &TlsFiles) -> (u64, u64) {
    let hash = |p: &PathBuf| std::fs::read(p).map(|b| content_hash(&b)).unwrap_or(0);
    (hash(&files.cert), hash(&files.key))
}
