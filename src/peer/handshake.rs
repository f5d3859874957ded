//! The peer link's handshake: before a single group request crosses a peer connection, both
//! kelps prove that they know the shared secret (`KELP_PEER_SECRET_FILE`), each over a fresh
//! nonce the other one chose. A connection that cannot prove it is closed.
//!
//! ```text
//!  peer listener (server)                                 forwarding kelp (client)
//!    hello   "KELPPEER" | 1 | Ns                                         41 bytes  ──▶
//!    ◀──  answer  "KELPPEER" | 1 | Nc | HMAC(K, "kelp-peer-v1 client" | Ns | Nc)   73 bytes
//!    proof   HMAC(K, "kelp-peer-v1 server" | Ns | Nc)                    32 bytes  ──▶
//!    ◀──────────────  Kafka frames: forwarded group requests and their answers  ─────────────▶
//! ```
//!
//! `K` is the secret, `Ns` and `Nc` are 32 bytes from the operating system's random generator,
//! new for every connection, `HMAC` is HMAC-SHA256 and `|` is concatenation (every part has a
//! fixed length, so no two inputs read alike). `1` is one byte, the handshake's version.
//!
//! Why this is enough for what it guards against (anyone who can reach the peer port):
//! - **Mutual.** The client proves `K` before the server reads any frame; the server proves `K`
//!   back before the client sends any frame. A kelp never forwards a group request (with the
//!   member ids and offsets in it) to an impostor, and never serves one from an impostor.
//! - **Replay-proof.** Each proof covers the nonce the *other* side just chose, so an answer or
//!   a proof recorded on one connection is worthless on any other.
//! - **No reflection.** The two proofs carry different labels, so a server's proof never passes
//!   for a client's answer or the other way round.
//! - **No oracle.** The hello holds nothing computed from `K`, and the server proves `K` only to
//!   a client that proved it first: an unauthenticated connection learns nothing about `K`.
//! - **Bounded.** Every message has a fixed size and is read with its exact length (never a
//!   length taken from the wire), and the whole exchange must end within
//!   [`HANDSHAKE_TIMEOUT`] on either side. Proofs are compared in constant time.
//!
//! What it is not: the frames that follow are neither encrypted nor integrity protected. Whoever
//! can sit on the path between two kelps (and take over an authenticated TCP connection) is not
//! kept out by it; docs/consumer-groups.md ("Peer link security") says what covers that.
//!
//! Without a secret (`KELP_PEER_ALLOW_UNAUTHENTICATED=true`) there is no handshake at all and
//! the first bytes on a peer connection are a Kafka frame. A kelp with a secret and one without
//! cannot talk: either both wait (one for a hello, the other for a frame) until the handshake's
//! time is up, or one reads the other's first bytes as an impossible frame length and closes.
//!
//! Owns: the handshake's wire format, both of its sides, the secret and its file, and counting
//! outcomes (`kelp_peer_handshakes_total`). Does not own when peer connections are made
//! (`peer::client`) or served (`connection::peer`). When changing the format: bump [`VERSION`]
//! and the labels, and update the pinned bytes in the tests below and the docs.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{ConfigError, ENV_PEER_SECRET_FILE};

/// First bytes of the hello and of the answer: a kelp peer handshake, told apart from a Kafka
/// frame (whose 4-byte length this would read as more than 1 GiB) or a stray connection.
pub const MAGIC: [u8; 8] = *b"KELPPEER";
/// The handshake's version. A kelp refuses any other.
pub const VERSION: u8 = 1;
/// Size of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Size of an HMAC-SHA256.
pub const MAC_LEN: usize = 32;
/// Server → client: magic, version, server nonce.
pub const HELLO_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;
/// Client → server: magic, version, client nonce, client proof.
pub const ANSWER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN + MAC_LEN;
/// Server → client: server proof.
pub const PROOF_LEN: usize = MAC_LEN;
/// What each side's HMAC input starts with; the same length, so neither is a prefix of the other.
const CLIENT_LABEL: &[u8; 19] = b"kelp-peer-v1 client";
const SERVER_LABEL: &[u8; 19] = b"kelp-peer-v1 server";

