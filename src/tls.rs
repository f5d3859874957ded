//! TLS material read from PEM files and re-read when the files change, so a renewal
//! (cert-manager rewrites a mounted Secret) needs no restart; and the Kafka listener's side
//! of TLS: the server config, the optional client-certificate check (mTLS) and the bounded
//! handshake in front of `connection::serve`.
//!
//! Owns: [`Reloading`] (files → a value built from them, rebuilt when any file changes; the
//! webhook's identity, the Kafka listener's config and the SeaweedFS client config are each
//! one), PEM parsing, the crypto provider, and [`KafkaTls`]. Does not own the SeaweedFS side
//! (`seaweed::tls` builds its client config with these pieces and dials with it) nor the
//! webhook's HTTP server (`webhook`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::shutdown::{CancellationToken, TaskTracker};

/// How often the files are checked for a change. Secret volumes themselves are refreshed by
/// the kubelet about once a minute, so checking more often gains nothing.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The crypto provider of every TLS config kelp builds (ring: no C toolchain beyond what
/// ring itself needs, no system OpenSSL).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === impl Reloading ===

/// Builds a value from the files' contents, given in the order of the paths.
type Build<T> = Box<dyn Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + Sync>;

/// A value built from a set of files, serving whatever was last built successfully.
///
/// Once loaded it always has a value: a file that is unreadable or does not parse (half
/// written, or a renewal gone wrong) keeps the previous value, with a warning.
pub struct Reloading<T> {
    /// What the files are, for logs ("Kafka listener TLS").
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Build<T>,
    current: RwLock<(Vec<Vec<u8>>, Arc<T>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("what", &self.what).field("paths", &self.paths).finish()
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Read the files and build once; failing here fails the start.
    pub fn from_files(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<Reloading<T>>> {
        let raw = read_all(&paths)?;
        let value = build(&raw).with_context(|| what)?;
        Ok(Arc::new(Reloading {
            what,
            paths,
            build: Box::new(build),
            current: RwLock::new((raw, Arc::new(value))),
        }))
    }

    /// The value built last.
    pub fn current(&self) -> Arc<T> {
        self.current.read().1.clone()
    }

    /// Re-read the files and rebuild when any changed. Returns whether a new value is now
    /// served.
    pub fn reload(&self) -> bool {
        let rebuilt = read_all(&self.paths).and_then(|raw| {
            let current = self.current.read();
            if current.0 == raw {
                return Ok(None);
            }
            drop(current);
            let value = (self.build)(&raw)?;
            Ok(Some((raw, value)))
        });
        match rebuilt {
            Ok(None) => false,
            Ok(Some((raw, value))) => {
                *self.current.write() = (raw, Arc::new(value));
                tracing::info!(what = self.what, "TLS files reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(
                    what = self.what,
                    error = format!("{e:#}"),
                    "TLS files not reloaded; keeping the previous ones"
                );
                false
            }
        }
    }

    /// Reload every [`RELOAD_INTERVAL`] until `cancel` fires or nothing else holds `self`
    /// any more (a client dropped without a shutdown of its own).
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        self.watch_every(RELOAD_INTERVAL, cancel).await
    }

    async fn watch_every(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let this: Weak<Self> = Arc::downgrade(&self);
        drop(self);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(strong) = this.upgrade() else { return };
            // File reads are blocking; they are small, but keep them off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || strong.reload()).await;
        }
    }
}

fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

// === PEM ===

/// Every certificate in a PEM file (a chain: leaf first); at least one.
pub fn certificates(path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", path.display());
    Ok(chain)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path, pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).with_context(|| format!("parsing {}", path.display()))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
) -> anyhow::Result<CertifiedKey> {
    let chain = certificates(cert_path, cert_pem)?;
    let key = private_key(key_path, key_pem)?;
    CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!("{} and {} do not make a usable pair", cert_path.display(), key_path.display())
    })
}

/// The CA certificates of a PEM bundle, as trust anchors; at least one.
pub fn roots(path: &Path, pem: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        store
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
    }
    Ok(store)
}

/// A certificate and key served as they are ([`Reloading`] swaps whole configs).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

// === impl KafkaTls ===

