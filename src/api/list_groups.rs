//! ListGroups: every group kelp knows (in memory or in the filer), filtered by state (v4+)
//! and type (v5+; every kelp group is a "classic" group).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::ctx::Ctx;
use crate::error::ApiKind;
use crate::group::GroupState;

/// The group type of every kelp group (KIP-848 calls the JoinGroup protocol "classic").
pub const GROUP_TYPE: &str = "classic";

pub async fn handle(ctx: &Ctx, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = match ctx.groups.list().await {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(error = %e, "listing groups failed");
            return ListGroupsResponse::default().with_error_code(e.code(ApiKind::Group).code());
        }
    };
    // Unknown state names match nothing, as in Kafka.
    let states: Vec<Option<GroupState>> =
        req.states_filter.iter().map(|s| GroupState::parse(s)).collect();
    let type_ok = req.types_filter.is_empty()
        || req.types_filter.iter().any(|t| t.eq_ignore_ascii_case(GROUP_TYPE));
    let listed = groups
        .into_iter()
        .filter(|(_, state, _)| type_ok && (states.is_empty() || states.contains(&Some(*state))))
        .map(|(id, state, protocol_type)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            if version >= 4 {
                g = g.with_group_state(StrBytes::from_static_str(state.name()));
            }
            if version >= 5 {
                g = g.with_group_type(StrBytes::from_static_str(GROUP_TYPE));
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