/// Longest the whole handshake may take, on either side: three small messages between kelps
/// on one network need milliseconds, so this is room for a busy node, not for a slow link. A
/// connection that has not proved itself by then is closed, so one that never speaks holds a
/// place of the peer listener's connection cap for no longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest secret accepted (after trimming): 128 bits if the bytes are random. The chart
/// generates 48 random letters and digits (about 285 bits).
pub const MIN_SECRET_BYTES: usize = 16;
/// Largest secret file read; a larger one is refused rather than truncated.
pub const MAX_SECRET_BYTES: usize = 4096;

/// The peer link's shared secret: the HMAC key of the handshake. Cheap to clone; never printed.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// `bytes` without surrounding ASCII whitespace (a Secret created from a file often ends in
    /// a newline), which must leave [`MIN_SECRET_BYTES`] to [`MAX_SECRET_BYTES`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Secret, String> {
        let key = bytes.trim_ascii();
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret has {} bytes (without surrounding whitespace), fewer than {MIN_SECRET_BYTES}",
                key.len()
            ));
        }
        if key.len() > MAX_SECRET_BYTES {
            return Err(format!("the secret is longer than {MAX_SECRET_BYTES} bytes"));
        }
        Ok(Secret(key.into()))
    }

    /// The secret in the file at `path` (read once; at most [`MAX_SECRET_BYTES`] are read).
    /// Errors name `KELP_PEER_SECRET_FILE`, so kelp exits 64 on them.
    pub fn from_file(path: &Path) -> Result<Secret, ConfigError> {
        let bad = |reason: String| ConfigError {
            setting: ENV_PEER_SECRET_FILE,
            reason: format!("{}: {reason}", path.display()),
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, MAX_SECRET_BYTES as u64 + 1),
                    &mut bytes,
                )
            })
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(bad(format!("larger than {MAX_SECRET_BYTES} bytes")));
        }
        Secret::new(&bytes).map_err(bad)
    }

    /// `HMAC(K, label | server_nonce | client_nonce)`.
    fn mac(
        &self,
        label: &[u8; 19],
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
    ) -> [u8; MAC_LEN] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        m.update(label);
        m.update(server_nonce);
        m.update(client_nonce);
        m.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a handshake failed. Either way the connection is closed; nothing else is sent.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("not a kelp peer handshake")]
    Malformed,
    #[error("peer handshake version {0}; this kelp speaks {VERSION}")]
    Version(u8),
    #[error("the other side's proof does not match the peer secret")]
    Rejected,
    #[error(
        "the peer listener closed the connection instead of proving itself (is its peer secret the same?)"
    )]
    Refused,
}

impl HandshakeError {
    /// The `outcome` label of `kelp_peer_handshakes_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) => "closed",
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::Malformed | HandshakeError::Version(_) => "malformed",
            HandshakeError::Rejected | HandshakeError::Refused => "rejected",
        }
    }
}

// === the two sides ===

/// The peer listener's side, run on every accepted connection before its first frame.
pub async fn accept<S>(stream: &mut S, secret: &Secret) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let r = within(HANDSHAKE_TIMEOUT, accept_steps(stream, secret, new_nonce())).await;
    observe("server", &r);
    r
}

/// The forwarding kelp's side, run on every new connection to a peer listener.
pub async fn connect<S>(stream: &mut S, secret: &Secret) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let r = within(HANDSHAKE_TIMEOUT, connect_steps(stream, secret, new_nonce())).await;
    observe("client", &r);
    r
}

async fn accept_steps<S>(
    stream: &mut S,
    secret: &Secret,
    server_nonce: [u8; NONCE_LEN],
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&hello(&server_nonce)).await?;
    let mut answer = [0u8; ANSWER_LEN];
    stream.read_exact(&mut answer).await?;
    let (client_nonce, client_mac) = parse_answer(&answer)?;
    let expected = secret.mac(CLIENT_LABEL, &server_nonce, &client_nonce);
    if !bool::from(expected.ct_eq(&client_mac)) {
        return Err(HandshakeError::Rejected);
    }
    stream.write_all(&secret.mac(SERVER_LABEL, &server_nonce, &client_nonce)).await?;
    Ok(())
}

