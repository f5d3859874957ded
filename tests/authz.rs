//! Who may change the cluster, against a real SeaweedFS with librdkafka's admin client
//! (docs/security.md): with SASL on only super-users create and delete topics, add
//! partitions, delete groups and offsets, alter quotas and auto-create topics, and the others
//! get Kafka's authorization errors with nothing changed; `--admin-apis false` refuses them
//! to everyone on that kelp, with or without SASL; and a group owned by another kelp is
//! decided by the kelp the application talks to, before the request is forwarded.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kelp::embedded::SeaweedFs;
use kelp::seaweed::{Seaweed, SeaweedOptions, layout};
use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication, TopicResult,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use common::kelp::Kelp;
use common::raw::Raw;

const USERS: &str = "users:
  admin:
    password: admin-secret
    super-user: true
  app:
    password: app-secret
";

const TIMEOUT: Duration = Duration::from_secs(30);

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn users_file() -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(USERS.as_bytes()).expect("write users file");
    f.flush().expect("flush");
    f
}

fn path_of(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().expect("utf-8 temp path")
}

/// A librdkafka client of `kelp`, logged in as `user` (SCRAM-SHA-512) when `user` is set.
fn client(kelp: &Kelp, user: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kelp.bootstrap()).set("message.timeout.ms", "15000");
    if let Some(user) = user {
        c.set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", format!("{user}-secret"));
    }
    c
}

fn admin(config: &ClientConfig) -> AdminClient<DefaultClientContext> {
    config.create().expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT))
}

/// The outcome for the one topic or group of an admin call (`GroupResult` is the same type).
fn one(results: Result<Vec<TopicResult>, KafkaError>) -> Result<(), RDKafkaErrorCode> {
    let mut results = results.expect("the admin call completes");
    assert_eq!(results.len(), 1);
    results.pop().expect("one result").map(drop).map_err(|(_, code)| code)
}

async fn create_topic(
    a: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<(), RDKafkaErrorCode> {
    one(a.create_topics(&[NewTopic::new(topic, 2, TopicReplication::Fixed(1))], &opts()).await)
}

async fn delete_topic(
    a: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<(), RDKafkaErrorCode> {
    one(a.delete_topics(&[topic], &opts()).await)
}

async fn add_partitions(
    a: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<(), RDKafkaErrorCode> {
    one(a.create_partitions(&[NewPartitions::new(topic, 4)], &opts()).await)
}

async fn delete_group(
    a: &AdminClient<DefaultClientContext>,
    group: &str,
) -> Result<(), RDKafkaErrorCode> {
    one(a.delete_groups(&[group], &opts()).await)
}

/// Every topic and its partition count, as `a` sees them (a Metadata request for all
/// topics, which never creates one).
fn topics(a: &AdminClient<DefaultClientContext>) -> BTreeMap<String, usize> {
    let m = a.inner().fetch_metadata(None, TIMEOUT).expect("metadata");
    m.topics().iter().map(|t| (t.name().to_string(), t.partitions().len())).collect()
}

/// Commit `offset` for partition 0 of `topic` in `group` (a standalone commit).
fn commit(config: &ClientConfig, group: &str, topic: &str, offset: i64) {
    let c: BaseConsumer = config.clone().set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset)).expect("offset");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// The offset committed for partition 0 of `topic` in `group`, if any.
fn committed(config: &ClientConfig, group: &str, topic: &str) -> Option<i64> {
    let c: BaseConsumer = config.clone().set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, TIMEOUT).expect("committed offsets");
    match got.find_partition(topic, 0).expect("partition 0").offset() {
        Offset::Offset(n) => Some(n),
        _ => None,
    }
}

/// A raw connection logged in as `user` with PLAIN.
async fn raw_as(kelp: &Kelp, user: &str) -> Raw {
    let mut c = Raw::connect(kelp.addr).await;
    let req = SaslHandshakeRequest::default().with_mechanism(s("PLAIN"));
    let ResponseKind::SaslHandshake(r) =
        c.call(ApiKey::SaslHandshake, 1, RequestKind::SaslHandshake(req)).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    let token = Bytes::from(format!("\0{user}\0{user}-secret"));
    let req = SaslAuthenticateRequest::default().with_auth_bytes(token);
    let ResponseKind::SaslAuthenticate(r) =
        c.call(ApiKey::SaslAuthenticate, 2, RequestKind::SaslAuthenticate(req)).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0, "{user} logs in");
    c
}

/// Metadata v12 for `topic`, allowing auto-creation: (error code, partitions).
async fn auto_create(c: &mut Raw, topic: &str) -> (i16, usize) {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
        ]))
        .with_allow_auto_topic_creation(true);
    let ResponseKind::Metadata(r) = c.call(ApiKey::Metadata, 12, RequestKind::Metadata(req)).await
    else {
        panic!()
    };
    (r.topics[0].error_code, r.topics[0].partitions.len())
}

