//! LeaveGroup: v0-2 one member (`member_id`), v3+ a batch of members by member id or by
//! group instance id (KIP-345).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::ctx::Ctx;

pub async fn handle(ctx: &Ctx, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let result = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        ctx.groups.leave(&group_id, &leaving).await
    };
    let results = match result {
        Err(code) => return error(code),
        Ok(r) => r,
    };
    if version < 3 {
        return LeaveGroupResponse::default()
            .with_error_code(results.first().and_then(|r| r.err()).map_or(0, |e| e.code()));
    }
    let members = req
        .members
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(r.err().map_or(0, |e| e.code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// The whole request failed with `code` (it could not reach the group's owner, say): the
/// top-level code, at every version.
pub fn error(code: ResponseError) -> LeaveGroupResponse {
    LeaveGroupResponse::default().with_error_code(code.code())
}
