//! Small filer entries with inline content: get, put, exclusive create, delete, list; and
//! leases in the filer's lock manager (`DistributedLock`), which kelp uses for group ownership.
//!
//! Owns: the filer calls and their "not there" versus "couldn't tell" answers. Does not own:
//! where entries live (`layout`) or what they contain (their callers).
//!
//! "Not there" and "couldn't tell" are never conflated. The filer reports a missing entry in
//! `LookupDirectoryEntry` only as an error *message* (status UNKNOWN, "no entry is found"),
//! which kelp does not match on; so reads go through `ListEntries` instead, which answers a
//! missing entry (or a missing directory) with an empty listing and real trouble with an
//! error status.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tonic::Code;

use super::LockAnswer;
use super::pb::filer_pb::{
    CreateEntryRequest, DeleteEntryRequest, Entry, FilerError, FindLockOwnerRequest,
    FuseAttributes, ListEntriesRequest, LockRequest, UnlockRequest,
};
use super::rpc::{Clients, Failure, call, request};
use crate::error::{Error, UpstreamCode};

/// Entries asked for per `ListEntries` page.
const LIST_PAGE: u32 = 1024;

/// Split an absolute path into (parent directory, name).
pub(crate) fn split_path(path: &str) -> Result<(&str, &str), Error> {
    let bad = |why: &str| Error::Filer {
        op: "path",
        path: path.to_string(),
        code: UpstreamCode::InvalidArgument,
        message: why.into(),
    };
    if !path.starts_with('/') {
        return Err(bad("not an absolute path"));
    }
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').ok_or_else(|| bad("no name"))?;
    if name.is_empty() {
        return Err(bad("no name"));
    }
    Ok((if dir.is_empty() { "/" } else { dir }, name))
}

/// The entry `name` in `dir`, `Ok(None)` when the filer definitely has none.
pub(crate) async fn lookup(
    clients: &Clients,
    op: &'static str,
    dir: &str,
    name: &str,
) -> Result<Option<Entry>, Error> {
    let path = join(dir, name);
    let req = ListEntriesRequest {
        directory: dir.to_string(),
        prefix: name.to_string(),
        start_from_file_name: name.to_string(),
        inclusive_start_from: true,
        limit: 1,
        ..Default::default()
    };
    let entries = list_page(clients, op, &path, req).await?;
    Ok(entries.into_iter().find(|e| e.name == name))
}

/// One `ListEntries` call, fully read, under one deadline.
async fn list_page(
    clients: &Clients,
    op: &'static str,
    path: &str,
    req: ListEntriesRequest,
) -> Result<Vec<Entry>, Error> {
    let timeout = clients.call_timeout;
    let (_, mut client) = clients.filer().await?;
    let read_all = async {
        let mut stream = client.list_entries(request(req, timeout)).await?.into_inner();
        let mut entries = Vec::new();
        while let Some(resp) = stream.message().await? {
            if let Some(e) = resp.entry {
                entries.push(e);
            }
        }
        Ok::<_, tonic::Status>(entries)
    };
    match tokio::time::timeout(timeout, read_all).await {
        Ok(Ok(entries)) => Ok(entries),
        Ok(Err(status)) => Err(fail(clients, Failure::Status(status), op, path)),
        Err(_) => Err(fail(clients, Failure::Elapsed(timeout), op, path)),
    }
}

