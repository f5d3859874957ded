//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::ctx::Ctx;

pub async fn handle(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    let r = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        ctx.groups
            .heartbeat(&group_id, &req.member_id, instance.as_deref(), req.generation_id)
            .await
    };
    HeartbeatResponse::default().with_error_code(r.err().map_or(0, |e| e.code()))
}

/// The whole request failed with `code` (it could not reach the group's owner, say).
pub fn error(code: ResponseError) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(code.code())
}
