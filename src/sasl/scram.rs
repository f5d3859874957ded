//! The server side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! it: no channel binding, an optional authzid that must equal the user name, and Kafka's
//! client-first extensions (of which `tokenauth` is refused: kelp has no delegation tokens).
//!
//! Pure: the caller supplies the server nonce and the credential lookup, so the RFC 7677 test
//! vector can be replayed exactly.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Fewest PBKDF2 iterations kelp accepts in a stored credential (RFC 7677's minimum, and
/// Kafka's).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations accepted (Kafka's bound): a credential is derived on every PLAIN login.
pub const MAX_ITERATIONS: u32 = 16384;

/// The hash a SCRAM mechanism is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    /// HMAC(key, data) (RFC 5802 `HMAC`).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// H(data) (RFC 5802 `H`).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword = Hi(Normalize(password), salt, i), Hi being PBKDF2 with HMAC.
    /// Normalize is the identity on UTF-8, as in Kafka (no SASLprep).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Hash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// What the server stores for one user and one hash (RFC 5802 section 3): never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential a password yields with `salt` and `iterations`.
    pub fn derive(hash: Hash, password: &[u8], salt: Vec<u8>, iterations: u32) -> Credential {
        let salted = hash.salted_password(password, &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Credential {
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// Whether `password` is the one this credential was derived from (constant time in the
    /// comparison; the derivation costs `iterations` HMACs).
    pub fn matches_password(&self, hash: Hash, password: &[u8]) -> bool {
        let other = Credential::derive(hash, password, self.salt.clone(), self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }
}

/// Why an exchange failed. Only logged: the client always gets the same generic message, so a
/// failure does not tell it whether the user exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub &'static str);

/// What one client message leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the next client message.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `reply` (server-final-message).
    Done { reply: Vec<u8>, user: String },
}

/// One SCRAM exchange (server side).
pub struct Server {
    hash: Hash,
    state: State,
}

enum State {
    AwaitClientFirst,
    AwaitClientFinal {
        user: String,
        credential: Credential,
        nonce: String,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
    },
    Finished,
}

impl Server {
    pub fn new(hash: Hash) -> Server {
        Server { hash, state: State::AwaitClientFirst }
    }

    /// Process one client message.
    ///
    /// `lookup` finds a user's credential; for a user it does not know, `decoy` must give a
    /// credential that no password matches, so the exchange fails at the proof exactly as a
    /// wrong password does. `server_nonce` is appended to the client's nonce; it must be
    /// printable ASCII without commas.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
        decoy: impl FnOnce(&str) -> Credential,
        server_nonce: &str,
    ) -> Result<Step, Failure> {
        let message = std::str::from_utf8(message).map_err(|_| Failure("message is not UTF-8"))?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitClientFirst => {
                let first = parse_client_first(message)?;
                let credential = lookup(&first.user).unwrap_or_else(|| decoy(&first.user));
                let nonce = format!("{}{server_nonce}", first.nonce);
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    B64.encode(&credential.salt),
                    credential.iterations
                );
                let reply = server_first.clone().into_bytes();
                self.state = State::AwaitClientFinal {
                    user: first.user,
                    credential,
                    nonce,
                    gs2_header: first.gs2_header,
                    client_first_bare: first.bare,
                    server_first,
                };
                Ok(Step::Continue(reply))
            }
            State::AwaitClientFinal {
                user,
                credential,
                nonce,
                gs2_header,
                client_first_bare,
                server_first,
            } => {
                let (without_proof, proof) = message
                    .rsplit_once(",p=")
                    .ok_or(Failure("client-final-message without proof"))?;
                let mut attrs = without_proof.split(',');
                let binding = attrs
                    .next()
                    .and_then(|a| a.strip_prefix("c="))
                    .ok_or(Failure("client-final-message without c="))?;
                if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(Failure("channel binding does not repeat the gs2 header"));
                }
                let got_nonce = attrs
                    .next()
                    .and_then(|a| a.strip_prefix("r="))
                    .ok_or(Failure("client-final-message without r="))?;
                if got_nonce != nonce {
                    return Err(Failure("nonce mismatch"));
                }
                let proof = B64.decode(proof).map_err(|_| Failure("proof is not base64"))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_signature =
                    self.hash.hmac(&credential.stored_key, auth_message.as_bytes());
                if proof.len() != client_signature.len() {
                    return Err(Failure("proof has the wrong length"));
                }
                let client_key: Vec<u8> =
                    proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
                if !bool::from(self.hash.digest(&client_key).ct_eq(&credential.stored_key)) {
                    return Err(Failure("invalid proof"));
                }
                let server_signature =
                    self.hash.hmac(&credential.server_key, auth_message.as_bytes());
                Ok(Step::Done {
                    reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
                    user,
                })
            }
            State::Finished => Err(Failure("message after the exchange ended")),
        }
    }
}

