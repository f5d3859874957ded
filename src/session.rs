//! What kelp knows about one Kafka connection beyond the request at hand: who is on the other
//! end (SASL), what that client may do to the cluster (`authz`), which quotas govern it and
//! what it still owes them.
//!
//! `connection` owns one per connection and consults it before and after each request; the
//! SASL handlers in `api` update it. It knows the shared credentials only as a `&Sasl` passed
//! in, never the whole context.

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use crate::authz::{Authority, Caller};
use crate::produce_order::Turn;
use crate::quota;
use crate::sasl::{self, Exchange, Outcome};

/// APIs a connection may send before it has authenticated, when SASL is on.
const BEFORE_AUTHENTICATION: &[ApiKey] =
    &[ApiKey::ApiVersions, ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];

/// Why a connection's SASL exchange ended it.
#[derive(Debug, thiserror::Error)]
#[error("SASL authentication failed: {0}")]
pub struct SaslFailed(pub &'static str);

/// One connection's state.
pub struct Session {
    /// `None` when SASL is off on the listener.
    sasl: Option<Exchange>,
    principal: Option<String>,
    /// Set, with the reason, when the connection must close after the response being written.
    close: Option<&'static str>,
    pub(crate) quota: quota::Conn,
    /// The request's turn among its connection's Produce requests (`produce_order`), in the
    /// session of a request handled beside others ([`Session::for_request`]).
    turn: Option<Turn>,
}

impl Session {
    /// A connection's session; `sasl` is the listener's SASL configuration (`None`: off).
    pub fn new(sasl: Option<&sasl::Sasl>) -> Session {
        Session {
            sasl: sasl.map(|_| Exchange::default()),
            principal: None,
            close: None,
            quota: quota::Conn::default(),
            turn: None,
        }
    }

    /// The session of one request handled beside other requests of its connection: it
    /// carries the request's Produce `turn` and can ask for the connection to be closed
    /// ([`Session::closing`], which the connection takes over when it answers). Login state
    /// and quotas stay with the connection's own session: requests that use them are
    /// handled alone (`connection`).
    pub fn for_request(turn: Option<Turn>) -> Session {
        Session { turn, ..Session::new(None) }
    }

    /// The request's Produce turn, taken by whoever queues its records.
    pub fn take_turn(&mut self) -> Option<Turn> {
        self.turn.take()
    }

    /// Whether the login state can no longer change: SASL is off, or the client logged in.
    /// Until then the connection handles each request alone.
    pub fn logged_in(&self) -> bool {
        self.sasl.as_ref().is_none_or(Exchange::is_done)
    }

    /// The quota state together with the user it is resolved for.
    pub(crate) fn quota_and_user(&mut self) -> (&mut quota::Conn, Option<&str>) {
        (&mut self.quota, self.principal.as_deref())
    }

    /// Whether the connection may send `key` now (SASL on: only the login APIs until
    /// authenticated, as a Kafka broker insists).
    pub fn may_send(&self, key: ApiKey) -> bool {
        match &self.sasl {
            None => true,
            Some(e) => e.is_done() || BEFORE_AUTHENTICATION.contains(&key),
        }
    }

    /// What the client may do to the cluster as a whole, now: `admin_apis` is
    /// `KELP_ADMIN_APIS`, `sasl` the listener's SASL configuration. Asked per request, so a
    /// users file reloaded since the login applies to the next request.
    pub fn authority(&self, admin_apis: bool, sasl: Option<&sasl::Sasl>) -> Authority {
        let caller = match (sasl, self.principal.as_deref()) {
            (None, _) => Caller::Anonymous,
            (Some(shared), Some(user)) => Caller::User { super_user: shared.is_super_user(user) },
            (Some(_), None) => Caller::User { super_user: false },
        };
        Authority::decide(admin_apis, caller)
    }

    /// Why the connection closes after the response just written (a failed login, a failed
    /// acks=0 Produce), if it does.
    pub fn closing(&self) -> Option<&'static str> {
        self.close
    }

    /// Close the connection once the response to the current request (if any) is written.
    pub fn close_after_reply(&mut self, why: &'static str) {
        self.close = Some(why);
    }

    /// Wait out what the last request cost over quota.
    pub async fn hold(&mut self) {
        self.quota.hold().await;
    }

    // === SASL ===

    /// SaslHandshake: `Err` with the Kafka code when SASL is off, the exchange is past the
    /// handshake, or the mechanism is not offered.
    pub fn handshake(
        &mut self,
        mechanism: &str,
        version: i16,
    ) -> Result<(), kafka_protocol::ResponseError> {
        use kafka_protocol::ResponseError as E;
        let exchange = self.sasl.as_mut().ok_or(E::IllegalSaslState)?;
        let mechanism = sasl::Mechanism::from_name(mechanism).ok_or(E::UnsupportedSaslMechanism)?;
        if exchange.handshake(mechanism, version) { Ok(()) } else { Err(E::IllegalSaslState) }
    }

    /// SaslAuthenticate: one message of the agreed mechanism. `Err` carries the Kafka code
    /// (and the connection is closed after the response on an authentication failure).
    pub async fn authenticate(
        &mut self,
        shared: Option<&sasl::Sasl>,
        message: Bytes,
    ) -> Result<Vec<u8>, kafka_protocol::ResponseError> {
        use kafka_protocol::ResponseError as E;
        let (Some(exchange), Some(shared)) = (self.sasl.as_mut(), shared) else {
            return Err(E::IllegalSaslState);
        };
        if !exchange.awaits_authenticate() {
            return Err(E::IllegalSaslState);
        }
        match self.step(shared, message).await {
            Ok(reply) => Ok(reply),
            Err(_) => {
                self.close = Some("a failed SASL authentication");
                Err(E::SaslAuthenticationFailed)
            }
        }
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0), not a request.
    pub fn awaits_raw_token(&self) -> bool {
        self.sasl.as_ref().is_some_and(Exchange::awaits_raw_token)
    }

    /// One bare SASL token (SaslHandshake v0): the token to send back. A failure ends the
    /// connection without a reply, as Kafka does.
    pub async fn raw_token(
        &mut self,
        shared: Option<&sasl::Sasl>,
        token: Bytes,
    ) -> Result<Bytes, SaslFailed> {
        let shared = shared.ok_or(SaslFailed("SASL is off"))?;
        self.step(shared, token).await.map(Bytes::from)
    }

    /// One message of the exchange, run on the blocking pool: PLAIN derives a key from the
    /// password (thousands of SHA-512 rounds), which must not stall the async runtime.
    async fn step(&mut self, shared: &sasl::Sasl, message: Bytes) -> Result<Vec<u8>, SaslFailed> {
        let Some(mut exchange) = self.sasl.take() else {
            return Err(SaslFailed("SASL is off"));
        };
        let mechanism = exchange.mechanism().map(sasl::Mechanism::name);
        let shared = shared.clone();
        let stepped = tokio::task::spawn_blocking(move || {
            let outcome = exchange.step(&shared, &message);
            (exchange, outcome)
        })
        .await;
        let outcome = match stepped {
            Ok((exchange, outcome)) => {
                self.sasl = Some(exchange);
                outcome
            }
            Err(e) => {
                // A bug in the exchange: the connection stays unauthenticated and closes.
                tracing::error!(error = %e, "SASL exchange failed inside kelp");
                self.sasl = Some(Exchange::Failed);
                self.close = Some("a failed SASL exchange");
                Outcome::Failed("internal error")
            }
        };
        let metrics = crate::metrics::global();
        let count = |ok| {
            if let Some(m) = mechanism {
                metrics.observe_sasl(m, ok);
            }
        };
        match outcome {
            Outcome::Continue(reply) => Ok(reply),
            Outcome::Authenticated { reply, user } => {
                tracing::debug!(mechanism = mechanism.unwrap_or("none"), %user, "authenticated");
                count(true);
                self.principal = Some(user);
                Ok(reply)
            }
            Outcome::Failed(why) => {
                tracing::info!(
                    mechanism = mechanism.unwrap_or("none"),
                    reason = why,
                    "SASL authentication failed"
                );
                count(false);
                Err(SaslFailed(why))
            }
        }
    }
}
