//! TLS end to end against a real SeaweedFS 4.48 whose gRPC has TLS on for every server
//! (master, volume server, filer, broker; from a `security.toml` in `weed`'s working dir,
//! with JWT signing keys set too): kelp reaches it over mTLS, and librdkafka reaches kelp's
//! TLS listener with a client certificate (`security.protocol=SSL`) or with SASL
//! (`SASL_SSL`). The certificates are made here, by one test CA.
//!
//! Also measured here, what SeaweedFS 4.48 does: it refuses gRPC clients without a client
//! certificate, and ones whose certificate CN a server's `allowed_commonNames` does not
//! list; its filer refuses HTTP writes without a JWT while kelp's filer gRPC calls need none.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::kelp::Kelp;
use kelp::config::Config;
use kelp::embedded::{SeaweedFs, Security};
use kelp::seaweed::SeaweedTls;

const PARTITIONS: i32 = 2;
const RECORDS: usize = 200;
/// The JWT signing keys in security.toml: set, so any check they enable is on.
const FILER_JWT_KEY: &str = "filer-signing-key-for-the-test";
const VOLUME_JWT_KEY: &str = "volume-signing-key-for-the-test";

// === certificates ===

/// A test CA and the certificates it signs, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "kelp test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), cert.pem()).unwrap();
        Pki { dir, issuer: rcgen::Issuer::new(params, key) }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate with common name `cn`, valid for localhost and 127.0.0.1, usable by
    /// servers and clients (SeaweedFS shares one certificate between both roles).
    fn issue(&self, cn: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.path().join(format!("{cn}.crt")),
            key: self.dir.path().join(format!("{cn}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// === SeaweedFS with TLS ===

/// SeaweedFS's security.toml (sections as `weed scaffold -config=security` prints them):
/// every gRPC server with `server`'s certificate, the CA, and the filer and broker accepting
/// only the client names `allowed`. JWT signing keys for volume writes and filer HTTP.
fn security_toml(pki: &Pki, server: &Pair, allowed: &str) -> String {
    let ca = pki.ca();
    let (ca, cert, key) = (path(&ca), path(&server.cert), path(&server.key));
    let mut toml = format!(
        "[jwt.signing]\nkey = \"{VOLUME_JWT_KEY}\"\n\n\
         [jwt.filer_signing]\nkey = \"{FILER_JWT_KEY}\"\n\n\
         [grpc]\nca = \"{ca}\"\n"
    );
    for component in ["master", "volume", "filer", "msg_broker", "client"] {
        toml.push_str(&format!("\n[grpc.{component}]\ncert = \"{cert}\"\nkey = \"{key}\"\n"));
        if matches!(component, "filer" | "msg_broker") {
            toml.push_str(&format!("allowed_commonNames = \"{allowed}\"\n"));
        }
    }
    toml
}

/// A throw-away SeaweedFS with gRPC TLS on every server; its own processes use the
/// certificate named `seaweedfs`, and kelp's (CN `kelp`) is allowed at the filer and broker.
async fn secured_seaweedfs(pki: &Pki) -> SeaweedFs {
    common::init_tracing();
    let server = pki.issue("seaweedfs");
    let security = Security {
        toml: security_toml(pki, &server, "seaweedfs,kelp"),
        client: Some(SeaweedTls {
            ca: pki.ca(),
            identity: Some((server.cert.clone(), server.key.clone())),
            server_name: None,
        }),
    };
    match SeaweedFs::start_secured(common::seaweedfs::START_DEADLINE, security).await {
        Ok(fs) => fs,
        Err(e) => panic!("the test SeaweedFS with gRPC TLS did not start:\n{e:#}"),
    }
}

/// kelp's flags for mTLS to SeaweedFS with `client`.
fn to_seaweedfs(pki: &Pki, client: &Pair) -> Vec<String> {
    vec![
        "--seaweedfs-tls-ca".into(),
        path(&pki.ca()).into(),
        "--seaweedfs-tls-cert".into(),
        path(&client.cert).into(),
        "--seaweedfs-tls-key".into(),
        path(&client.key).into(),
    ]
}

// === librdkafka over TLS ===

/// librdkafka settings for kelp's TLS listener: trusting the test CA, with a client
/// certificate when `identity` is given.
fn rd_ssl(bootstrap: &str, pki: &Pki, identity: Option<&Pair>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", path(&pki.ca()));
    if let Some(p) = identity {
        c.set("ssl.certificate.location", path(&p.cert)).set("ssl.key.location", path(&p.key));
    }
    c
}

async fn create_topic(config: &ClientConfig, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics call");
    for r in res {
        r.expect("topic created");
    }
}

/// Consume partitions `0..PARTITIONS` of `topic` from the beginning until `expected` records
/// arrived: partition → (offset, key, value) in order.
fn consume(
    config: &ClientConfig,
    topic: &str,
    expected: usize,
) -> HashMap<i32, Vec<(i64, String, String)>> {
    let config = config.clone().set("fetch.wait.max.ms", "100").clone();
    let consumer = common::clients::from_beginning(&config, topic, PARTITIONS);
    let text = |b: Option<&[u8]>| String::from_utf8(b.expect("present").to_vec()).expect("utf-8");
    let mut got: HashMap<i32, Vec<(i64, String, String)>> = HashMap::new();
    let deadline = std::time::Instant::now() + common::patience() * 2;
    let mut n = 0;
    while n < expected {
        assert!(std::time::Instant::now() < deadline, "only {n} of {expected} records consumed");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m.expect("consume without error");
        got.entry(m.partition()).or_default().push((m.offset(), text(m.key()), text(m.payload())));
        n += 1;
    }
    got
}

/// Whether a client with `config` gets metadata from kelp within a few seconds.
fn gets_metadata(config: &ClientConfig) -> Result<(), String> {
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.fetch_metadata(None, Duration::from_secs(5)).map(|_| ()).map_err(|e| e.to_string())
}

/// What a SeaweedFS gRPC port answers a TLS client with `identity` (or none), at the TLS
/// level: `Ok` once the server sent its first HTTP/2 frame, otherwise the TLS error (with
/// TLS 1.3 a refused client certificate shows on the first read, as an alert).
async fn grpc_tls_answer(port: u16, pki: &Pki, identity: Option<&Pair>) -> Result<(), String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig as TlsConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.ca()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = TlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(p) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(&p.cert).unwrap()],
                PrivateKeyDer::from_pem_file(&p.key).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    // The HTTP/2 client preface and an empty SETTINGS frame; the server answers with its own.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// The gRPC port of a SeaweedFS address (`host:http.grpc`, or `host:grpc` for a broker).
fn grpc_port(addr: &str) -> u16 {
    let ports = addr.rsplit_once(':').unwrap().1;
    ports.rsplit('.').next().unwrap().parse().unwrap()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_over_mtls_to_kelp_over_mtls_to_seaweedfs_keeps_records_and_offsets() {
    let pki = Pki::new();
    let seaweedfs = secured_seaweedfs(&pki).await;
    let (to_sw, listener, app) = (pki.issue("kelp"), pki.issue("kelp-listener"), pki.issue("app"));
    let mut flags = to_seaweedfs(&pki, &to_sw);
    flags.extend(
        [
            "--tls-cert",
            path(&listener.cert),
            "--tls-key",
            path(&listener.key),
            "--tls-client-ca",
            path(&pki.ca()),
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let kelp = Kelp::start(&seaweedfs, &flags).await;
    let rd = rd_ssl(&kelp.bootstrap(), &pki, Some(&app));
    let topic = common::unique_name("tls");
    create_topic(&rd, &topic, PARTITIONS).await;

    let producer: FutureProducer = rd
        .clone()
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let sends: Vec<_> = (0..RECORDS)
        .map(|i| {
            let (key, value) = (format!("key-{i}"), format!("value-{i}"));
            let partition = (i % PARTITIONS as usize) as i32;
            let record = FutureRecord::to(&topic).partition(partition).key(&key).payload(&value);
            producer.send_result(record).map_err(|(e, _)| e).expect("queued")
        })
        .collect();
    let mut acked: HashMap<i32, Vec<i64>> = HashMap::new();
    for s in sends {
        let d = s.await.expect("delivery report").map_err(|(e, _)| e).expect("delivered");
        acked.entry(d.partition).or_default().push(d.offset);
    }
    for (p, offsets) in &acked {
        assert_eq!(offsets, &(0..offsets.len() as i64).collect::<Vec<_>>(), "acked offsets of {p}");
    }

    drop(producer);
    let got = consume(&rd, &topic, RECORDS);
    for p in 0..PARTITIONS {
        let want: Vec<(i64, String, String)> = (0..RECORDS)
            .filter(|i| (i % PARTITIONS as usize) as i32 == p)
            .enumerate()
            .map(|(offset, i)| (offset as i64, format!("key-{i}"), format!("value-{i}")))
            .collect();
        assert_eq!(got[&p], want, "partition {p}: records in order at offsets from 0");
    }

    // The listener speaks TLS only, and with a client CA only to clients with a certificate.
    let anonymous = gets_metadata(&rd_ssl(&kelp.bootstrap(), &pki, None));
    eprintln!("SSL without a client certificate: {anonymous:?}");
    assert!(anonymous.is_err(), "mTLS lets a client without a certificate in");
    let stranger = Pki::new();
    let foreign = gets_metadata(&rd_ssl(&kelp.bootstrap(), &pki, Some(&stranger.issue("app"))));
    assert!(foreign.is_err(), "mTLS lets a certificate from another CA in");
    let plaintext = gets_metadata(ClientConfig::new().set("bootstrap.servers", kelp.bootstrap()));
    assert!(plaintext.is_err(), "the TLS listener answers plaintext");
    let scraped = kelp::metrics::global().render();
    assert!(scraped.contains("kelp_tls_handshakes_total{outcome=\"ok\"}"), "{scraped}");
    assert!(scraped.contains("kelp_tls_handshakes_total{outcome=\"failed\"}"), "{scraped}");
    assert!(kelp.stop().await);
}

/// A value of 300 KB: many TLS records each way, more than one socket buffer on some systems.
fn large_value(i: i32) -> String {
    format!("value-{i}-{}", "x".repeat(300 * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_logs_in_over_the_tls_listener() {
    let pki = Pki::new();
    let seaweedfs = secured_seaweedfs(&pki).await;
    let (to_sw, listener) = (pki.issue("kelp"), pki.issue("kelp-listener"));
    let users = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        users.path(),
        "users:\n  alice:\n    password: alice-secret\n    super-user: true\n",
    )
    .unwrap();
    let mut flags = to_seaweedfs(&pki, &to_sw);
    flags.extend(
        [
            "--tls-cert",
            path(&listener.cert),
            "--tls-key",
            path(&listener.key),
            "--sasl-users-file",
            path(users.path()),
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let kelp = Kelp::start(&seaweedfs, &flags).await;
    let topic = common::unique_name("sasl-ssl");
    let sasl_ssl = |password: &str| {
        let mut c = rd_ssl(&kelp.bootstrap(), &pki, None);
        c.set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "SCRAM-SHA-256")
            .set("sasl.username", "alice")
            .set("sasl.password", password);
        c
    };
    create_topic(&sasl_ssl("alice-secret"), &topic, PARTITIONS).await;
    let producer: FutureProducer = sasl_ssl("alice-secret").create().expect("producer");
    for i in 0..PARTITIONS {
        let value = large_value(i);
        let record = FutureRecord::to(&topic).partition(i).key("k").payload(&value);
        let d = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e);
        assert_eq!(d.expect("delivered").offset, 0, "first record of partition {i}");
    }
    drop(producer);
    let got = consume(&sasl_ssl("alice-secret"), &topic, PARTITIONS as usize);
    for i in 0..PARTITIONS {
        assert_eq!(got[&i], vec![(0, "k".to_string(), large_value(i))]);
    }
    assert!(gets_metadata(&sasl_ssl("wrong")).is_err(), "a wrong password over TLS");
    let mut no_sasl = rd_ssl(&kelp.bootstrap(), &pki, None);
    no_sasl.set("security.protocol", "SSL");
    assert!(gets_metadata(&no_sasl).is_err(), "TLS alone does not replace the SASL login");
    assert!(kelp.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_requires_a_listed_client_certificate_and_no_jwt_for_grpc() {
    let pki = Pki::new();
    let seaweedfs = secured_seaweedfs(&pki).await;
    let a = seaweedfs.addrs();
    // Refusals show within seconds; only the first success waits for the broker to have
    // elected its balancer.
    let refused_within = Duration::from_secs(3);
    let answers = |extra: Vec<String>, deadline: Duration| {
        let mut args = vec![
            "--master".to_string(),
            a.master.clone(),
            "--filer".to_string(),
            a.filer.clone(),
            "--upstream-timeout-ms".to_string(),
            "2000".to_string(),
        ];
        args.extend(extra);
        let config = Config::from_args(args).expect("config");
        async move { kelp::wait_for_seaweedfs(&config, deadline).await }
    };

    // mTLS with a certificate whose CN the filer and broker list: kelp's filer calls
    // (LookupDirectoryEntry, CreateEntry, ...) and broker calls carry no JWT, and work.
    let kelp_cert = pki.issue("kelp");
    answers(to_seaweedfs(&pki, &kelp_cert), common::patience())
        .await
        .expect("kelp with its certificate gets in");

    // Plaintext gRPC to TLS servers.
    let plain = answers(vec![], refused_within).await.expect_err("plaintext gets in");
    eprintln!("plaintext: {plain:#}");
    // TLS without a client certificate: SeaweedFS requires one (RequireClientCert).
    let ca_only = vec!["--seaweedfs-tls-ca".to_string(), path(&pki.ca()).to_string()];
    let anonymous =
        answers(ca_only, refused_within).await.expect_err("a client without a certificate gets in");
    eprintln!("without a client certificate: {anonymous:#}");
    // A certificate from the right CA whose CN is not in allowed_commonNames.
    let stranger = pki.issue("stranger");
    let unlisted = answers(to_seaweedfs(&pki, &stranger), refused_within)
        .await
        .expect_err("an unlisted CN gets in");
    eprintln!("unlisted common name: {unlisted:#}");
    // A server name kelp is told to expect but the certificates do not carry.
    let mut named = to_seaweedfs(&pki, &kelp_cert);
    named.extend(["--seaweedfs-tls-server-name".to_string(), "seaweedfs.example".to_string()]);
    let misnamed =
        answers(named, refused_within).await.expect_err("a server certificate without the name");
    eprintln!("unexpected server name: {misnamed:#}");
    let mut named = to_seaweedfs(&pki, &kelp_cert);
    named.extend(["--seaweedfs-tls-server-name".to_string(), "localhost".to_string()]);
    answers(named, refused_within).await.expect("the name the certificates carry is accepted");

    // Why, at the TLS level: every server asks for a client certificate and refuses to go on
    // without one; the filer and the broker also refuse a certificate whose CN they do not
    // list, and accept kelp's.
    let (master, filer, broker) = (grpc_port(&a.master), grpc_port(&a.filer), grpc_port(&a.broker));
    for (server, port) in [("master", master), ("filer", filer), ("broker", broker)] {
        let refused = grpc_tls_answer(port, &pki, None).await.expect_err(server);
        eprintln!("{server} without a client certificate: {refused}");
        assert!(refused.contains("CertificateRequired"), "{server}: {refused}");
        grpc_tls_answer(port, &pki, Some(&kelp_cert)).await.expect(server);
    }
    for (server, port) in [("filer", filer), ("broker", broker)] {
        let refused = grpc_tls_answer(port, &pki, Some(&stranger)).await.expect_err(server);
        eprintln!("{server} with an unlisted CN: {refused}");
        assert!(refused.contains("BadCertificate"), "{server}: {refused}");
    }
    grpc_tls_answer(master, &pki, Some(&stranger)).await.expect("the master lists no names");

    // The filer's JWT key is active: an HTTP write without a token is refused. (kelp speaks
    // only gRPC to the filer, which checks no JWT for the calls kelp makes.)
    let filer_http = a.filer.rsplit_once(':').unwrap().1.split('.').next().unwrap();
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{filer_http}")).await.unwrap();
    s.write_all(
        b"PUT /kelp-jwt-probe/x.txt HTTP/1.1\r\nHost: filer\r\nContent-Type: text/plain\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await
    .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply))
        .await
        .expect("the filer answers")
        .unwrap();
    let status = reply.split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(status, "401", "filer HTTP write without a JWT: {reply}");
}