async fn connect_steps<S>(
    stream: &mut S,
    secret: &Secret,
    client_nonce: [u8; NONCE_LEN],
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    let server_nonce = parse_hello(&hello)?;
    stream.write_all(&answer(secret, &server_nonce, &client_nonce)).await?;
    let mut proof = [0u8; PROOF_LEN];
    stream.read_exact(&mut proof).await.map_err(|e| match e.kind() {
        // A listener that does not accept the answer closes without a word.
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            HandshakeError::Refused
        }
        _ => HandshakeError::Io(e),
    })?;
    let expected = secret.mac(SERVER_LABEL, &server_nonce, &client_nonce);
    if !bool::from(expected.ct_eq(&proof)) {
        return Err(HandshakeError::Rejected);
    }
    Ok(())
}

async fn within(
    limit: Duration,
    steps: impl Future<Output = Result<(), HandshakeError>>,
) -> Result<(), HandshakeError> {
    tokio::time::timeout(limit, steps).await.unwrap_or(Err(HandshakeError::Timeout(limit)))
}

fn observe(role: &'static str, r: &Result<(), HandshakeError>) {
    let outcome = r.as_ref().err().map_or("ok", HandshakeError::outcome);
    crate::metrics::global().observe_peer_handshake(role, outcome);
}

// === the messages (pure) ===

/// A fresh nonce: two v4 UUIDs, whose randomness comes from the operating system's generator
/// (244 random bits; the other 12 are the UUIDs' fixed version and variant bits).
pub fn new_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

/// The server's first message.
pub fn hello(server_nonce: &[u8; NONCE_LEN]) -> [u8; HELLO_LEN] {
    let mut m = [0u8; HELLO_LEN];
    m[..MAGIC.len()].copy_from_slice(&MAGIC);
    m[MAGIC.len()] = VERSION;
    m[MAGIC.len() + 1..].copy_from_slice(server_nonce);
    m
}

/// The server nonce of a hello.
pub fn parse_hello(m: &[u8; HELLO_LEN]) -> Result<[u8; NONCE_LEN], HandshakeError> {
    check_preamble(&m[..MAGIC.len() + 1])?;
    Ok(m[MAGIC.len() + 1..].try_into().expect("the rest of a hello is the nonce"))
}

/// The client's answer to a hello carrying `server_nonce`.
pub fn answer(
    secret: &Secret,
    server_nonce: &[u8; NONCE_LEN],
    client_nonce: &[u8; NONCE_LEN],
) -> [u8; ANSWER_LEN] {
    let mut m = [0u8; ANSWER_LEN];
    m[..MAGIC.len()].copy_from_slice(&MAGIC);
    m[MAGIC.len()] = VERSION;
    let nonce_at = MAGIC.len() + 1;
    m[nonce_at..nonce_at + NONCE_LEN].copy_from_slice(client_nonce);
    m[nonce_at + NONCE_LEN..].copy_from_slice(&secret.mac(
        CLIENT_LABEL,
        server_nonce,
        client_nonce,
    ));
    m
}

/// The client nonce and proof of an answer.
fn parse_answer(m: &[u8; ANSWER_LEN]) -> Result<([u8; NONCE_LEN], [u8; MAC_LEN]), HandshakeError> {
    check_preamble(&m[..MAGIC.len() + 1])?;
    let nonce_at = MAGIC.len() + 1;
    let nonce = m[nonce_at..nonce_at + NONCE_LEN].try_into().expect("fixed layout");
    let mac = m[nonce_at + NONCE_LEN..].try_into().expect("fixed layout");
    Ok((nonce, mac))
}

