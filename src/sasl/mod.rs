//! SASL on the Kafka listener: the users file, the mechanisms (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512) and one connection's exchange.
//!
//! SASL is on when `KELP_SASL_USERS_FILE` is set; a connection then may send only
//! ApiVersions, SaslHandshake and SaslAuthenticate until it has authenticated (the gate is in
//! `session.rs`, the Kafka handlers in `api/sasl_*.rs`). The authenticated user name is the
//! `user` of client quotas.
//!
//! The users file (YAML) maps a user to a password or to stored SCRAM credentials:
//!
//! ```yaml
//! users:
//!   alice:
//!     password: alice-secret          # PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
//!   bob:                              # no password on disk; PLAIN still works for bob
//!     scram-sha-256: {salt: <base64>, iterations: 8192, stored-key: <base64>, server-key: <base64>}
//!   admin:
//!     password: admin-secret
//!     super-user: true                # may use the cluster-wide APIs (`authz`); default false
//! ```
//!
//! Passwords are turned into SCRAM credentials (random salt, 4096 iterations) when the file is
//! read and then dropped; PLAIN logins are checked against those credentials, so kelp holds
//! no plaintext password in memory.
//!
//! `super-user` is the only right the file grants: what it allows is decided in `authz`. A
//! file without it (as written before it existed) still parses, and then nobody is a
//! super-user.

pub mod scram;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::shutdown::{CancellationToken, TaskTracker};
use scram::{Credential, Hash};

/// How often the users file is checked for changes.
pub const USERS_FILE_POLL: Duration = Duration::from_secs(2);

/// The mechanisms kelp offers, in the order SaslHandshake lists them.
pub const MECHANISMS: [Mechanism; 3] =
    [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// The IANA name, as in SaslHandshake and librdkafka's `sasl.mechanism` (also a metrics
    /// label value).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        MECHANISMS.into_iter().find(|m| m.name() == name)
    }

    fn hash(self) -> Option<Hash> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some(Hash::Sha256),
            Mechanism::ScramSha512 => Some(Hash::Sha512),
        }
    }
}

// === users file ===