struct ClientFirst {
    gs2_header: String,
    bare: String,
    user: String,
    nonce: String,
}

/// `gs2-header client-first-message-bare`, with gs2-header = cbind-flag "," [authzid] ",".
fn parse_client_first(message: &str) -> Result<ClientFirst, Failure> {
    let mut parts = message.splitn(3, ',');
    let cbind = parts.next().unwrap_or_default();
    let raw_authzid = parts.next().ok_or(Failure("client-first-message without gs2 header"))?;
    let bare = parts.next().ok_or(Failure("client-first-message without gs2 header"))?;
    match cbind {
        // "y": the client could bind channels but thinks the server cannot; fine over plain TCP.
        "n" | "y" => {}
        _ => return Err(Failure("channel binding is not supported")),
    }
    let authzid = match raw_authzid {
        "" => None,
        a => Some(decode_saslname(a.strip_prefix("a=").ok_or(Failure("malformed authzid"))?)?),
    };
    let mut attrs = bare.split(',');
    let user = attrs
        .next()
        .and_then(|a| a.strip_prefix("n="))
        .ok_or(Failure("client-first-message without n="))?;
    let user = decode_saslname(user)?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(Failure("client-first-message without r="))?;
    if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
        return Err(Failure("malformed nonce"));
    }
    // Kafka's extensions (key=value); `tokenauth=true` asks for a delegation token login.
    for ext in attrs {
        if ext == "tokenauth=true" {
            return Err(Failure("delegation tokens are not supported"));
        }
    }
    if authzid.as_ref().is_some_and(|a| *a != user) {
        return Err(Failure("authzid differs from the user name"));
    }
    Ok(ClientFirst {
        gs2_header: format!("{cbind},{raw_authzid},"),
        bare: bare.to_string(),
        user,
        nonce: nonce.to_string(),
    })
}

