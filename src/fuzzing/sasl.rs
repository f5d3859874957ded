//! SASL: PLAIN messages and SCRAM client-first/client-final messages through a connection's
//! session (handshake, then SaslAuthenticate or bare tokens), against a users file of one
//! user. The SCRAM client here is real: with an unedited exchange and the right password
//! it must log in, and with anything else it must not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::{Gen, Target, some_bytes};
use crate::sasl::scram::Hash;
use crate::sasl::{Sasl, Users};
use crate::session::Session;

pub const SASL: Target = Target {
    name: "sasl",
    about: "PLAIN and SCRAM-SHA-256/512 exchanges (well-formed, edited or raw) through a session",
    run: sasl_target,
    seeds: sasl_seeds,
    max_len: 1024,
    // Every PLAIN login and every first SCRAM proof for a new salt costs a PBKDF2 derivation.
    weight: 2,
    memory_base: 1 << 20,
    memory_per_byte: 64,
};

const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";

fn shared() -> &'static Sasl {
    static SASL: OnceLock<Sasl> = OnceLock::new();
    SASL.get_or_init(|| {
        let users = Users::parse(&format!("users:\n  {USER}:\n    password: {PASSWORD}\n"))
            .expect("the users file parses");
        Sasl::new(users)
    })
}

/// (hash, salt, iterations, password).
type SaltKey = (Hash, Vec<u8>, u32, Vec<u8>);

thread_local! {
    /// SaltedPassword by [`SaltKey`]: the salts of the one user (and of a few decoys) repeat
    /// across inputs, and each derivation costs thousands of HMACs.
    static SALTED: RefCell<HashMap<SaltKey, Vec<u8>>> = RefCell::new(HashMap::new());
}

fn salted(hash: Hash, salt: &[u8], iterations: u32, password: &[u8]) -> Option<Vec<u8>> {
    SALTED.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (hash, salt.to_vec(), iterations, password.to_vec());
        if let Some(s) = cache.get(&key) {
            return Some(s.clone());
        }
        if cache.len() >= 64 || iterations > crate::sasl::scram::MAX_ITERATIONS {
            return None;
        }
        let s = hash.salted_password(password, salt, iterations);
        cache.insert(key, s.clone());
        Some(s)
    })
}

/// A short string: one of the given choices, or arbitrary bytes (lossily UTF-8).
fn pick(u: &mut Unstructured, choices: &[&str]) -> Gen<String> {
    let i = u.int_in_range(0..=choices.len())?;
    Ok(match choices.get(i) {
        Some(c) => c.to_string(),
        None => String::from_utf8_lossy(some_bytes(u, 12)?).into_owned(),
    })
}

/// Up to two byte edits; whether any was made.
fn edit(u: &mut Unstructured, msg: &mut Vec<u8>) -> Gen<bool> {
    if !u.ratio(1u8, 4)? {
        return Ok(false);
    }
    for _ in 0..u.int_in_range(1..=2u8)? {
        let at = if msg.is_empty() { 0 } else { u.choose_index(msg.len())? };
        match u.int_in_range(0..=3u8)? {
            0 if !msg.is_empty() => msg[at] = u.arbitrary()?,
            1 => msg.truncate(at),
            2 => msg.insert(at, *u.choose(b",=\0n r")?),
            _ if !msg.is_empty() => {
                msg.remove(at);
            }
            _ => {}
        }
    }
    Ok(true)
}

/// Runs a session step to completion: steps run on a blocking pool, so they need a runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

fn sasl_target(data: &[u8]) {
    let _ = sasl_gen(&mut Unstructured::new(data));
}

