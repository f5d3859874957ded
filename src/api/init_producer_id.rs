//! InitProducerId: ids for idempotent producers. Transactions are not supported, so a
//! request with a transactional id is refused.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::ctx::Ctx;
use crate::producers::new_producer_id;

pub fn handle(_ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    if req.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // A producer re-initialising with its id (KIP-360) gets the next epoch of the same id.
    let (id, epoch) =
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
            (req.producer_id.0, req.producer_epoch + 1)
        } else {
            (new_producer_id(), 0)
        };
    InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
}
