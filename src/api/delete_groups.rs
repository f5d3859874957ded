//! DeleteGroups: an Empty group's generation and committed offsets are removed;
//! NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND when there is nothing to delete.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};

use crate::ctx::Ctx;

pub async fn handle(ctx: &Ctx, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let r = ctx.groups.delete(&group_id.0).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(r.err().map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Every group of the request failed with `code` (it could not reach a group's owner, or the
/// client may not delete groups, say).
pub fn error(req: &DeleteGroupsRequest, code: ResponseError) -> DeleteGroupsResponse {
    let results = req.groups_names.iter().map(|g| failed(g, code)).collect();
    DeleteGroupsResponse::default().with_results(results)
}

/// One group that could not be deleted, with `code`.
pub fn failed(group_id: &GroupId, code: ResponseError) -> DeletableGroupResult {
    DeletableGroupResult::default().with_group_id(group_id.clone()).with_error_code(code.code())
}
