//! InitProducerId: ids for idempotent producers. Transactions are not supported, so a
//! request with a transactional id is refused.
//!
//! Without a transactional id Kafka ignores the producer id and epoch the client sends and
//! answers a fresh id with epoch 0 (TransactionCoordinator.handleInitProducerId); so does
//! kelp. Ids come from blocks claimed in the filer (`producer_ids`), so no two kelps hand out
//! the same one; a filer that cannot be reached is a retriable coordinator error.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::ctx::Ctx;
use crate::error::ApiKind;

pub async fn handle(ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    if req.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        return error(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let within = ctx.config.upstream_timeout();
    match tokio::time::timeout(within, ctx.producer_ids.next()).await {
        Ok(Ok(id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "allocating a producer id failed");
            error(e.code(ApiKind::Group))
        }
        Err(_) => error(ResponseError::CoordinatorNotAvailable),
    }
}

fn error(code: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code.code())
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