/// TLS on the Kafka listener: clients connect with `security.protocol=SSL` (or `SASL_SSL`
/// when SASL is on too). Cloning is cheap.
#[derive(Clone, Debug)]
pub struct KafkaTls {
    config: Arc<Reloading<ServerConfig>>,
    handshake_timeout: Duration,
}

/// The Kafka listener's TLS settings (`Config::listener_tls`).
pub struct ListenerFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// Clients must present a certificate from this CA (mTLS).
    pub client_ca: Option<&'a Path>,
    pub handshake_timeout: Duration,
}

/// How a handshake ended, as the metric counts it.
enum Handshake {
    Done(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Failed(std::io::Error),
    TimedOut,
    Cancelled,
}

impl KafkaTls {
    /// The listener's TLS from the settings, `None` when `tls_cert` is unset. Reads the files
    /// (failing the start when they are unusable) and re-reads them every
    /// [`RELOAD_INTERVAL`] on `tracker` until `cancel`.
    pub fn start(
        files: Option<ListenerFiles<'_>>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Option<KafkaTls>> {
        let Some(files) = files else { return Ok(None) };
        let server = server_config(files.cert, files.key, files.client_ca)
            .context("loading the Kafka listener's TLS files")?;
        tracker.spawn(server.clone().watch(cancel));
        Ok(Some(KafkaTls { config: server, handshake_timeout: files.handshake_timeout }))
    }

    /// The server's side of the handshake on an accepted connection, bounded by the
    /// handshake timeout and cut short by `cancel`. `None` when it did not complete (the
    /// reason is logged at debug: a client's broken TLS is the client's problem, and the
    /// metric counts it).
    pub async fn accept(
        &self,
        stream: TcpStream,
        cancel: &CancellationToken,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.config.current());
        let outcome = tokio::select! {
            _ = cancel.cancelled() => Handshake::Cancelled,
            r = tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)) => match r {
                Ok(Ok(tls)) => Handshake::Done(Box::new(tls)),
                Ok(Err(e)) => Handshake::Failed(e),
                Err(_) => Handshake::TimedOut,
            },
        };
        let metrics = crate::metrics::global();
        match outcome {
            Handshake::Done(tls) => {
                metrics.observe_tls_handshake("ok");
                Some(*tls)
            }
            Handshake::Failed(e) => {
                metrics.observe_tls_handshake("failed");
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Handshake::TimedOut => {
                metrics.observe_tls_handshake("timed_out");
                tracing::debug!(after = ?self.handshake_timeout, "TLS handshake timed out");
                None
            }
            Handshake::Cancelled => None,
        }
    }
}

