//! Topic configs against a real SeaweedFS: checked on CreateTopics, stored in the filer and
//! seen by every kelp, described with their source, changed by AlterConfigs and
//! IncrementalAlterConfigs, refused with INVALID_CONFIG where kelp cannot honour them, and
//! `max.message.bytes` enforced per topic by the kelp a producer talks to.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use common::kelp::Kelp;
use common::raw::Raw;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn topic(name: &str, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(1)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(n, v)| {
                    CreatableTopicConfig::default().with_name(s(n)).with_value(Some(s(v)))
                })
                .collect(),
        )
}

async fn create(
    addr: SocketAddr,
    validate_only: bool,
    topics: Vec<CreatableTopic>,
) -> Vec<CreatableTopicResult> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only)
        .with_topics(topics);
    let mut c = Raw::connect(addr).await;
    match c.call(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(req)).await {
        ResponseKind::CreateTopics(r) => r.topics,
        other => panic!("unexpected {other:?}"),
    }
}

/// Every config of `topic` as (value, source), or the error code.
async fn describe(addr: SocketAddr, topic: &str) -> Result<Vec<(String, String, i8)>, i16> {
    let req = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
        DescribeConfigsResource::default().with_resource_type(2).with_resource_name(s(topic)),
    ]);
    let mut c = Raw::connect(addr).await;
    let ResponseKind::DescribeConfigs(r) =
        c.call(ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(req)).await
    else {
        panic!()
    };
    let r = &r.results[0];
    if r.error_code != 0 {
        return Err(r.error_code);
    }
    Ok(r.configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map_or(String::new(), |v| v.to_string()),
                c.config_source,
            )
        })
        .collect())
}

async fn config(addr: SocketAddr, topic: &str, name: &str) -> (String, i8) {
    let all = describe(addr, topic).await.expect("topic described");
    let (_, v, source) = all.into_iter().find(|(n, ..)| n == name).expect("config described");
    (v, source)
}

/// One IncrementalAlterConfigs v1 of one resource; its (code, message).
async fn alter(
    addr: SocketAddr,
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    let configs = ops
        .iter()
        .map(|(n, op, v)| {
            AlterableConfig::default()
                .with_name(s(n))
                .with_config_operation(*op)
                .with_value(v.map(s))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(configs),
        ]);
    let mut c = Raw::connect(addr).await;
    let ResponseKind::IncrementalAlterConfigs(r) =
        c.call(ApiKey::IncrementalAlterConfigs, 1, RequestKind::IncrementalAlterConfigs(req)).await
    else {
        panic!()
    };
    let r = &r.responses[0];
    (r.error_code, r.error_message.as_ref().map_or(String::new(), |m| m.to_string()))
}

