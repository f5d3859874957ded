//! SaslAuthenticate (v0-v2): one message of the agreed SASL mechanism, wrapped in a Kafka
//! request (KIP-152). A failed login is answered with SASL_AUTHENTICATION_FAILED and the
//! connection then closes, as Kafka does. Sessions never expire (`session_lifetime_ms` 0,
//! KIP-368), so clients do not re-authenticate.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::session::Session;

pub async fn handle(
    ctx: &Ctx,
    session: &mut Session,
    req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    match session.authenticate(ctx.sasl.as_ref(), req.auth_bytes).await {
        Ok(reply) => SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(reply)),
        Err(code) => {
            // One message for every failure: it must not tell a wrong password from an
            // unknown user.
            let message = match code {
                ResponseError::SaslAuthenticationFailed => {
                    "Authentication failed: Invalid username or password"
                }
                _ => "SaslAuthenticate is not expected now",
            };
            SaslAuthenticateResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_static_str(message)))
        }
    }
}