fn check_preamble(p: &[u8]) -> Result<(), HandshakeError> {
    if p[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::Malformed);
    }
    match p[MAGIC.len()] {
        VERSION => Ok(()),
        other => Err(HandshakeError::Version(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes()).unwrap()
    }

    /// A server that closes its end once `accept` is done, as the listener does.
    fn serve(
        mut end: DuplexStream,
        s: Secret,
    ) -> tokio::task::JoinHandle<Result<(), HandshakeError>> {
        tokio::spawn(async move {
            let r = accept(&mut end, &s).await;
            if r.is_ok() {
                // Past the handshake: echo one byte, to show frames may follow.
                let mut b = [0u8; 1];
                end.read_exact(&mut b).await?;
                end.write_all(&b).await?;
            }
            r
        })
    }

    #[tokio::test]
    async fn kelps_with_the_same_secret_prove_it_to_each_other_and_then_talk() {
        let (mut client, server) = tokio::io::duplex(1024);
        let served = serve(server, secret("correct horse battery staple"));
        connect(&mut client, &secret("correct horse battery staple\n")).await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut echo = [0u8; 1];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"x");
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_different_secret_is_rejected_and_the_client_learns_nothing() {
        let (mut client, server) = tokio::io::duplex(1024);
        let served = serve(server, secret("the listener's secret"));
        let err = connect(&mut client, &secret("somebody else's secret")).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Refused), "{err}");
        assert_eq!(err.outcome(), "rejected");
        assert!(matches!(served.await.unwrap(), Err(HandshakeError::Rejected)));
    }

    #[tokio::test]
    async fn an_answer_recorded_on_one_connection_is_refused_on_the_next() {
        let s = secret("shared between the kelps");
        // Connection 1: a genuine client's answer, recorded.
        let (mut c1, mut s1) = tokio::io::duplex(1024);
        let server = tokio::spawn({
            let s = s.clone();
            async move { accept_steps(&mut s1, &s, [1; NONCE_LEN]).await }
        });
        let mut h = [0u8; HELLO_LEN];
        c1.read_exact(&mut h).await.unwrap();
        let recorded = answer(&s, &parse_hello(&h).unwrap(), &[7; NONCE_LEN]);
        c1.write_all(&recorded).await.unwrap();
        server.await.unwrap().expect("the genuine answer passes");

        // Connection 2: the server picks a new nonce, and the recording no longer fits it.
        let (mut c2, mut s2) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { accept_steps(&mut s2, &s, [2; NONCE_LEN]).await });
        c2.read_exact(&mut h).await.unwrap();
        c2.write_all(&recorded).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(HandshakeError::Rejected)));
    }

    #[tokio::test]
    async fn a_server_replaying_an_old_proof_or_reflecting_the_answer_is_rejected() {
        let s = secret("shared between the kelps");
        let server_nonce = [3; NONCE_LEN];
        // What a genuine server proved to an earlier client (whose nonce was 4s).
        let old_proof = s.mac(SERVER_LABEL, &server_nonce, &[4; NONCE_LEN]);
        let (mut client, mut fake) = tokio::io::duplex(1024);
        let faked = tokio::spawn(async move {
            fake.write_all(&hello(&server_nonce)).await.unwrap();
            let mut a = [0u8; ANSWER_LEN];
            fake.read_exact(&mut a).await.unwrap();
            fake.write_all(&old_proof).await.unwrap();
            fake
        });
        let err = connect_steps(&mut client, &s, [5; NONCE_LEN]).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Rejected), "{err}");
        drop(faked.await.unwrap());

        // Sending the client's own proof back: the labels differ.
        let (mut client, mut fake) = tokio::io::duplex(1024);
        let faked = tokio::spawn(async move {
            fake.write_all(&hello(&server_nonce)).await.unwrap();
            let mut a = [0u8; ANSWER_LEN];
            fake.read_exact(&mut a).await.unwrap();
            fake.write_all(&a[ANSWER_LEN - MAC_LEN..]).await.unwrap();
            fake
        });
        let err = connect_steps(&mut client, &s, [6; NONCE_LEN]).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Rejected), "{err}");
        drop(faked.await.unwrap());
    }

    #[tokio::test]
    async fn a_kafka_frame_or_another_version_instead_of_an_answer_is_malformed() {
        let s = secret("shared between the kelps");
        // A Heartbeat-sized Kafka frame (length prefix, api key 12, ...), padded to the
        // answer's length as a client that skips the handshake would eventually send.
        let mut kafka = [0u8; ANSWER_LEN];
        kafka[..6].copy_from_slice(&[0, 0, 0, 69, 0, 12]);
        let mut other_version = answer(&s, &[0; NONCE_LEN], &[0; NONCE_LEN]);
        other_version[MAGIC.len()] = 2;
        for (bytes, outcome) in [(kafka, "malformed"), (other_version, "malformed")] {
            let (mut c, mut srv) = tokio::io::duplex(1024);
            let server = tokio::spawn({
                let s = s.clone();
                async move { accept_steps(&mut srv, &s, [0; NONCE_LEN]).await }
            });
            c.write_all(&bytes).await.unwrap();
            let err = server.await.unwrap().unwrap_err();
            assert_eq!(err.outcome(), outcome, "{err}");
        }
        // The client side refuses a listener that is not a kelp with a secret.
        let (mut c, mut srv) = tokio::io::duplex(1024);
        srv.write_all(&[0u8; HELLO_LEN]).await.unwrap();
        assert!(matches!(
            connect_steps(&mut c, &s, [0; NONCE_LEN]).await,
            Err(HandshakeError::Malformed)
        ));
    }

    #[tokio::test]
    async fn a_silent_or_half_finished_handshake_times_out() {
        let s = secret("shared between the kelps");
        let (_c, mut srv) = tokio::io::duplex(1024);
        let limit = Duration::from_millis(50);
        let r = within(limit, accept_steps(&mut srv, &s, [0; NONCE_LEN])).await;
        assert!(matches!(r, Err(HandshakeError::Timeout(d)) if d == limit), "{r:?}");
        // A client whose listener says nothing (say, a kelp without a secret, which waits for
        // a Kafka frame).
        let (mut c, _srv) = tokio::io::duplex(1024);
        let r = within(limit, connect_steps(&mut c, &s, [0; NONCE_LEN])).await;
        assert!(matches!(r, Err(HandshakeError::Timeout(_))), "{r:?}");
        // A client that sends part of an answer and stops.
        let (mut c, mut srv) = tokio::io::duplex(1024);
        c.write_all(&MAGIC).await.unwrap();
        let r = within(limit, accept_steps(&mut srv, &s, [0; NONCE_LEN])).await;
        assert!(matches!(r, Err(HandshakeError::Timeout(_))), "{r:?}");
    }

    /// The bytes on the wire, pinned: a change here breaks kelps of different versions apart
    /// and must come with a new VERSION. Computed independently with Python's `hmac` module.
    #[test]
    fn the_wire_format_is_pinned() {
        let s = secret("0123456789abcdef");
        let (ns, nc) = ([0x11; NONCE_LEN], [0x22; NONCE_LEN]);
        let h = hello(&ns);
        assert_eq!(&h[..9], b"KELPPEER\x01");
        assert_eq!(parse_hello(&h).unwrap(), ns);
        let a = answer(&s, &ns, &nc);
        assert_eq!(&a[..9], b"KELPPEER\x01");
        assert_eq!(&a[9..41], &nc);
        assert_eq!(hex(&a[41..]), CLIENT_PROOF_HEX);
        assert_eq!(hex(&s.mac(SERVER_LABEL, &ns, &nc)), SERVER_PROOF_HEX);
        assert_eq!(parse_answer(&a).unwrap(), (nc, a[41..].try_into().unwrap()));
    }

    const CLIENT_PROOF_HEX: &str =
        "e62ae8b8b3b7715b9b3a3b65966839a14a2257391f8f9e689aec0892cf154c3f";
    const SERVER_PROOF_HEX: &str =
        "cfa8095f6d26f9e5e453aee633f0ece5e414e53868c36128270811ee534c17ca";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn a_secret_is_trimmed_bounded_and_never_printed() {
        assert!(Secret::new(b"  short \n").unwrap_err().contains("fewer than 16"));
        assert!(Secret::new(&[b'x'; MAX_SECRET_BYTES + 1]).is_err());
        let s = Secret::new(b"\n  sixteen bytes!!!\r\n").unwrap();
        assert_eq!(&*s.0, b"sixteen bytes!!!");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        let dir = tempfile::tempdir().unwrap();
        let missing = Secret::from_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.setting, ENV_PEER_SECRET_FILE);
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let err = Secret::from_file(&short).unwrap_err().to_string();
        assert!(err.starts_with(ENV_PEER_SECRET_FILE) && err.contains("fewer than"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'k'; MAX_SECRET_BYTES + 10]).unwrap();
        assert!(Secret::from_file(&big).unwrap_err().to_string().contains("larger than"));
        let good = dir.path().join("good");
        std::fs::write(&good, "a-secret-of-some-length\n").unwrap();
        assert_eq!(&*Secret::from_file(&good).unwrap().0, b"a-secret-of-some-length");
    }
}
