//! SyncGroup: the leader hands in the assignment, every member gets its part once the
//! generation is stored (`group::Coordinator::sync`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::group::{SyncReply, SyncRequest};

pub async fn handle(ctx: &Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return error(ResponseError::InvalidGroupId);
    }
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    response(ctx.groups.sync(&group_id, sync).await)
}

/// The whole request failed with `code` (it could not reach the group's owner, say);
/// the same at every version.
pub fn error(code: ResponseError) -> SyncGroupResponse {
    response(SyncReply::error(code))
}

fn response(r: SyncReply) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
        .with_assignment(r.assignment)
}