/// Iterations used when kelp derives SCRAM credentials from a password in the file.
pub const DERIVED_ITERATIONS: u32 = scram::MIN_ITERATIONS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersDoc {
    #[serde(default)]
    users: HashMap<String, UserDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserDoc {
    password: Option<String>,
    #[serde(rename = "scram-sha-256")]
    scram_sha_256: Option<CredentialDoc>,
    #[serde(rename = "scram-sha-512")]
    scram_sha_512: Option<CredentialDoc>,
    #[serde(rename = "super-user", default)]
    super_user: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CredentialDoc {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

/// One user's credentials, by hash, and whether the user is a super-user.
#[derive(Debug, Clone)]
struct User {
    sha256: Option<Credential>,
    sha512: Option<Credential>,
    super_user: bool,
}

impl User {
    fn credential(&self, hash: Hash) -> Option<&Credential> {
        match hash {
            Hash::Sha256 => self.sha256.as_ref(),
            Hash::Sha512 => self.sha512.as_ref(),
        }
    }
}

/// The users allowed to log in, as read from the users file.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, User>,
}

impl Users {
    /// Parse the users file. Every problem is an error naming the user, so a bad file is
    /// refused whole rather than half applied.
    pub fn parse(text: &str) -> Result<Users, String> {
        let doc: UsersDoc = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = HashMap::with_capacity(doc.users.len());
        for (name, u) in doc.users {
            if name.is_empty() {
                return Err("a user has an empty name".into());
            }
            let stored =
                |hash: Hash, c: Option<CredentialDoc>| -> Result<Option<Credential>, String> {
                    let Some(c) = c else { return Ok(None) };
                    let decode = |field: &str, v: &str| {
                        B64.decode(v).map_err(|e| format!("user {name:?}: {field}: {e}"))
                    };
                    let c = Credential {
                        salt: decode("salt", &c.salt)?,
                        iterations: c.iterations,
                        stored_key: decode("stored-key", &c.stored_key)?,
                        server_key: decode("server-key", &c.server_key)?,
                    };
                    let len = hash.digest(b"").len();
                    if c.stored_key.len() != len || c.server_key.len() != len {
                        return Err(format!("user {name:?}: keys of {hash:?} must be {len} bytes"));
                    }
                    if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&c.iterations) {
                        return Err(format!(
                            "user {name:?}: iterations must be {}..={}",
                            scram::MIN_ITERATIONS,
                            scram::MAX_ITERATIONS
                        ));
                    }
                    if c.salt.is_empty() {
                        return Err(format!("user {name:?}: empty salt"));
                    }
                    Ok(Some(c))
                };
            let mut user = User {
                sha256: stored(Hash::Sha256, u.scram_sha_256)?,
                sha512: stored(Hash::Sha512, u.scram_sha_512)?,
                super_user: u.super_user,
            };
            match u.password {
                Some(p) if p.is_empty() => return Err(format!("user {name:?}: empty password")),
                Some(p) => {
                    user.sha256.get_or_insert_with(|| {
                        Credential::derive(
                            Hash::Sha256,
                            p.as_bytes(),
                            random_salt(),
                            DERIVED_ITERATIONS,
                        )
                    });
                    user.sha512.get_or_insert_with(|| {
                        Credential::derive(
                            Hash::Sha512,
                            p.as_bytes(),
                            random_salt(),
                            DERIVED_ITERATIONS,
                        )
                    });
                }
                None if user.sha256.is_none() && user.sha512.is_none() => {
                    return Err(format!("user {name:?}: needs a password or SCRAM credentials"));
                }
                None => {}
            }
            users.insert(name, user);
        }
        Ok(Users { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// How many users are super-users.
    pub fn super_users(&self) -> usize {
        self.users.values().filter(|u| u.super_user).count()
    }

    /// Whether `user` is in the file and marked `super-user: true`.
    pub fn is_super_user(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.super_user)
    }

    fn credential(&self, user: &str, hash: Hash) -> Option<Credential> {
        self.users.get(user)?.credential(hash).cloned()
    }

    /// PLAIN: whether `password` is `user`'s, checked against the user's stored SCRAM
    /// credential (SHA-512 when present).
    /// Whether `password` is `user`'s; `None` when there is no such user.
    fn check_password(&self, user: &str, password: &[u8]) -> Option<bool> {
        let u = self.users.get(user)?;
        Some(match (&u.sha512, &u.sha256) {
            (Some(c), _) => c.matches_password(Hash::Sha512, password),
            (None, Some(c)) => c.matches_password(Hash::Sha256, password),
            (None, None) => false,
        })
    }
}

/// 16 random bytes (a v4 UUID's randomness comes from the OS generator).
fn random_salt() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// A fresh SCRAM server nonce: printable, comma-free, 244 random bits.
fn server_nonce() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

// === the shared, reloadable credentials ===

/// The users every connection authenticates against; replaced when the users file changes.
#[derive(Clone)]
pub struct Sasl {
    users: Arc<RwLock<Arc<Users>>>,
    /// Per-process secret from which decoy credentials for unknown users are made.
    decoy_secret: Arc<[u8; 16]>,
}

impl Sasl {
    /// Read the users file (an error when it is unreadable or invalid: kelp does not start
    /// with SASL half configured) and watch it for changes until `cancel`.
    pub fn start(
        path: PathBuf,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Sasl> {
        let env = crate::config::ENV_SASL_USERS_FILE;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{env}: reading {}", path.display()))?;
        let users =
            Users::parse(&text).map_err(|e| anyhow::anyhow!("{env}: {}: {e}", path.display()))?;
        tracing::info!(
            users = users.len(),
            super_users = users.super_users(),
            file = %path.display(),
            "SASL enabled"
        );
        let sasl = Sasl::new(users);
        let shared = sasl.users.clone();
        tracker.spawn(crate::watch::poll(
            path,
            USERS_FILE_POLL,
            text.into_bytes(),
            cancel,
            "SASL users",
            move |text| {
                let users = Users::parse(text)?;
                tracing::info!(
                    users = users.len(),
                    super_users = users.super_users(),
                    "SASL users file reloaded"
                );
                *shared.write() = Arc::new(users);
                Ok(())
            },
        ));
        Ok(sasl)
    }

    pub fn new(users: Users) -> Sasl {
        Sasl {
            users: Arc::new(RwLock::new(Arc::new(users))),
            decoy_secret: Arc::new(*uuid::Uuid::new_v4().as_bytes()),
        }
    }

    fn users(&self) -> Arc<Users> {
        self.users.read().clone()
    }

    /// Whether `user` is a super-user in the users file in force now: a reloaded file
    /// grants or revokes the right from the next request on, also on open connections.
    pub fn is_super_user(&self, user: &str) -> bool {
        self.users().is_super_user(user)
    }

    /// A credential for a user kelp does not know: stable for the process (a client probing
    /// twice sees the same salt), matched by no password.
    fn decoy(&self, hash: Hash, user: &str) -> Credential {
        let seed = hash.hmac(&self.decoy_secret[..], user.as_bytes());
        Credential {
            salt: seed[..16].to_vec(),
            iterations: DERIVED_ITERATIONS,
            stored_key: hash.hmac(&seed, b"stored"),
            server_key: hash.hmac(&seed, b"server"),
        }
    }
}

// === one connection's exchange ===

/// Where one connection is in its SASL exchange.
#[derive(Default)]
pub enum Exchange {
    /// Waiting for SaslHandshake.
    #[default]
    Start,
    /// A mechanism was agreed; waiting for its first message. `raw`: SaslHandshake v0, after
    /// which the messages come as bare length-prefixed tokens instead of SaslAuthenticate.
    Chosen { mechanism: Mechanism, raw: bool },
    /// A SCRAM exchange between its first and final message.
    Scram { mechanism: Mechanism, server: Box<scram::Server>, raw: bool },
    /// Authenticated (the principal is kept by the session).
    Done,
    /// Failed; the connection closes.
    Failed,
}

/// What one SASL message led to.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes; more messages follow.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `reply`.
    Authenticated { reply: Vec<u8>, user: String },
    /// Authentication failed (the reason is for the log only).
    Failed(&'static str),
}

impl Exchange {
    /// SaslHandshake: agree on `mechanism`. `false` when the exchange is past that point.
    pub fn handshake(&mut self, mechanism: Mechanism, version: i16) -> bool {
        match self {
            Exchange::Start => {
                *self = Exchange::Chosen { mechanism, raw: version == 0 };
                true
            }
            _ => false,
        }
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0).
    pub fn awaits_raw_token(&self) -> bool {
        matches!(self, Exchange::Chosen { raw: true, .. } | Exchange::Scram { raw: true, .. })
    }

    /// Whether a SaslAuthenticate message is expected now.
    pub fn awaits_authenticate(&self) -> bool {
        matches!(self, Exchange::Chosen { raw: false, .. } | Exchange::Scram { raw: false, .. })
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Exchange::Done)
    }

    /// The mechanism in use, once one was agreed.
    pub fn mechanism(&self) -> Option<Mechanism> {
        match self {
            Exchange::Chosen { mechanism, .. } | Exchange::Scram { mechanism, .. } => {
                Some(*mechanism)
            }
            _ => None,
        }
    }

    /// Process one client message of the agreed mechanism.
    pub fn step(&mut self, sasl: &Sasl, message: &[u8]) -> Outcome {
        let outcome = match std::mem::replace(self, Exchange::Failed) {
            Exchange::Chosen { mechanism: Mechanism::Plain, .. } => plain(sasl, message),
            Exchange::Chosen { mechanism, raw } => {
                let hash = mechanism.hash().expect("SCRAM mechanisms have a hash");
                let mut server = scram::Server::new(hash);
                let users = sasl.users();
                match server.step(
                    message,
                    |u| users.credential(u, hash),
                    |u| sasl.decoy(hash, u),
                    &server_nonce(),
                ) {
                    Ok(scram::Step::Continue(reply)) => {
                        *self = Exchange::Scram { mechanism, server: Box::new(server), raw };
                        return Outcome::Continue(reply);
                    }
                    Ok(scram::Step::Done { .. }) => {
                        Outcome::Failed("SCRAM ended after one message")
                    }
                    Err(e) => Outcome::Failed(e.0),
                }
            }
            Exchange::Scram { mut server, .. } => {
                match server.step(message, |_| None, |u| sasl.decoy(Hash::Sha256, u), "") {
                    Ok(scram::Step::Done { reply, user }) => Outcome::Authenticated { reply, user },
                    Ok(scram::Step::Continue(_)) => {
                        Outcome::Failed("SCRAM asked for a third message")
                    }
                    Err(e) => Outcome::Failed(e.0),
                }
            }
            Exchange::Start | Exchange::Done | Exchange::Failed => {
                Outcome::Failed("no SASL exchange in progress")
            }
        };
        if matches!(outcome, Outcome::Authenticated { .. }) {
            *self = Exchange::Done;
        }
        outcome
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`; an authzid must equal the user.
fn plain(sasl: &Sasl, message: &[u8]) -> Outcome {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Outcome::Failed("malformed PLAIN message");
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return Outcome::Failed("user name is not UTF-8");
    };
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Outcome::Failed("authzid differs from the user name");
    }
    let known = sasl.users().check_password(user, password);
    let ok = known.unwrap_or_else(|| {
        // An unknown user costs the same key derivation as a known one, so the time of the
        // answer does not tell which user names exist.
        let decoy = sasl.decoy(Hash::Sha512, user);
        let _ = decoy.matches_password(Hash::Sha512, password);
        false
    });
    if user.is_empty() || !ok {
        return Outcome::Failed("invalid credentials");
    }
    Outcome::Authenticated { reply: Vec::new(), user: user.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
users:
  alice:
    password: alice-secret
  bob:
    scram-sha-256:
      salt: W22ZaJ0SNY7soEsUEjb6gQ==
      iterations: 4096
      # RFC 7677's \"pencil\"
      stored-key: WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=
      server-key: wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=
";

    #[test]
    fn users_file_parses_and_plain_checks_passwords() {
        let sasl = Sasl::new(Users::parse(FILE).unwrap());
        let users = sasl.users();
        assert_eq!(users.len(), 2);
        assert_eq!(users.check_password("alice", b"alice-secret"), Some(true));
        assert_eq!(users.check_password("alice", b"alice-secreT"), Some(false));
        let scram_only = users.check_password("bob", b"pencil");
        assert_eq!(scram_only, Some(true), "PLAIN against a stored SCRAM credential");
        assert!(users.credential("bob", Hash::Sha512).is_none());
        assert_eq!(users.check_password("carol", b"x"), None, "no such user");

        let mut e = Exchange::default();
        assert!(e.handshake(Mechanism::Plain, 1));
        assert!(e.awaits_authenticate() && !e.awaits_raw_token());
        assert!(
            matches!(e.step(&sasl, b"\0alice\0alice-secret"), Outcome::Authenticated { user, .. } if user == "alice")
        );
        assert!(e.is_done());
        assert!(!e.handshake(Mechanism::Plain, 1), "no second handshake");

        let mut e = Exchange::default();
        assert!(e.handshake(Mechanism::Plain, 0));
        assert!(e.awaits_raw_token());
        assert!(
            matches!(e.step(&sasl, b"bob\0alice\0alice-secret"), Outcome::Failed(_)),
            "authzid of someone else"
        );
        assert!(
            matches!(e.step(&sasl, b"\0alice\0alice-secret"), Outcome::Failed(_)),
            "no retry after a failure"
        );
    }

    #[test]
    fn bad_users_files_are_refused_whole() {
        for bad in [
            "users: {a: {}}",
            "users: {a: {password: ''}}",
            "users: {a: {pasword: x}}",
            "users: {a: {scram-sha-256: {salt: '!!', iterations: 4096, stored-key: '', server-key: ''}}}",
            "users: {a: {scram-sha-256: {salt: c2FsdA==, iterations: 10, stored-key: WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=, server-key: wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=}}}",
            "[1, 2]",
        ] {
            assert!(Users::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Users::parse("").unwrap().is_empty());
    }

    #[test]
    fn super_user_is_a_per_user_flag_that_defaults_to_false() {
        let users = Users::parse(FILE).unwrap();
        assert_eq!(users.super_users(), 0, "a file written before the flag grants nothing");
        assert!(!users.is_super_user("alice"));

        let users = Users::parse(
            "users:\n  admin: {password: a, super-user: true}\n  app: {password: b, super-user: false}\n  other: {password: c}\n",
        )
        .unwrap();
        assert_eq!(users.super_users(), 1);
        assert!(users.is_super_user("admin"));
        assert!(!users.is_super_user("app"));
        assert!(!users.is_super_user("other"));
        assert!(!users.is_super_user("nobody"), "not in the file");

        for bad in [
            "users: {a: {password: x, super-user: yes}}",
            "users: {a: {password: x, super-user: 1}}",
            "users: {a: {password: x, super_user: true}}",
            "users: {a: {super-user: true}}",
        ] {
            assert!(Users::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_reloaded_file_grants_and_revokes_super_user_at_once() {
        let sasl = Sasl::new(Users::parse("users: {a: {password: x, super-user: true}}").unwrap());
        assert!(sasl.is_super_user("a"));
        *sasl.users.write() = Arc::new(Users::parse("users: {a: {password: x}}").unwrap());
        assert!(!sasl.is_super_user("a"));
    }

    #[test]
    fn mechanism_names() {
        for m in MECHANISMS {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
    }
}