/// AlterClientQuotas v1 setting a produce rate for client id `client`: (code, message).
async fn alter_quota(c: &mut Raw, client: &str) -> (i16, Option<String>) {
    let req = AlterClientQuotasRequest::default().with_entries(vec![
        EntryData::default()
            .with_entity(vec![
                EntityData::default()
                    .with_entity_type(s("client-id"))
                    .with_entity_name(Some(s(client))),
            ])
            .with_ops(vec![OpData::default().with_key(s("producer_byte_rate")).with_value(4096.0)]),
    ]);
    let ResponseKind::AlterClientQuotas(r) =
        c.call(ApiKey::AlterClientQuotas, 1, RequestKind::AlterClientQuotas(req)).await
    else {
        panic!()
    };
    (r.entries[0].error_code, r.entries[0].error_message.as_ref().map(|m| m.to_string()))
}

/// IncrementalAlterConfigs v1 setting `segment.ms` on `topic`: (code, message).
async fn alter_config(c: &mut Raw, topic: &str) -> (i16, Option<String>) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(s("segment.ms"))
                    .with_config_operation(0)
                    .with_value(Some(s("1000"))),
            ]),
    ]);
    let ResponseKind::IncrementalAlterConfigs(r) =
        c.call(ApiKey::IncrementalAlterConfigs, 1, RequestKind::IncrementalAlterConfigs(req)).await
    else {
        panic!()
    };
    (r.responses[0].error_code, r.responses[0].error_message.as_ref().map(|m| m.to_string()))
}

/// The source DescribeConfigs reports for `topic`'s `segment.ms` (1: set, 5: default).
async fn segment_ms_source(c: &mut Raw, topic: &str) -> i8 {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configuration_keys(Some(vec![s("segment.ms")])),
    ]);
    let ResponseKind::DescribeConfigs(r) =
        c.call(ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(req)).await
    else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0);
    r.results[0].configs[0].config_source
}

/// How many quotas DescribeClientQuotas reports for client id `client`.
async fn quotas_of(c: &mut Raw, client: &str) -> usize {
    let req = DescribeClientQuotasRequest::default().with_components(vec![
        ComponentData::default()
            .with_entity_type(s("client-id"))
            .with_match_type(0)
            .with_match(Some(s(client))),
    ]);
    let ResponseKind::DescribeClientQuotas(r) =
        c.call(ApiKey::DescribeClientQuotas, 1, RequestKind::DescribeClientQuotas(req)).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    r.entries.unwrap_or_default().iter().map(|e| e.values.len()).sum()
}

/// OffsetDelete v0 for partition 0 of `topic` in `group`: the top-level error code.
async fn offset_delete(c: &mut Raw, group: &str, topic: &str) -> i16 {
    let req = OffsetDeleteRequest::default().with_group_id(GroupId(s(group))).with_topics(vec![
        OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
    ]);
    let ResponseKind::OffsetDelete(r) =
        c.call(ApiKey::OffsetDelete, 0, RequestKind::OffsetDelete(req)).await
    else {
        panic!()
    };
    r.error_code
}

