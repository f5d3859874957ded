//! The webhook's TLS identity: a certificate and key read from PEM files and re-read when they
//! change (`crate::tls::Reloading`), so a renewal (cert-manager rewrites the mounted Secret)
//! needs no restart.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::shutdown::CancellationToken;
pub use crate::tls::provider;
use crate::tls::{self, Reloading};

/// Serves whatever certificate was last read successfully.
#[derive(Debug)]
pub struct ReloadingCert {
    files: Arc<Reloading<CertifiedKey>>,
}

impl ReloadingCert {
    /// Read the files once; failing here fails the start.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<ReloadingCert>> {
        let paths = vec![cert_path.to_path_buf(), key_path.to_path_buf()];
        let names = paths.clone();
        let files = Reloading::from_files("webhook certificate", paths, move |raw| {
            tls::certified_key((&names[0], &raw[0]), (&names[1], &raw[1]))
        })?;
        Ok(Arc::new(ReloadingCert { files }))
    }

    /// Re-read the files; keep the old certificate when they are unreadable (mid-rewrite, or
    /// a renewal gone wrong) and say so. Returns whether a new certificate is now served.
    pub fn reload(&self) -> bool {
        self.files.reload()
    }

    /// Reload every [`crate::tls::RELOAD_INTERVAL`] until `cancel` fires.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let files = self.files.clone();
        drop(self);
        files.watch(cancel).await
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.files.current())
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
