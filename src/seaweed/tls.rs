//! TLS from kelp to SeaweedFS's gRPC servers (master, filer, brokers), on SeaweedFS's own
//! terms (its `security.toml`, checked against `weed/security/tls.go` and `weed` 4.48):
//!
//! - TLS is per server: a master, volume server, filer or broker speaks TLS when its
//!   `[grpc.<component>]` section (`master`, `volume`, `filer`, `msg_broker`) names a cert
//!   and key, and then it *requires* a client certificate that chains to `[grpc] ca`
//!   (`RequireClientCert: true`; a client without one gets the TLS alert
//!   "certificate required"). SeaweedFS's own clients use one dial option for every
//!   server, and so does kelp: with a CA set, every connection is TLS.
//! - Clients verify the server's chain against `[grpc] ca` but not its name ("the host name
//!   is not checked, so the certificate files can be shared"): kelp does the same unless a
//!   server name is configured, since it dials filers and brokers at the addresses they
//!   register with the master (usually pod IPs, rarely in a certificate).
//! - gRPC-Go servers refuse TLS connections that did not negotiate ALPN `h2`.
//! - A server's `allowed_commonNames` (and `[grpc] allowed_wildcard_domain`) restrict which
//!   client certificate subjects it accepts: kelp's certificate CN must be listed there.
//!
//! kelp hands tonic its own connector (TCP, then tokio-rustls) rather than using tonic's
//! TLS features: tonic fixes a channel's client identity and trust when the channel is made,
//! while kelp's channels live as long as the process and reconnect by themselves; through
//! the connector every new connection uses the files as last read, so a renewed client
//! certificate or CA needs no restart. tonic then needs no TLS feature.
//!
//! Owns: [`SeaweedTls`] (the settings), the client config built from its files (re-read
//! when they change) and the tonic connector that dials with it. Does not own which servers
//! are dialled (`rpc`).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;

use crate::shutdown::CancellationToken;
use crate::tls::{self, Reloading};

/// How kelp reaches SeaweedFS over TLS (`Config::seaweedfs_tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeaweedTls {
    /// PEM CA bundle the servers' certificates chain to (`[grpc] ca`).
    pub ca: PathBuf,
    /// PEM client certificate and key kelp presents (mTLS). SeaweedFS servers with TLS on
    /// refuse clients without one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name every server certificate must be valid for; `None` checks the chain only.
    pub server_name: Option<String>,
}

