//! JoinGroup: validate, hand the join to `group::Coordinator` (which parks it until the
//! rebalance's join phase ends) and build the response.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::group::{JoinReply, JoinRequest, Protocol};

pub async fn handle(
    ctx: &Ctx,
    header: &RequestHeader,
    version: i16,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let member_id = req.member_id.to_string();
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return error(&req, version, ResponseError::InvalidGroupId);
    }
    let settings = ctx.groups.settings();
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    if req.session_timeout_ms < 0
        || session < settings.min_session_timeout
        || session > settings.max_session_timeout
    {
        return error(&req, version, ResponseError::InvalidSessionTimeout);
    }
    // v0 has no rebalance timeout; the session timeout served for both.
    let rebalance = if version == 0 || req.rebalance_timeout_ms < 0 {
        session
    } else {
        Duration::from_millis(req.rebalance_timeout_ms as u64)
    };
    let join = JoinRequest {
        member_id,
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        client_host: client_host(ctx),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata })
            .collect(),
        // KIP-394: from v4 a first join gets MEMBER_ID_REQUIRED and an id to come back with.
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
        max_size: settings.max_size,
    };
    let reply = ctx.groups.join(&group_id, join).await;
    response(version, reply)
}

/// The whole request failed with `code` (it could not reach the group's owner, say), in the
/// shape `version` expects.
pub fn error(req: &JoinGroupRequest, version: i16, code: ResponseError) -> JoinGroupResponse {
    response(version, JoinReply::error(&req.member_id, code))
}

/// The host reported for members in DescribeGroups. kelp does not see the application's
/// socket address here; the application runs beside this kelp, so kelp's own advertised
/// host identifies where it is (in Kafka's `/address` form).
pub fn client_host(ctx: &Ctx) -> String {
    format!("/{}", ctx.advertised_host)
}

fn response(version: i16, r: JoinReply) -> JoinGroupResponse {
    let s = |v: String| StrBytes::from_string(v);
    // Before v7 the protocol name is not nullable.
    let protocol_name = match r.protocol_name {
        None if version < 7 => Some(StrBytes::default()),
        other => other.map(s),
    };
    JoinGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(protocol_name)
        .with_leader(s(r.leader))
        .with_skip_assignment(r.skip_assignment && version >= 9)
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(if version >= 5 {
                            m.group_instance_id.map(s)
                        } else {
                            None
                        })
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}