fn batch(bytes: usize) -> Bytes {
    common::raw::batch_of(vec![(None, Bytes::from(vec![b'x'; bytes]), 1_700_000_000_000)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_are_checked_stored_altered_and_enforced_on_every_kelp() {
    let seaweedfs = common::seaweedfs().await;
    let args = ["--peer-listen", "127.0.0.1:0"];
    let a = Kelp::start(&seaweedfs, &args).await;
    let b = Kelp::start(&seaweedfs, &args).await;
    let t = common::unique_name("cfg");
    let invalid = ResponseError::InvalidConfig.code();

    // What kelp cannot honour, unknown names and bad values: INVALID_CONFIG naming the reason;
    // nothing is created.
    let refused = create(
        a.addr,
        false,
        vec![
            topic(&format!("{t}-ret"), &[("retention.ms", "86400000")]),
            topic(&format!("{t}-bytes"), &[("retention.bytes", "1000000")]),
            topic(&format!("{t}-compact"), &[("cleanup.policy", "compact,delete")]),
            topic(&format!("{t}-unknown"), &[("no.such.config", "1")]),
            topic(&format!("{t}-bad"), &[("max.message.bytes", "lots")]),
            topic(&format!("{t}-lat"), &[("message.timestamp.type", "LogAppendTime")]),
        ],
    )
    .await;
    let want = [
        "deletes nothing",
        "marker records",
        "does not compact",
        "Unknown topic config name",
        "lots",
        "LogAppendTime",
    ];
    for (r, why) in refused.iter().zip(want) {
        assert_eq!(r.error_code, invalid, "{}: {:?}", r.name.as_str(), r.error_message);
        let msg = r.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
        assert!(msg.contains(why), "{}: {msg}", r.name.as_str());
        assert_eq!(
            describe(a.addr, r.name.as_str()).await,
            Err(ResponseError::UnknownTopicOrPartition.code()),
            "{} not created",
            r.name.as_str()
        );
    }

    // validate_only: checked and answered with the configs, nothing created.
    let checked = create(a.addr, true, vec![topic(&t, &[("max.message.bytes", "2000")])]).await;
    assert_eq!(checked[0].error_code, 0, "{:?}", checked[0].error_message);
    assert_eq!(describe(a.addr, &t).await, Err(ResponseError::UnknownTopicOrPartition.code()));

    // Created with two configs: answered with them, described as DYNAMIC_TOPIC_CONFIG by the
    // other kelp; the rest keep their defaults.
    let created = create(
        a.addr,
        false,
        vec![topic(&t, &[("max.message.bytes", "2000"), ("segment.ms", "1000")])],
    )
    .await;
    assert_eq!(created[0].error_code, 0, "{:?}", created[0].error_message);
    let configs = created[0].configs.as_ref().expect("v7 answers carry configs");
    let max = configs.iter().find(|c| c.name.as_str() == "max.message.bytes").unwrap();
    assert_eq!(
        (max.value.as_ref().map(|v| v.to_string()), max.config_source),
        (Some("2000".into()), 1)
    );
    assert_eq!(config(b.addr, &t, "max.message.bytes").await, ("2000".into(), 1));
    assert_eq!(config(b.addr, &t, "segment.ms").await, ("1000".into(), 1));
    assert_eq!(config(b.addr, &t, "retention.ms").await, ("-1".into(), 5));
    assert_eq!(config(b.addr, &t, "cleanup.policy").await, ("delete".into(), 5));

    // max.message.bytes is enforced by the kelp the producer talks to.
    let ok = common::raw::produce(b.addr, &t, vec![(0, batch(1000))]).await;
    assert_eq!(ok[0].error_code, 0, "{:?}", ok[0].error_message);
    assert_eq!((ok[0].base_offset, ok[0].log_start_offset), (0, 0));
    let big = common::raw::produce(b.addr, &t, vec![(0, batch(3000))]).await;
    assert_eq!(big[0].error_code, ResponseError::MessageTooLarge.code());
    assert_eq!(big[0].log_start_offset, -1);

    // Lowered through one kelp, the other refuses a batch it accepted before, soon.
    assert_eq!(alter(a.addr, 2, &t, &[("max.message.bytes", SET, Some("500"))], false).await.0, 0);
    common::eventually(|| async {
        let r = common::raw::produce(b.addr, &t, vec![(0, batch(1000))]).await;
        if r[0].error_code == ResponseError::MessageTooLarge.code() {
            Ok(())
        } else {
            Err(r[0].error_code)
        }
    })
    .await;
    assert_eq!(config(b.addr, &t, "max.message.bytes").await, ("500".into(), 1));

    // Refusals of the incremental API, each leaving the configs as they were.
    for (ops, code, why) in [
        (vec![("retention.bytes", SET, Some("1000"))], invalid, "marker records"),
        (vec![("cleanup.policy", APPEND, Some("compact"))], invalid, "does not compact"),
        (vec![("nope.nope", SET, Some("1"))], invalid, "Unknown topic config name"),
        (vec![("max.message.bytes", APPEND, Some("1"))], invalid, "max.message.bytes"),
        (vec![("segment.ms", SET, None)], ResponseError::InvalidRequest.code(), "Null"),
        (
            vec![("segment.ms", SET, Some("1")), ("segment.ms", DELETE, None)],
            ResponseError::InvalidRequest.code(),
            "Duplicate",
        ),
    ] {
        let (got, msg) = alter(a.addr, 2, &t, &ops, false).await;
        assert_eq!(got, code, "{ops:?}: {msg}");
        assert!(msg.contains(why), "{ops:?}: {msg}");
    }
    let (got, _) = alter(a.addr, 2, &t, &[("max.message.bytes", SET, Some("100000"))], true).await;
    assert_eq!(got, 0, "validate_only");
    assert_eq!(
        config(a.addr, &t, "max.message.bytes").await,
        ("500".into(), 1),
        "validate_only stores nothing"
    );
    assert_eq!(config(a.addr, &t, "segment.ms").await, ("1000".into(), 1));
    let (got, _) =
        alter(a.addr, 2, &format!("{t}-missing"), &[("segment.ms", SET, Some("1"))], false).await;
    assert_eq!(got, ResponseError::UnknownTopicOrPartition.code());
    let (got, msg) = alter(a.addr, 4, "1", &[("message.max.bytes", SET, Some("1"))], false).await;
    assert_eq!(got, ResponseError::InvalidRequest.code(), "broker: {msg}");

    // AlterConfigs replaces the whole set: max.message.bytes goes back to the broker's.
    let req = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(&t))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(s("segment.ms"))
                    .with_value(Some(s("2000"))),
            ]),
    ]);
    let mut c = Raw::connect(a.addr).await;
    let ResponseKind::AlterConfigs(r) =
        c.call(ApiKey::AlterConfigs, 2, RequestKind::AlterConfigs(req)).await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0, "{:?}", r.responses[0].error_message);
    assert_eq!(config(a.addr, &t, "segment.ms").await, ("2000".into(), 1));
    let broker_max = a.config.max_message_bytes.to_string();
    assert_eq!(config(a.addr, &t, "max.message.bytes").await, (broker_max, 4));
    common::eventually(|| async {
        let r = common::raw::produce(b.addr, &t, vec![(0, batch(3000))]).await;
        if r[0].error_code == 0 { Ok(()) } else { Err(r[0].error_code) }
    })
    .await;

    // A deleted topic's configs go with it: created again, it has the defaults.
    let mut c = Raw::connect(a.addr).await;
    let req = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s(&t))]);
    let ResponseKind::DeleteTopics(r) =
        c.call(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(req)).await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);
    let again = create(a.addr, false, vec![topic(&t, &[])]).await;
    assert_eq!(again[0].error_code, 0, "{:?}", again[0].error_message);
    assert_eq!(config(b.addr, &t, "segment.ms").await, ("604800000".into(), 5));

    assert!(b.stop().await);
    assert!(a.stop().await);
}

