//! FindCoordinator: to its application, kelp is the coordinator of every group, so the answer
//! is always kelp's own advertised address (v0-3 one key, v4+ a batch of `coordinator_keys`).
//!
//! With several kelps in front of one SeaweedFS each still names itself: the application only
//! ever talks to its own sidecar, which forwards the group's requests to the kelp that owns
//! the group (`peer::forward`; DESIGN.md, "Consumer groups across sidecars").

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;

/// `key_type` of a consumer group.
pub const KEY_TYPE_GROUP: i8 = 0;
/// `key_type` of a transactional id.
pub const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn handle(ctx: &Ctx, version: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators =
            req.coordinator_keys.into_iter().map(|key| answer(ctx, req.key_type, key)).collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = answer(ctx, req.key_type, req.key);
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}

fn answer(ctx: &Ctx, key_type: i8, key: StrBytes) -> Coordinator {
    let c = Coordinator::default().with_key(key);
    match key_type {
        KEY_TYPE_GROUP => {}
        // There is no transaction coordinator. A retriable code here would have a
        // transactional producer retry `init_transactions()` until its timeout (60 s by
        // default); TRANSACTIONAL_ID_AUTHORIZATION_FAILED is what Kafka answers a client that
        // may not use the id, and both librdkafka (rd_kafka_txn_handle_FindCoordinator) and
        // the Java TransactionManager treat it as fatal at once.
        KEY_TYPE_TRANSACTION => {
            return no_coordinator(
                c,
                ResponseError::TransactionalIdAuthorizationFailed,
                "kelp does not support transactions",
            );
        }
        // Share groups (KIP-932) and unknown types: no coordinator for them, as a cluster
        // without a share coordinator answers.
        _ => {
            return no_coordinator(
                c,
                ResponseError::CoordinatorNotAvailable,
                "kelp coordinates consumer groups only",
            );
        }
    }
    c.with_node_id(BrokerId(ctx.config.node_id))
        .with_host(ctx.host())
        .with_port(ctx.advertised_port)
}

fn no_coordinator(c: Coordinator, code: ResponseError, message: &'static str) -> Coordinator {
    c.with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_static_str(message)))
        .with_node_id(BrokerId(-1))
        .with_port(-1)
}