use RDKafkaErrorCode::{GroupAuthorizationFailed, TopicAuthorizationFailed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_super_users_change_the_cluster_and_the_others_change_nothing() {
    let seaweedfs = common::seaweedfs().await;
    let users = users_file();
    let kelp = Kelp::start(&seaweedfs, &["--sasl-users-file", path_of(&users)]).await;
    let (root, app) = (client(&kelp, Some("admin")), client(&kelp, Some("app")));
    let (root_admin, app_admin) = (admin(&root), admin(&app));
    let kept = common::unique_name("kept");
    let never = common::unique_name("never");
    let group = common::unique_name("group");

    // The super-user creates a topic; the application commits an offset in a group.
    create_topic(&root_admin, &kept).await.expect("a super-user creates topics");
    commit(&app, &group, &kept, 5);

    // The application may do none of the cluster-wide things.
    assert_eq!(create_topic(&app_admin, &never).await, Err(TopicAuthorizationFailed));
    assert_eq!(delete_topic(&app_admin, &kept).await, Err(TopicAuthorizationFailed));
    assert_eq!(add_partitions(&app_admin, &kept).await, Err(TopicAuthorizationFailed));
    assert_eq!(delete_group(&app_admin, &group).await, Err(GroupAuthorizationFailed));
    let mut raw = raw_as(&kelp, "app").await;
    assert_eq!(
        offset_delete(&mut raw, &group, &kept).await,
        ResponseError::GroupAuthorizationFailed.code()
    );
    let quota_client = common::unique_name("quota-client");
    let (code, message) = alter_quota(&mut raw, &quota_client).await;
    assert_eq!(code, ResponseError::ClusterAuthorizationFailed.code());
    assert_eq!(message.as_deref(), Some("only super-users may change the cluster"));
    let (code, message) = alter_config(&mut raw, &kept).await;
    assert_eq!(code, ResponseError::TopicAuthorizationFailed.code());
    assert_eq!(message.as_deref(), Some("only super-users may change the cluster"));
    assert_eq!(segment_ms_source(&mut raw, &kept).await, 5, "no config stored");
    let auto = common::unique_name("auto");
    assert_eq!(
        auto_create(&mut raw, &auto).await,
        (ResponseError::TopicAuthorizationFailed.code(), 0)
    );

    // ...and nothing changed.
    let now = topics(&root_admin);
    assert_eq!(now.get(&kept), Some(&2), "still there, with its partitions: {now:?}");
    assert!(!now.contains_key(&never) && !now.contains_key(&auto), "nothing created: {now:?}");
    assert_eq!(committed(&app, &group, &kept), Some(5), "group and offsets kept");
    assert_eq!(quotas_of(&mut raw, &quota_client).await, 0, "no quota stored");

    // A librdkafka producer of the application cannot auto-create a topic either.
    let producer: FutureProducer = app.create().expect("producer");
    let err = producer
        .send(FutureRecord::<(), str>::to(&auto).payload("x"), Duration::from_secs(15))
        .await
        .map(|d| d.offset)
        .map_err(|(e, _)| e.rdkafka_error_code())
        .expect_err("produced to a topic it may not create");
    assert_eq!(err, Some(TopicAuthorizationFailed));
    assert!(!topics(&root_admin).contains_key(&auto));

    // The super-user may do all of it.
    let mut raw = raw_as(&kelp, "admin").await;
    assert_eq!(auto_create(&mut raw, &auto).await, (0, 1), "auto-created");
    assert_eq!(alter_quota(&mut raw, &quota_client).await.0, 0);
    assert_eq!(quotas_of(&mut raw, &quota_client).await, 1);
    assert_eq!(alter_config(&mut raw, &kept).await.0, 0);
    assert_eq!(segment_ms_source(&mut raw, &kept).await, 1, "config stored");
    assert_eq!(offset_delete(&mut raw, &group, &kept).await, 0);
    assert_eq!(committed(&app, &group, &kept), None, "offset deleted");
    commit(&app, &group, &kept, 7);
    delete_group(&root_admin, &group).await.expect("a super-user deletes groups");
    assert_eq!(committed(&app, &group, &kept), None, "group deleted");
    delete_topic(&root_admin, &kept).await.expect("a super-user deletes topics");
    assert!(!topics(&root_admin).contains_key(&kept));

    let scraped = kelp::metrics::global().render();
    for api in [
        "CreateTopics",
        "DeleteTopics",
        "CreatePartitions",
        "DeleteGroups",
        "Metadata",
        "IncrementalAlterConfigs",
    ] {
        assert!(
            scraped.contains(&format!("kelp_authorization_refusals_total{{api=\"{api}\"}}")),
            "{api}: {scraped}"
        );
    }
    kelp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admin_apis_off_a_kelp_refuses_them_to_everyone() {
    let seaweedfs = common::seaweedfs().await;
    let users = users_file();
    let open = Kelp::start(&seaweedfs, &[]).await;
    let off = Kelp::start(&seaweedfs, &["--admin-apis", "false"]).await;
    let off_sasl =
        Kelp::start(&seaweedfs, &["--admin-apis", "false", "--sasl-users-file", path_of(&users)])
            .await;
    let kept = common::unique_name("kept");
    let never = common::unique_name("never");
    let group = common::unique_name("group");
    let open_admin = admin(&client(&open, None));
    create_topic(&open_admin, &kept).await.expect("created where the APIs are on");
    commit(&client(&open, None), &group, &kept, 3);

    // Without SASL, and with SASL as a super-user: refused all the same.
    for (kelp, user) in [(&off, None), (&off_sasl, Some("admin"))] {
        let a = admin(&client(kelp, user));
        assert_eq!(create_topic(&a, &never).await, Err(TopicAuthorizationFailed), "{user:?}");
        assert_eq!(delete_topic(&a, &kept).await, Err(TopicAuthorizationFailed), "{user:?}");
        assert_eq!(add_partitions(&a, &kept).await, Err(TopicAuthorizationFailed), "{user:?}");
        assert_eq!(delete_group(&a, &group).await, Err(GroupAuthorizationFailed), "{user:?}");
    }
    let mut raw = Raw::connect(off.addr).await;
    let (code, message) = alter_quota(&mut raw, "someone").await;
    assert_eq!(code, ResponseError::ClusterAuthorizationFailed.code());
    assert_eq!(message.as_deref(), Some("cluster-wide APIs are turned off on this kelp"));
    let (code, message) = alter_config(&mut raw, &kept).await;
    assert_eq!(code, ResponseError::TopicAuthorizationFailed.code());
    assert_eq!(message.as_deref(), Some("cluster-wide APIs are turned off on this kelp"));
    assert_eq!(segment_ms_source(&mut raw, &kept).await, 5, "no config stored");
    let auto = common::unique_name("auto");
    assert_eq!(
        auto_create(&mut raw, &auto).await.0,
        ResponseError::TopicAuthorizationFailed.code()
    );
    // Reading and writing records is not affected.
    let (code, partitions) = auto_create(&mut raw, &kept).await;
    assert_eq!((code, partitions), (0, 2), "an existing topic is described as usual");

    // Nothing changed.
    let now = topics(&open_admin);
    assert_eq!(now.get(&kept), Some(&2), "{now:?}");
    assert!(!now.contains_key(&never) && !now.contains_key(&auto), "{now:?}");
    assert_eq!(committed(&client(&open, None), &group, &kept), Some(3));

    // The setting is per kelp: the open one still may.
    delete_group(&open_admin, &group).await.expect("group deleted where the APIs are on");
    delete_topic(&open_admin, &kept).await.expect("topic deleted where the APIs are on");
    for kelp in [open, off, off_sasl] {
        kelp.stop().await;
    }
}

/// The peer address of the kelp that owns `group` now, if any.
async fn owner_of(seaweedfs: &SeaweedFs, group: &str) -> Option<String> {
    let a = seaweedfs.addrs();
    let opts = SeaweedOptions {
        master: a.master.clone(),
        filer: Some(a.filer.clone()),
        namespace: "kafka".into(),
        call_timeout: Duration::from_secs(5),
    };
    let sw = Seaweed::connect(opts).await.expect("options are valid");
    let owner = sw
        .filer_lock_owner(&layout::group_owner_lock(layout::DEFAULT_FILER_ROOT, group))
        .await
        .expect("the filer answers");
    owner.map(|o| o.split(' ').next().expect("peer address").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_owned_elsewhere_is_decided_where_the_application_connects() {
    let seaweedfs = common::seaweedfs().await;
    let users = users_file();
    let sasl = ["--sasl-users-file", path_of(&users), "--peer-listen", "127.0.0.1:0"];
    // The group will live at `owner`, which serves no cluster-wide API to its own clients.
    let owner =
        Kelp::start(&seaweedfs, &[&sasl[..], &["--admin-apis", "false"][..]].concat()).await;
    let other = Kelp::start(&seaweedfs, &sasl).await;
    let topic = common::unique_name("topic");
    let group = common::unique_name("group");
    create_topic(&admin(&client(&other, Some("admin"))), &topic).await.expect("created");

    // A live member through `owner` makes it the group's owner.
    let member: BaseConsumer = client(&owner, Some("app"))
        .set("group.id", &group)
        .set("session.timeout.ms", "30000")
        .create()
        .expect("consumer");
    member.subscribe(&[&topic]).expect("subscribe");
    common::eventually(|| {
        let _ = member.poll(Duration::from_millis(100));
        let assigned = member.assignment().map(|a| a.count()).unwrap_or(0);
        std::future::ready(if assigned > 0 { Ok(()) } else { Err("no assignment yet") })
    })
    .await;
    assert_eq!(owner_of(&seaweedfs, &group).await, Some(owner.peer.unwrap().to_string()));

    // `other` refuses its non-super-user before forwarding; were it forwarded, the owner
    // would have answered NON_EMPTY_GROUP.
    let via_other = admin(&client(&other, Some("app")));
    assert_eq!(delete_group(&via_other, &group).await, Err(GroupAuthorizationFailed));
    let mut raw = raw_as(&other, "app").await;
    assert_eq!(
        offset_delete(&mut raw, &group, &topic).await,
        ResponseError::GroupAuthorizationFailed.code()
    );
    // `owner` refuses even a super-user of its own clients.
    let at_owner = admin(&client(&owner, Some("admin")));
    assert_eq!(delete_group(&at_owner, &group).await, Err(GroupAuthorizationFailed));
    // A super-user through `other` is forwarded, and the owner answers on its merits.
    let root_via_other = admin(&client(&other, Some("admin")));
    assert_eq!(delete_group(&root_via_other, &group).await, Err(RDKafkaErrorCode::NonEmptyGroup));
    drop(member);
    common::eventually(|| {
        let a = &root_via_other;
        let group = &group;
        async move { delete_group(a, group).await }
    })
    .await;
    owner.stop().await;
    other.stop().await;
}