/// kafka-python's admin client: create_topics with topic_configs, describe_configs,
/// alter_configs (incremental and not), and a compacted topic refused.
const KAFKA_PYTHON_ADMIN: &str = r#"
import json, sys
from kafka import KafkaAdminClient
from kafka.admin import NewTopic, ConfigResource, ConfigResourceType
from kafka.errors import InvalidConfigurationError
bootstrap, topic = sys.argv[1:3]
a = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafka-python-admin", request_timeout_ms=30000)
out = {}
a.create_topics([NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": "3000", "segment.ms": "1000"})])
def modified():
    d = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {k: [v["value"], v["config_source"]] for k, v in d["topic"][topic].items()}
out["created"] = modified()
out["incremental"] = str(a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"segment.ms": "5000"})], incremental=True))
out["replace"] = str(a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"segment.bytes": "5000000"})], incremental=False))
out["altered"] = modified()
try:
    a.create_topics([NewTopic(topic + "-compact", 1, 1, topic_configs={"cleanup.policy": "compact"})])
    out["compact"] = "created"
except InvalidConfigurationError as e:
    out["compact"] = "refused: " + str(e)
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_admin_creates_describes_and_alters_topic_configs() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let t = common::unique_name("pyadmin");
    let out = Command::new("python3")
        .args(["-c", KAFKA_PYTHON_ADMIN, &kelp.bootstrap(), &t])
        .output()
        .expect("python3 runs (scripts/install-deps.sh installs kafka-python)");
    assert!(out.status.success(), "kafka-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from the script");
    let dynamic = |value: &str| serde_json::json!([value, "DYNAMIC_TOPIC_CONFIG"]);
    assert_eq!(
        v["created"],
        serde_json::json!({"max.message.bytes": dynamic("3000"), "segment.ms": dynamic("1000")})
    );
    assert_eq!(v["incremental"], serde_json::json!(format!("{{'topic': {{'{t}': 'OK'}}}}")));
    assert_eq!(v["replace"], v["incremental"]);
    // Without IncrementalAlterConfigs the client sends every modified config along, so the
    // replacement keeps the others.
    assert_eq!(
        v["altered"],
        serde_json::json!({
            "max.message.bytes": dynamic("3000"),
            "segment.bytes": dynamic("5000000"),
            "segment.ms": dynamic("5000"),
        })
    );
    let compact = v["compact"].as_str().unwrap();
    assert!(compact.starts_with("refused: ") && compact.contains("does not compact"), "{compact}");
    assert!(kelp.stop().await);
}
