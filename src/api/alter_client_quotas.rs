//! AlterClientQuotas (KIP-546, v0-v1): set or remove client quotas. They are stored in the
//! filer, so every kelp in front of the same SeaweedFS applies them (within a few seconds);
//! validation follows Kafka's controller.

use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use crate::ctx::Ctx;

pub async fn handle(ctx: &Ctx, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    ctx.quotas.alter(req).await
}
