//! SaslHandshake (v0-v1): agree on a SASL mechanism. After v0 the client sends bare SASL
//! tokens (handled by `connection.rs` through the session); after v1 it sends SaslAuthenticate.

use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::session::Session;

pub fn handle(
    ctx: &Ctx,
    session: &mut Session,
    version: i16,
    req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    // The offered mechanisms go into every answer (a client that asked for another one picks
    // from them); with SASL off there are none.
    let mechanisms = match ctx.sasl {
        Some(_) => {
            crate::sasl::MECHANISMS.iter().map(|m| StrBytes::from_static_str(m.name())).collect()
        }
        None => Vec::new(),
    };
    let resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    match session.handshake(&req.mechanism, version) {
        Ok(()) => resp,
        Err(code) => resp.with_error_code(code.code()),
    }
}