fn sasl_gen(u: &mut Unstructured) -> Gen<()> {
    let sasl = shared();
    let mechanism = pick(u, &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])?;
    let version = u.int_in_range(0..=2i16)?;
    let mut session = Session::new(Some(sasl));
    if session.handshake(&mechanism, version).is_err() {
        return Ok(());
    }
    // Sends one message the way the agreed handshake version says; the reply on success.
    let send = |session: &mut Session, msg: &[u8]| -> Option<Vec<u8>> {
        let msg = bytes::Bytes::copy_from_slice(msg);
        if session.awaits_raw_token() {
            block_on(session.raw_token(Some(sasl), msg)).ok().map(|b| b.to_vec())
        } else {
            block_on(session.authenticate(Some(sasl), msg)).ok()
        }
    };
    let logged_in = |session: &mut Session| session.quota_and_user().1 == Some(USER);
    let hash = match mechanism.as_str() {
        "SCRAM-SHA-256" => Hash::Sha256,
        "SCRAM-SHA-512" => Hash::Sha512,
        _ => {
            // PLAIN: [authzid] NUL user NUL password.
            let authzid = pick(u, &["", USER])?;
            let user = pick(u, &[USER, ""])?;
            let password = pick(u, &[PASSWORD, "wrong"])?;
            let mut msg = format!("{authzid}\0{user}\0{password}").into_bytes();
            let edited = edit(u, &mut msg)?;
            send(&mut session, &msg);
            if !edited {
                let ok =
                    (authzid.is_empty() || authzid == USER) && user == USER && password == PASSWORD;
                assert_eq!(logged_in(&mut session), ok, "PLAIN {msg:?}");
            }
            assert!(send(&mut session, &msg).is_none(), "no message after the exchange");
            return Ok(());
        }
    };
    // client-first-message: gs2-header client-first-message-bare.
    let cbind = pick(u, &["n", "y", "p=tls-unique"])?;
    let authzid = pick(u, &["", "a=alice", "a=bob", "a=al=3Dice"])?;
    let user = pick(u, &[USER, "bob", "al=2Cice", "al=ice"])?;
    let nonce = pick(u, &["fyko+d2lbbFgONRv9qkxdawL", "n"])?;
    let extensions = pick(u, &["", ",tokenauth=true", ",x=y"])?;
    let gs2 = format!("{cbind},{authzid},");
    let bare = format!("n={user},r={nonce}{extensions}");
    let mut first = format!("{gs2}{bare}").into_bytes();
    let mut intact = !edit(u, &mut first)?;
    let well_formed = matches!(cbind.as_str(), "n" | "y")
        && matches!(authzid.as_str(), "" | "a=alice")
        && user == USER
        && !nonce.is_empty()
        && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        && matches!(extensions.as_str(), "" | ",x=y");
    intact &= well_formed;
    let server_first = send(&mut session, &first);
    if intact {
        assert!(server_first.is_some(), "client-first {first:?} refused");
    }
    let server_first = match server_first {
        Some(reply) => String::from_utf8(reply).expect("server-first is text"),
        None => {
            // A refused first message ends the exchange.
            assert!(send(&mut session, b"c=biws,r=x,p=AAAA").is_none());
            return Ok(());
        }
    };
    // client-final-message, from what the server said.
    let fields: HashMap<&str, &str> =
        server_first.split(',').filter_map(|kv| kv.split_once('=')).collect();
    let (Some(server_nonce), Some(salt), Some(iterations)) = (
        fields.get("r").copied(),
        fields.get("s").and_then(|s| B64.decode(s).ok()),
        fields.get("i").and_then(|i| i.parse::<u32>().ok()),
    ) else {
        panic!("malformed server-first {server_first:?}");
    };
    assert!(server_nonce.starts_with(&nonce) || !intact, "the server nonce extends the client's");
    let password = pick(u, &[PASSWORD, "wrong"])?;
    let binding = B64.encode(pick(u, &[&gs2, "n,,"])?);
    let final_nonce = pick(u, &[server_nonce, &nonce])?;
    let without_proof = format!("c={binding},r={final_nonce}");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let proof = match salted(hash, &salt, iterations, password.as_bytes()) {
        Some(salted) => {
            let client_key = hash.hmac(&salted, b"Client Key");
            let stored_key = hash.digest(&client_key);
            let signature = hash.hmac(&stored_key, auth_message.as_bytes());
            client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect()
        }
        None => vec![0; 32],
    };
    let mut last = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
    intact &= !edit(u, &mut last)?;
    let done = send(&mut session, &last);
    if intact {
        let ok = password == PASSWORD
            && B64.decode(&binding).ok().as_deref() == Some(gs2.as_bytes())
            && final_nonce == server_nonce;
        assert_eq!(logged_in(&mut session), ok, "SCRAM final {last:?}");
        assert_eq!(done.is_some(), ok);
    }
    assert!(send(&mut session, &last).is_none(), "no message after the exchange");
    Ok(())
}

fn sasl_seeds() -> Vec<Vec<u8>> {
    // `pick` reads one byte for its choice (0 = the first); zeros throughout pick the
    // well-formed exchange with the right password for each mechanism and handshake version.
    let mut out = Vec::new();
    for mechanism in 0..3u8 {
        for version in 0..2u8 {
            let mut input = vec![mechanism, version];
            input.extend_from_slice(&[0; 24]);
            out.push(input);
        }
    }
    out
}
