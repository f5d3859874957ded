//! The webhook's TLS identity: a certificate and key read from PEM files and re-read when they
//! change, so a renewal (cert-manager rewrites the mounted Secret) needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use anyhow::Context;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::shutdown::CancellationToken;

/// How often the files are checked for a new certificate. Secret volumes themselves are
/// refreshed by the kubelet about once a minute, so checking more often gains nothing.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The crypto provider used for both the server and (in tests) clients.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves whatever certificate was last read successfully.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    /// Read the files once; failing here fails the start.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<ReloadingCert>> {
        let (raw, key) = read(cert_path, key_path)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((raw, key)),
        }))
    }

    /// Re-read the files; keep the old certificate when they are unreadable (mid-rewrite, or
    /// a renewal gone wrong) and say so. Returns whether a new certificate is now served.
    pub fn reload(&self) -> bool {
        match read(&self.cert_path, &self.key_path) {
            Ok((raw, key)) => {
                let mut current = self.current.write();
                if current.0 == raw {
                    return false;
                }
                *current = (raw, key);
                tracing::info!(cert = %self.cert_path.display(), "webhook certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "webhook certificate not reloaded; serving the previous one"
                );
                false
            }
        }
    }

    /// Reload every [`RELOAD_INTERVAL`] until `cancel` fires.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            // File reads are blocking; they are small, but keep them off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().1.clone())
    }
}

/// A server config serving `cert` over HTTP/1.1.
pub fn server_config(cert: Arc<ReloadingCert>) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate file's bytes (to notice changes) and the parsed chain and key.
fn read(cert_path: &Path, key_path: &Path) -> anyhow::Result<(Vec<u8>, Arc<CertifiedKey>)> {
    let cert_pem =
        std::fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem =
        std::fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert_path.display());
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("parsing {}", key_path.display()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!("{} and {} do not make a usable pair", cert_path.display(), key_path.display())
    })?;
    let mut raw = cert_pem;
    raw.extend_from_slice(&key_pem);
    Ok((raw, Arc::new(certified)))
}
