//! Who may change the cluster as a whole: the rule, the list of APIs it governs, and the
//! refusal each of them gets.
//!
//! The rule is Kafka's, with super-users as the only grant (kelp has no ACLs):
//!
//! 1. `KELP_ADMIN_APIS=false`: nobody, through this kelp, SASL or not, super-users included.
//! 2. Otherwise, SASL off: everyone, as on a Kafka broker without an authorizer.
//! 3. SASL on: the users marked `super-user: true` in the users file (Kafka's `super.users`).
//!
//! Cluster-wide are the APIs in [`CLUSTER_WIDE`], and Metadata's auto-creation of a missing
//! topic: Kafka grants auto-creation only with CREATE on the cluster or on the topic, the
//! right CreateTopics needs, so kelp grants it by the same rule (`api::metadata`). Everything
//! else (producing, fetching, the group protocol, committing and fetching offsets, the
//! describe and list APIs) is open to every client that is logged in.
//!
//! Refusals carry Kafka's code at the level Kafka sets it (`KafkaApis`):
//! TOPIC_AUTHORIZATION_FAILED per topic (CreateTopics, DeleteTopics, CreatePartitions, and
//! per topic Metadata would have created), GROUP_AUTHORIZATION_FAILED per group (DeleteGroups)
//! or for the request's one group (OffsetDelete, top-level), CLUSTER_AUTHORIZATION_FAILED per
//! entry (AlterClientQuotas), TOPIC_AUTHORIZATION_FAILED per topic and
//! CLUSTER_AUTHORIZATION_FAILED per other resource (AlterConfigs, IncrementalAlterConfigs);
//! with a message where the version has the field. A refusal is
//! built from the request alone: nothing is read from or written to SeaweedFS. For
//! DeleteTopics by id (v6+) that means the topic's name is not looked up, and an unknown id
//! is refused too rather than answered UNKNOWN_TOPIC_ID.
//!
//! Where it is decided: `connection` asks the `Session` for each request's [`Authority`] and
//! passes it down. `api::dispatch` refuses before any handler runs, and `routing` refuses
//! before it forwards a group request to the group's owner, so the kelp the application talks
//! to decides, under its own settings. A request that arrives over the peer link carries
//! [`Authority::Forwarded`]: the kelp that forwarded it decided already.
//!
//! Owns: the rule and [`CLUSTER_WIDE`]. Does not own: who the user is (`session`, `sasl`),
//! the refusal each API answers (`api::refusal`, built from each API's own `error`), or what
//! the APIs do (`api`).
//!
//! When adding a cluster-wide API: add its key to [`CLUSTER_WIDE`] and its arm to
//! `api::refusal::refusal` (a test checks that the two agree), and document it in
//! docs/security.md.

use kafka_protocol::messages::ApiKey;

use crate::protocol::versions;

/// The APIs that change the cluster as a whole, each refused by [`refusal`] to a client
/// without the right. Metadata is not among them: only its auto-creation is refused.
pub const CLUSTER_WIDE: &[ApiKey] = &[
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::AlterClientQuotas,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
];

/// What the client behind one request may do to the cluster as a whole. Small and `Copy`:
/// the handlers get this, never the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// It may: SASL is off, or it logged in as a super-user.
    Granted,
    /// It came over the peer link: the kelp that forwarded it decided already.
    Forwarded,
    /// It may not: this kelp serves the cluster-wide APIs to no one (`KELP_ADMIN_APIS`).
    Disabled,
    /// It may not: SASL is on and its user is not a super-user.
    NotSuperUser,
}

/// Who is asking, as far as the rule cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// SASL is off: the client is not known, as to a Kafka broker without an authorizer.
    Anonymous,
    /// SASL is on; `super_user` as the users file says now (false before logging in).
    User { super_user: bool },
}

impl Authority {
    /// THE rule: `admin_apis` is `KELP_ADMIN_APIS`.
    pub fn decide(admin_apis: bool, caller: Caller) -> Authority {
        match (admin_apis, caller) {
            (false, _) => Authority::Disabled,
            (true, Caller::Anonymous | Caller::User { super_user: true }) => Authority::Granted,
            (true, Caller::User { super_user: false }) => Authority::NotSuperUser,
        }
    }

    /// `Ok` when the client may change the cluster; otherwise the reason, as told to it.
    pub fn check(self) -> Result<(), &'static str> {
        match self {
            Authority::Granted | Authority::Forwarded => Ok(()),
            Authority::Disabled => Err("cluster-wide APIs are turned off on this kelp"),
            Authority::NotSuperUser => Err("only super-users may change the cluster"),
        }
    }

    /// Whether the client may change the cluster.
    pub fn may_alter_cluster(self) -> bool {
        self.check().is_ok()
    }
}

/// Count and log one refused request (for Metadata: one that asked to create topics).
pub fn refused(key: ApiKey, authority: Authority) {
    let api = versions::name(key);
    tracing::debug!(api, ?authority, "refused: no right to change the cluster");
    crate::metrics::global().observe_refusal(api);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_super_users_may_and_the_switch_stops_everyone() {
        use Authority::*;
        use Caller::*;
        let table = [
            (true, Anonymous, Granted),
            (true, User { super_user: true }, Granted),
            (true, User { super_user: false }, NotSuperUser),
            (false, Anonymous, Disabled),
            (false, User { super_user: true }, Disabled),
            (false, User { super_user: false }, Disabled),
        ];
        for (admin_apis, caller, want) in table {
            let got = Authority::decide(admin_apis, caller);
            assert_eq!(got, want, "admin_apis={admin_apis} {caller:?}");
            assert_eq!(got.may_alter_cluster(), want == Granted);
        }
        assert!(Forwarded.may_alter_cluster(), "decided by the kelp that forwarded it");
    }
}