/// RFC 5802 saslname: `=2C` stands for `,` and `=3D` for `=`; any other `=` is malformed.
fn decode_saslname(s: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(Failure("malformed saslname")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(Failure("empty user name"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// A minimal SCRAM client, for round trips.
    fn client_final(
        hash: Hash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2: &str,
    ) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        let salt = b64(fields[1].strip_prefix("s=").unwrap());
        let iterations: u32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.digest(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode(gs2));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hash.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn no_decoy(_: &str) -> Credential {
        panic!("decoy used for a known user")
    }

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_test_vector() {
        let credential =
            Credential::derive(Hash::Sha256, b"pencil", b64("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096);
        let mut server = Server::new(Hash::Sha256);
        let step = server
            .step(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                |u| (u == "user").then(|| credential.clone()),
                no_decoy,
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            )
            .unwrap();
        assert_eq!(
            step,
            Step::Continue(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_vec())
        );
        let step = server
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                |_| unreachable!(),
                no_decoy,
                "",
            )
            .unwrap();
        assert_eq!(
            step,
            Step::Done {
                reply: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                user: "user".into()
            }
        );
    }

    #[test]
    fn sha512_round_trip_and_wrong_password() {
        let credential = Credential::derive(Hash::Sha512, b"s3cret", b"salty".to_vec(), 4096);
        for (password, ok) in [("s3cret", true), ("wrong", false)] {
            let mut server = Server::new(Hash::Sha512);
            let Step::Continue(server_first) = server
                .step(b"n,,n=alice,r=abc", |_| Some(credential.clone()), no_decoy, "XYZ")
                .unwrap()
            else {
                panic!()
            };
            let server_first = String::from_utf8(server_first).unwrap();
            assert!(server_first.starts_with("r=abcXYZ,s="), "{server_first}");
            let last = client_final(Hash::Sha512, password, "n=alice,r=abc", &server_first, "n,,");
            let r = server.step(last.as_bytes(), |_| unreachable!(), no_decoy, "");
            assert_eq!(
                matches!(r, Ok(Step::Done { ref user, .. }) if user == "alice"),
                ok,
                "{password}: {r:?}"
            );
        }
    }

    #[test]
    fn unknown_users_fail_at_the_proof_like_wrong_passwords() {
        let mut server = Server::new(Hash::Sha256);
        let decoy =
            |u: &str| Credential::derive(Hash::Sha256, u.as_bytes(), b"decoy".to_vec(), 4096);
        let Step::Continue(first) =
            server.step(b"n,,n=mallory,r=n1", |_| None, decoy, "n2").unwrap()
        else {
            panic!()
        };
        let last = client_final(
            Hash::Sha256,
            "guess",
            "n=mallory,r=n1",
            std::str::from_utf8(&first).unwrap(),
            "n,,",
        );
        assert_eq!(
            server.step(last.as_bytes(), |_| None, decoy, ""),
            Err(Failure("invalid proof"))
        );
    }

    #[test]
    fn authzid_escapes_and_refusals() {
        let credential = Credential::derive(Hash::Sha256, b"pw", b"s".to_vec(), 4096);
        // authzid equal to the user is fine, and saslname escapes decode.
        let mut server = Server::new(Hash::Sha256);
        let Step::Continue(first) = server
            .step(
                b"n,a=a=2Cb,n=a=2Cb,r=x",
                |u| (u == "a,b").then(|| credential.clone()),
                no_decoy,
                "y",
            )
            .unwrap()
        else {
            panic!()
        };
        let last = client_final(
            Hash::Sha256,
            "pw",
            "n=a=2Cb,r=x",
            std::str::from_utf8(&first).unwrap(),
            "n,a=a=2Cb,",
        );
        assert!(
            matches!(server.step(last.as_bytes(), |_| None, no_decoy, ""), Ok(Step::Done { user, .. }) if user == "a,b")
        );

        for bad in [
            &b"p=tls-unique,,n=u,r=x"[..],
            b"n,a=other,n=u,r=x",
            b"n,,n=u,r=x,tokenauth=true",
            b"n,,n=a=zz,r=x",
            b"n,,r=x",
            b"n,,n=u,r=",
            b"\xff",
        ] {
            let r =
                Server::new(Hash::Sha256).step(bad, |_| Some(credential.clone()), no_decoy, "y");
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_tampered_final_message_is_refused() {
        let credential = Credential::derive(Hash::Sha256, b"pw", b"s".to_vec(), 4096);
        let first = |server: &mut Server| match server
            .step(b"n,,n=u,r=x", |_| Some(credential.clone()), no_decoy, "y")
            .unwrap()
        {
            Step::Continue(f) => String::from_utf8(f).unwrap(),
            _ => panic!(),
        };
        let mut server = Server::new(Hash::Sha256);
        let sf = first(&mut server);
        let good = client_final(Hash::Sha256, "pw", "n=u,r=x", &sf, "n,,");
        let bad_nonce = good.replace("r=xy", "r=xz");
        assert!(server.step(bad_nonce.as_bytes(), |_| None, no_decoy, "").is_err());
        // The exchange is over after a failure.
        assert!(server.step(good.as_bytes(), |_| None, no_decoy, "").is_err());
    }

    #[test]
    fn plain_password_check_against_a_credential() {
        let c = Credential::derive(Hash::Sha512, b"pw", b"salt".to_vec(), 4096);
        assert!(c.matches_password(Hash::Sha512, b"pw"));
        assert!(!c.matches_password(Hash::Sha512, b"pW"));
    }
}