/// The listener's server config from a certificate, its key and, for mTLS, the CA that
/// client certificates must chain to. No ALPN: Kafka does not negotiate one.
fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<Reloading<ServerConfig>>> {
    let mut paths = vec![cert.to_path_buf(), key.to_path_buf()];
    paths.extend(client_ca.map(Path::to_path_buf));
    let names = paths.clone();
    Reloading::from_files("Kafka listener TLS", paths, move |raw| {
        let identity = certified_key((&names[0], &raw[0]), (&names[1], &raw[1]))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match raw.get(2) {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(&names[2], ca)?),
                    provider(),
                )
                .build()
                .with_context(|| format!("client CA {}", names[2].display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        Ok(builder.with_cert_resolver(Arc::new(Fixed(Arc::new(identity)))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::ClientConfig;
    use tokio_rustls::rustls::pki_types::ServerName;

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn ca() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, issuer: rcgen::Issuer::new(params, key) }
    }

    /// A leaf for localhost signed by `ca`: (cert PEM, key PEM).
    fn leaf(ca: &Ca) -> (String, String) {
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    }

    fn client(ca: &Ca, identity: Option<(String, String)>) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certificates(Path::new("c"), cert.as_bytes()).unwrap(),
                    private_key(Path::new("k"), key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        TlsConnector::from(Arc::new(config))
    }

    /// A listener that completes the handshake and echoes one byte, with `tls`.
    async fn echo_server(tls: KafkaTls) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Some(mut s) = tls.accept(s, &CancellationToken::new()).await {
                        let mut b = [0u8; 1];
                        if s.read_exact(&mut b).await.is_ok() {
                            let _ = s.write_all(&b).await;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Whether a client completes a handshake and an exchange of one byte.
    async fn echoes(addr: std::net::SocketAddr, connector: &TlsConnector) -> bool {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let Ok(mut s) = connector.connect(name, tcp).await else { return false };
        // With TLS 1.3 a refused client certificate shows on the first read, not in connect.
        if s.write_all(b"x").await.is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await,
            Ok(Ok(_))
        ) && &b == b"x"
    }

    fn kafka_tls(dir: &Path, ca: &Ca, client_ca: bool, timeout: Duration) -> KafkaTls {
        let (cert, key) = leaf(ca);
        let (cert, key) = (write(dir, "tls.crt", &cert), write(dir, "tls.key", &key));
        let ca_path = client_ca.then(|| write(dir, "ca.crt", &ca.cert.pem()));
        KafkaTls {
            config: server_config(&cert, &key, ca_path.as_deref()).unwrap(),
            handshake_timeout: timeout,
        }
    }

    #[tokio::test]
    async fn a_client_certificate_is_required_only_with_a_client_ca() {
        let (dir, ca) = (tempfile::tempdir().unwrap(), ca());
        let open = echo_server(kafka_tls(dir.path(), &ca, false, Duration::from_secs(5))).await;
        assert!(echoes(open, &client(&ca, None)).await, "TLS without a client certificate");

        let dir = tempfile::tempdir().unwrap();
        let mtls = echo_server(kafka_tls(dir.path(), &ca, true, Duration::from_secs(5))).await;
        assert!(!echoes(mtls, &client(&ca, None)).await, "mTLS refuses a client without one");
        assert!(echoes(mtls, &client(&ca, Some(leaf(&ca)))).await, "and accepts one from the CA");
        let other = self::ca();
        assert!(
            !echoes(mtls, &client(&ca, Some(leaf(&other)))).await,
            "but not one from another CA"
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
        let (dir, ca) = (tempfile::tempdir().unwrap(), ca());
        let addr = echo_server(kafka_tls(dir.path(), &ca, false, Duration::from_millis(200))).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut b)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed without a handshake: {read:?}");
    }

    #[test]
    fn changed_files_are_picked_up_and_broken_ones_ignored() {
        let (dir, ca) = (tempfile::tempdir().unwrap(), ca());
        let (cert, key) = leaf(&ca);
        let (cert_path, key_path) =
            (write(dir.path(), "tls.crt", &cert), write(dir.path(), "tls.key", &key));
        let ca_path = write(dir.path(), "ca.crt", &ca.cert.pem());
        let config = server_config(&cert_path, &key_path, Some(&ca_path)).unwrap();
        let first = config.current();
        assert!(!config.reload(), "unchanged files are not a new config");
        let (cert, key) = leaf(&ca);
        write(dir.path(), "tls.crt", &cert);
        write(dir.path(), "tls.key", &key);
        assert!(config.reload(), "a renewal is picked up");
        assert!(!Arc::ptr_eq(&first, &config.current()));
        write(dir.path(), "ca.crt", &self::ca().cert.pem());
        assert!(config.reload(), "so is a new client CA");
        write(dir.path(), "tls.key", "half-written");
        assert!(!config.reload(), "a broken key keeps the previous config");
        std::fs::remove_file(&ca_path).unwrap();
        assert!(!config.reload(), "so does a missing file");
        assert!(server_config(&cert_path, &key_path, Some(&ca_path)).is_err(), "but fails a start");
    }

    #[tokio::test]
    async fn the_watcher_ends_when_nothing_else_holds_the_files() {
        let (dir, ca) = (tempfile::tempdir().unwrap(), ca());
        let tls = kafka_tls(dir.path(), &ca, false, Duration::from_secs(1));
        let every = Duration::from_millis(10);
        let watching =
            tokio::spawn(tls.config.clone().watch_every(every, CancellationToken::new()));
        tokio::time::sleep(every * 3).await;
        assert!(!watching.is_finished(), "it watches while the files are in use");
        drop(tls);
        tokio::time::timeout(Duration::from_secs(5), watching)
            .await
            .expect("the watcher ends")
            .unwrap();
    }
}