/// Dials SeaweedFS servers over TLS, for tonic's `Endpoint::connect_with_connector*`.
/// Cloning is cheap; every clone sees reloaded files.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    config: Arc<Reloading<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    /// Read the files (an error names the file) and build the client config.
    pub(crate) fn load(settings: &SeaweedTls) -> anyhow::Result<Connector> {
        let server_name = match &settings.server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .with_context(|| format!("{n:?} is not a DNS name or IP address"))?,
            ),
        };
        let mut paths = vec![settings.ca.clone()];
        if let Some((cert, key)) = &settings.identity {
            paths.extend([cert.clone(), key.clone()]);
        }
        let names = paths.clone();
        let check_name = server_name.is_some();
        let config = Reloading::from_files("SeaweedFS client TLS", paths, move |raw| {
            let roots = Arc::new(tls::roots(&names[0], &raw[0])?);
            let verifier = Verifier {
                roots,
                algorithms: tls::provider().signature_verification_algorithms,
                check_name,
            };
            let builder = ClientConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier));
            let mut config = match (raw.get(1), raw.get(2)) {
                (Some(cert), Some(key)) => {
                    // Checks that the key belongs to the certificate, with both file names.
                    tls::certified_key((&names[1], cert), (&names[2], key))?;
                    builder
                        .with_client_auth_cert(
                            tls::certificates(&names[1], cert)?,
                            tls::private_key(&names[2], key)?,
                        )
                        .context("client certificate")?
                }
                _ => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        })?;
        Ok(Connector { config, server_name })
    }

    /// Re-read the files every `tls::RELOAD_INTERVAL` until `cancel` fires or the last
    /// other clone of this connector is gone.
    pub(crate) fn watch(self, cancel: CancellationToken) -> impl Future<Output = ()> {
        self.config.watch(cancel)
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// TCP, then the TLS handshake. tonic bounds both together by the endpoint's connect
    /// timeout.
    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.current();
        let configured = self.server_name.clone();
        Box::pin(async move {
            let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
            let host = uri.host().ok_or_else(|| invalid(format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| invalid(format!("{uri}: no port")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = match configured {
                Some(n) => n,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("{host}: {e}")))?,
            };
            let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Verifies a server certificate's chain against the CA, and its name only when a server
/// name is configured (see the module docs).
#[derive(Debug)]
struct Verifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::server::WebPkiClientVerifier;

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Pki {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let ca = params.self_signed(&key).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
            Pki { dir, ca, issuer: rcgen::Issuer::new(params, key) }
        }

        /// A leaf with these names, written as `<file>.crt` and `<file>.key`.
        fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let params = CertificateParams::new(names).unwrap();
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let (c, k) = (
                self.dir.path().join(format!("{file}.crt")),
                self.dir.path().join(format!("{file}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        }

        fn ca_path(&self) -> PathBuf {
            self.dir.path().join("ca.crt")
        }
    }

    /// A TLS server like a SeaweedFS one: requires a client certificate from the CA and
    /// ALPN h2; answers one byte. Returns its port.
    async fn seaweedfs_like(pki: &Pki, server_names: &[&str]) -> u16 {
        let (cert, key) = pki.leaf("server", server_names);
        let read = |p: &Path| std::fs::read(p).unwrap();
        let identity = tls::certified_key((&cert, &read(&cert)), (&key, &read(&key))).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
                .build()
                .unwrap();
        let mut config = ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.cert.clone(), tls::private_key(&key, &read(&key)).unwrap())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(s).await {
                        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                        let _ = s.write_all(b"!").await;
                    }
                });
            }
        });
        port
    }

    async fn answers(connector: &Connector, port: u16) -> Result<(), String> {
        let uri: Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
        let mut io = connector.clone().call(uri).await.map_err(|e| e.to_string())?.into_inner();
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn settings(pki: &Pki, identity: bool, server_name: Option<&str>) -> SeaweedTls {
        SeaweedTls {
            ca: pki.ca_path(),
            identity: identity.then(|| pki.leaf("kelp", &["kelp"])),
            server_name: server_name.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn the_chain_is_checked_and_the_name_only_when_configured() {
        let pki = Pki::new();
        // A certificate shared by every server, naming none of the addresses dialled.
        let port = seaweedfs_like(&pki, &["seaweedfs"]).await;
        let chain_only = Connector::load(&settings(&pki, true, None)).unwrap();
        answers(&chain_only, port).await.expect("chain-only verification accepts it");
        let named = Connector::load(&settings(&pki, true, Some("seaweedfs"))).unwrap();
        answers(&named, port).await.expect("and so does the name it carries");
        let other = Connector::load(&settings(&pki, true, Some("elsewhere"))).unwrap();
        let err = answers(&other, port).await.unwrap_err();
        assert!(err.contains("not valid for name"), "another name is refused: {err}");

        let stranger = Pki::new();
        let foreign = Connector::load(&settings(&stranger, true, None)).unwrap();
        let err = answers(&foreign, port).await.unwrap_err();
        assert!(err.contains("invalid peer certificate"), "another CA is refused: {err}");
    }

    #[tokio::test]
    async fn without_a_client_certificate_a_requiring_server_refuses() {
        let pki = Pki::new();
        let port = seaweedfs_like(&pki, &["seaweedfs"]).await;
        let anonymous = Connector::load(&settings(&pki, false, None)).unwrap();
        let err = answers(&anonymous, port).await.unwrap_err();
        assert!(err.contains("Certificate") || err.contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn new_connections_use_the_files_as_last_read() {
        let pki = Pki::new();
        let port = seaweedfs_like(&pki, &["seaweedfs"]).await;
        let connector = Connector::load(&settings(&pki, true, None)).unwrap();
        answers(&connector, port).await.expect("the first files work");
        std::fs::copy(Pki::new().ca_path(), pki.ca_path()).unwrap();
        assert!(connector.config.reload(), "a replaced CA is read again");
        let err = answers(&connector, port).await.unwrap_err();
        assert!(err.contains("invalid peer certificate"), "the next connection uses it: {err}");
    }

    #[test]
    fn unusable_files_fail_the_load_with_their_name() {
        let pki = Pki::new();
        let mut s = settings(&pki, true, None);
        let (_, key) = pki.leaf("other", &["other"]);
        s.identity = s.identity.map(|(cert, _)| (cert, key));
        let err = format!("{:#}", Connector::load(&s).unwrap_err());
        assert!(err.contains("do not make a usable pair"), "{err}");
        s.ca = pki.dir.path().join("missing.crt");
        let err = format!("{:#}", Connector::load(&s).unwrap_err());
        assert!(err.contains("missing.crt"), "{err}");
    }
}
