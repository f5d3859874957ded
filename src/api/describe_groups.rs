//! DescribeGroups: state, protocol and members of each group (metadata and assignments only
//! while Stable, as Kafka). A group that does not exist is reported Dead, with
//! GROUP_ID_NOT_FOUND from v6.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::describe_cluster::AUTHORIZED_OPERATIONS_OMITTED;
use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::group::GroupState;

pub async fn handle(ctx: &Ctx, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let s = StrBytes::from_string;
    let mut groups = Vec::with_capacity(req.groups.len());
    for group_id in req.groups {
        let base = DescribedGroup::default()
            .with_group_id(group_id.clone())
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
        let described = match ctx.groups.describe(&group_id.0).await {
            Ok(Some(d)) => {
                let members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(if version >= 4 {
                                m.group_instance_id.map(s)
                            } else {
                                None
                            })
                            .with_client_id(s(m.client_id))
                            .with_client_host(s(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
                base.with_group_state(StrBytes::from_static_str(d.state.name()))
                    .with_protocol_type(s(d.protocol_type))
                    .with_protocol_data(s(d.protocol_name))
                    .with_members(members)
            }
            Ok(None) => unknown(&group_id, version),
            Err(e) => {
                tracing::debug!(group = %&*group_id.0, error = %e, "describing group failed");
                base.with_error_code(e.code(ApiKind::Group).code())
            }
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

/// A group that does not exist, as Kafka describes it: Dead, and GROUP_ID_NOT_FOUND from v6.
pub fn unknown(group_id: &GroupId, version: i16) -> DescribedGroup {
    let dead = DescribedGroup::default()
        .with_group_id(group_id.clone())
        .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_group_state(StrBytes::from_static_str(GroupState::Dead.name()));
    if version >= 6 {
        dead.with_error_code(ResponseError::GroupIdNotFound.code()).with_error_message(Some(
            StrBytes::from_string(format!("Group {} not found.", &*group_id.0)),
        ))
    } else {
        dead
    }
}

/// Every group of the request failed with `code` (it could not reach a group's owner, say).
pub fn error(req: &DescribeGroupsRequest, code: ResponseError) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default()
        .with_groups(req.groups.iter().map(|g| failed(g, code)).collect())
}

/// One group that could not be described, with `code`.
pub fn failed(group_id: &GroupId, code: ResponseError) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_id(group_id.clone())
        .with_error_code(code.code())
        .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
