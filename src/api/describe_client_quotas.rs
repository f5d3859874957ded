//! DescribeClientQuotas (KIP-546, v0-v1): the client-quota rules in force on this kelp (the
//! quotas file merged with the rules stored through AlterClientQuotas).

use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use crate::ctx::Ctx;

pub fn handle(ctx: &Ctx, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    ctx.quotas.describe(&req)
}
