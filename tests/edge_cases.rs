//! Edge cases answered exactly as a Kafka broker answers them, with real clients and on a raw
//! socket: transactions fail fast, and the validation Kafka does on Produce, ListOffsets,
//! Metadata and the group APIs.

mod common;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};

use common::kelp::Kelp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producer_fails_at_once_not_after_its_timeout() {
    let seaweedfs = common::seaweedfs().await;
    let kelp = Kelp::start(&seaweedfs, &[]).await;
    let bootstrap = kelp.bootstrap();
    let (elapsed, result) = tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", "edge-txn")
            .create()
            .expect("producer");
        let start = Instant::now();
        let r = producer.init_transactions(Duration::from_secs(60));
        (start.elapsed(), r)
    })
    .await
    .unwrap();
    let Err(KafkaError::Transaction(e)) = result else {
        panic!("init_transactions must fail with a transaction error, got {result:?}");
    };
    assert!(e.is_fatal(), "a fatal error, not one to retry: {e}");
    assert_eq!(e.code(), rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed);
    assert!(elapsed < Duration::from_secs(10), "failed after {elapsed:?}");
    kelp.stop().await;
}