/// Every entry in `dir` (all pages), in name order. A missing directory lists as empty.
pub(crate) async fn list_all(
    clients: &Clients,
    op: &'static str,
    dir: &str,
    prefix: &str,
) -> Result<Vec<Entry>, Error> {
    let mut all: Vec<Entry> = Vec::new();
    loop {
        let req = ListEntriesRequest {
            directory: dir.to_string(),
            prefix: prefix.to_string(),
            start_from_file_name: all.last().map(|e| e.name.clone()).unwrap_or_default(),
            inclusive_start_from: false,
            limit: LIST_PAGE,
            omit_chunks: true,
            ..Default::default()
        };
        let page = list_page(clients, op, dir, req).await?;
        let full = page.len() as u32 >= LIST_PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// Entries of `dir` from the name `from` on (inclusive; from the start when empty), in name
/// order, at most `limit` of them, without chunk lists.
pub(crate) async fn list_from(
    clients: &Clients,
    op: &'static str,
    dir: &str,
    from: &str,
    limit: u32,
) -> Result<Vec<Entry>, Error> {
    let req = ListEntriesRequest {
        directory: dir.to_string(),
        start_from_file_name: from.to_string(),
        inclusive_start_from: true,
        limit,
        omit_chunks: true,
        ..Default::default()
    };
    list_page(clients, op, dir, req).await
}

/// The content of the file at `path`; `Ok(None)` only when it definitely does not exist.
pub(crate) async fn get(clients: &Clients, path: &str) -> Result<Option<Bytes>, Error> {
    let (dir, name) = split_path(path)?;
    let Some(entry) = lookup(clients, "filer.get", dir, name).await? else {
        return Ok(None);
    };
    if entry.is_directory {
        return Err(Error::Corrupt {
            path: path.to_string(),
            why: "is a directory, expected a file".into(),
        });
    }
    if !entry.chunks.is_empty() && entry.content.is_empty() {
        return Err(Error::Corrupt {
            path: path.to_string(),
            why: "content is stored in volume chunks, not inline; kelp only writes inline entries"
                .into(),
        });
    }
    Ok(Some(entry.content))
}

/// Create or overwrite the file at `path` with `content` (kept inline in the filer's
/// metadata store); missing parent directories are created by the filer. With `exclusive`,
/// an existing entry is left alone and `Ok(false)` returned.
pub(crate) async fn put(
    clients: &Clients,
    path: &str,
    content: &[u8],
    exclusive: bool,
) -> Result<bool, Error> {
    let op = if exclusive { "filer.create" } else { "filer.put" };
    let (dir, name) = split_path(path)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let entry = Entry {
        name: name.to_string(),
        is_directory: false,
        chunks: Vec::new(),
        attributes: Some(FuseAttributes {
            file_size: content.len() as u64,
            mtime: now,
            file_mode: 0o644,
            crtime: now,
            ..Default::default()
        }),
        content: Bytes::copy_from_slice(content),
        ..Default::default()
    };
    let req = CreateEntryRequest {
        directory: dir.to_string(),
        entry: Some(entry),
        o_excl: exclusive,
        ..Default::default()
    };
    let timeout = clients.call_timeout;
    let (_, mut client) = clients.filer().await?;
    let resp = call(timeout, client.create_entry(request(req, timeout)))
        .await
        .map_err(|f| fail(clients, f, op, path))?;
    if resp.error.is_empty() {
        return Ok(true);
    }
    if exclusive && resp.error_code == FilerError::EntryAlreadyExists as i32 {
        return Ok(false);
    }
    Err(Error::Filer {
        op,
        path: path.to_string(),
        code: UpstreamCode::FailedPrecondition,
        message: format!("{} (filer error {})", resp.error, resp.error_code),
    })
}

/// Delete the entry at `path`, with everything under it if it is a directory. Deleting
/// something that does not exist succeeds.
pub(crate) async fn delete(clients: &Clients, path: &str) -> Result<(), Error> {
    let (dir, name) = split_path(path)?;
    delete_in(clients, "filer.delete", dir, name).await
}

pub(crate) async fn delete_in(
    clients: &Clients,
    op: &'static str,
    dir: &str,
    name: &str,
) -> Result<(), Error> {
    let path = join(dir, name);
    let req = DeleteEntryRequest {
        directory: dir.to_string(),
        name: name.to_string(),
        is_delete_data: true,
        is_recursive: true,
        ignore_recursive_error: false,
        ..Default::default()
    };
    let timeout = clients.call_timeout;
    let (_, mut client) = clients.filer().await?;
    let resp = call(timeout, client.delete_entry(request(req, timeout)))
        .await
        .map_err(|f| fail(clients, f, op, &path))?;
    if resp.error.is_empty() {
        Ok(())
    } else {
        Err(Error::Filer { op, path, code: UpstreamCode::FailedPrecondition, message: resp.error })
    }
}

/// Names of the entries in `dir` (files and directories). A missing directory lists as empty.
pub(crate) async fn list(clients: &Clients, dir: &str) -> Result<Vec<String>, Error> {
    let dir = if dir.len() > 1 { dir.trim_end_matches('/') } else { dir };
    Ok(list_all(clients, "filer.list", dir, "").await?.into_iter().map(|e| e.name).collect())
}

/// Take (empty `token`) or renew the lock `name` for `seconds`, as `owner`.
///
/// How SeaweedFS 4.48's lock manager answers (`weed/cluster/lock_manager`, checked against the
/// running filer by tests/group_ownership.rs): the lock lives in the memory of the filer the
/// name hashes to, with an expiry on that filer's clock (`now + seconds` when the call
/// arrives). A free or expired lock is granted to an empty token; a live one is renewed only
/// with its current token, and every grant or renewal hands out a new token. A refusal comes
/// in the body (`error`), with `lock_owner` set when a live lock is held under another token.
/// kelp reads only those fields, never the error text.
pub(crate) async fn lock(
    clients: &Clients,
    name: &str,
    seconds: i64,
    token: &str,
    owner: &str,
) -> Result<LockAnswer, Error> {
    let op = if token.is_empty() { "filer.lock" } else { "filer.renew_lock" };
    let req = LockRequest {
        name: name.to_string(),
        seconds_to_lock: seconds,
        renew_token: token.to_string(),
        is_moved: false,
        owner: owner.to_string(),
    };
    let timeout = clients.call_timeout;
    let (_, mut client) = clients.filer().await?;
    let resp = call(timeout, client.distributed_lock(request(req, timeout)))
        .await
        .map_err(|f| fail(clients, f, op, name))?;
    Ok(if resp.error.is_empty() && !resp.renew_token.is_empty() {
        LockAnswer::Granted { token: resp.renew_token }
    } else if !resp.lock_owner.is_empty() {
        LockAnswer::HeldBy(resp.lock_owner)
    } else {
        LockAnswer::Refused(resp.error)
    })
}

/// Release the lock `name` held with `token`. Releasing a lock that already expired
/// succeeds; a lock held under another token is left alone (an error).
pub(crate) async fn unlock(clients: &Clients, name: &str, token: &str) -> Result<(), Error> {
    let op = "filer.unlock";
    let req =
        UnlockRequest { name: name.to_string(), renew_token: token.to_string(), is_moved: false };
    let timeout = clients.call_timeout;
    let (_, mut client) = clients.filer().await?;
    let resp = call(timeout, client.distributed_unlock(request(req, timeout)))
        .await
        .map_err(|f| fail(clients, f, op, name))?;
    if resp.error.is_empty() {
        Ok(())
    } else {
        Err(Error::Filer {
            op,
            path: name.to_string(),
            code: UpstreamCode::FailedPrecondition,
            message: resp.error,
        })
    }
}

/// The owner string of the live lock `name`; `Ok(None)` when nobody holds it (the filer
/// answers NOT_FOUND for a missing or expired lock).
pub(crate) async fn lock_owner(clients: &Clients, name: &str) -> Result<Option<String>, Error> {
    let op = "filer.lock_owner";
    let req = FindLockOwnerRequest { name: name.to_string(), is_moved: false };
    let timeout = clients.call_timeout;
    let (_, mut client) = clients.filer().await?;
    match call(timeout, client.find_lock_owner(request(req, timeout))).await {
        Ok(resp) => Ok(Some(resp.owner)),
        Err(Failure::Status(s)) if s.code() == Code::NotFound => Ok(None),
        Err(f) => Err(fail(clients, f, op, name)),
    }
}

/// One round trip to the filer, for readiness.
pub(crate) async fn ping(clients: &Clients) -> Result<(), Error> {
    lookup(clients, "filer.ping", "/", "topics").await.map(|_| ())
}

fn fail(clients: &Clients, f: Failure, op: &'static str, path: &str) -> Error {
    if f.is_transport() {
        clients.forget_filer();
    }
    f.into_filer(op, path)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split_path("/kelp/groups/g").unwrap(), ("/kelp/groups", "g"));
        assert_eq!(split_path("/top").unwrap(), ("/", "top"));
        assert_eq!(split_path("/kelp/dir/").unwrap(), ("/kelp", "dir"));
        assert!(split_path("relative/x").is_err());
        assert!(split_path("/").is_err());
        assert!(split_path("").is_err());
    }

    #[test]
    fn join_does_not_double_slashes() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
