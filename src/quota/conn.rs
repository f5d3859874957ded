//! One connection's side of client quotas: which meters govern its client (resolved once
//! and kept until the rules or the client id change), charging each answered request to
//! them, and the hold the connection must wait out before its next request is read.
//!
//! Owns: [`Conn`], [`Governing`], the request and response sides of charging
//! ([`Quotas::prepare`], [`Quotas::settle`]) and the hold. Does not own: the rules in force or
//! the shared meters (`quota`), a meter's arithmetic (`meter`), or when the connection waits
//! (`connection` calls [`Conn::hold`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::Encodable;
use tracing::debug;

use super::meter::{self, Charge, Meter};
use super::rules::{Kind, Shape};
use super::{Quotas, kip219};
use crate::protocol::{Body, Reply, Request};

/// APIs never charged to the request quota (as in Kafka: a client must always be able to
/// find out versions and log in).
const EXEMPT: &[ApiKey] = &[ApiKey::ApiVersions, ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];

// === impl Quotas: per request ===

impl Quotas {
    /// Resolve which meters govern this request's client (cached per connection until the
    /// rules or the client id change) and fit the request to them: a Fetch asks for no more
    /// than its quota could ever admit at once, as Kafka caps `fetch.max.bytes`.
    pub(crate) fn prepare(
        &self,
        conn: &mut Conn,
        user: Option<&str>,
        request: &mut Request,
    ) -> Governing {
        let client_id = request.header.client_id.as_deref().unwrap_or("");
        let generation = self.generation();
        let fresh = conn.resolved.as_ref().is_some_and(|r| {
            r.generation == generation && r.user.as_deref() == user && r.client_id == client_id
        });
        if !fresh {
            let rules = self.rules();
            let meters = Kind::ALL.map(|kind| {
                rules.most_specific(kind, user, client_id).map(|m| (self.meter(&m), m.shape))
            });
            conn.resolved = Some(Resolved {
                generation,
                user: user.map(str::to_string),
                client_id: client_id.to_string(),
                meters,
            });
        }
        let governing = Governing(conn.resolved.as_ref().expect("resolved above").meters.clone());
        if let (Some((meter, _)), Body::Kind(RequestKind::Fetch(r))) =
            (governing.get(Kind::Fetch), &mut request.body)
        {
            let cap = i32::try_from(meter.burst_units() / 8 * 7).unwrap_or(i32::MAX).max(1);
            r.max_bytes = r.max_bytes.min(cap);
            r.min_bytes = r.min_bytes.min(r.max_bytes);
        }
        governing
    }

    /// Charge one answered request to its quotas. Returns the response (a Fetch over quota is
    /// emptied) with `throttle_time_ms` set, and whether the hold must come before the
    /// response is written (clients older than KIP-219); the hold itself goes into `conn`.
    pub(crate) fn settle(
        &self,
        conn: &mut Conn,
        governing: &Governing,
        key: ApiKey,
        version: i16,
        request_bytes: usize,
        mut reply: Option<Reply>,
    ) -> (Option<Reply>, bool) {
        let metrics = crate::metrics::global();
        let mut throttle = Duration::ZERO;
        let over = |kind: Kind, shape: Shape, t: Duration, throttle: &mut Duration| {
            *throttle = (*throttle).max(t);
            metrics.observe_throttle(kind.label(), shape.label(), t);
        };
        if !EXEMPT.contains(&key)
            && let Some((meter, shape)) = governing.get(Kind::Request)
            && let Charge::Over { throttle: t } = meter.charge(1)
        {
            over(Kind::Request, *shape, t, &mut throttle);
            conn.hold.owe(meter.clone(), 1);
        }
        match key {
            ApiKey::Produce => {
                if let Some((meter, shape)) = governing.get(Kind::Produce) {
                    let n = request_bytes as u64;
                    metrics.observe_quota_bytes(Kind::Produce.label(), shape.label(), n);
                    if let Charge::Over { throttle: t } = meter.charge(n) {
                        over(Kind::Produce, *shape, t, &mut throttle);
                        conn.hold.owe(meter.clone(), n);
                    }
                }
            }
            ApiKey::Fetch => {
                if let Some(Reply::Kind(ResponseKind::Fetch(resp))) = &mut reply {
                    let mut empty = !throttle.is_zero();
                    if !empty && let Some((meter, shape)) = governing.get(Kind::Fetch) {
                        let n = resp.compute_size(version).unwrap_or(0) as u64;
                        match meter.charge(n) {
                            Charge::Within => {
                                metrics.observe_quota_bytes(Kind::Fetch.label(), shape.label(), n)
                            }
                            // Kafka's answer: nothing now, come back after the throttle.
                            Charge::Over { throttle: t } if n <= meter.burst_units() => {
                                over(Kind::Fetch, *shape, t, &mut throttle);
                                empty = true;
                            }
                            // Larger than any bucket (a record bigger than the fetch cap): send
                            // it and hold the connection until it is paid for.
                            Charge::Over { throttle: t } => {
                                metrics.observe_quota_bytes(Kind::Fetch.label(), shape.label(), n);
                                over(Kind::Fetch, *shape, t, &mut throttle);
                                conn.hold.owe(meter.clone(), n);
                            }
                        }
                    }
                    if empty {
                        resp.responses.clear();
                    }
                }
            }
            _ => {}
        }
        if throttle.is_zero() {
            return (reply, false);
        }
        if let Some(r) = &conn.resolved {
            debug!(user = ?r.user, client_id = %r.client_id, throttle_ms = meter::throttle_ms(throttle), "over quota");
        }
        conn.hold.at_least(throttle);
        if let Some(r) = &mut reply {
            kip219::set_throttle_time(r, meter::throttle_ms(throttle));
        }
        (reply, !kip219::client_throttles(key, version))
    }
}

// === impl Conn ===

/// A connection's quota state: the meters resolved for its client, and what it owes.
#[derive(Default)]
pub(crate) struct Conn {
    resolved: Option<Resolved>,
    hold: Hold,
}

impl Conn {
    /// Wait out what the last request cost over quota: pay its debts, then let the throttle
    /// time pass. Returns at once when nothing is owed.
    pub(crate) async fn hold(&mut self) {
        self.hold.serve().await;
    }
}

struct Resolved {
    generation: u64,
    user: Option<String>,
    client_id: String,
    meters: [Option<(Arc<Meter>, Shape)>; 3],
}

/// The meters governing one request, by kind (`None`: no rule limits that kind).
#[derive(Clone, Default)]
pub(crate) struct Governing([Option<(Arc<Meter>, Shape)>; 3]);

impl Governing {
    fn get(&self, kind: Kind) -> Option<&(Arc<Meter>, Shape)> {
        self.0[kind as usize].as_ref()
    }
}

/// What a connection must wait out before its next request is read.
#[derive(Default)]
struct Hold {
    until: Option<Instant>,
    debts: Vec<(Arc<Meter>, u64)>,
}

impl Hold {
    fn owe(&mut self, meter: Arc<Meter>, units: u64) {
        self.debts.push((meter, units));
    }

    fn at_least(&mut self, d: Duration) {
        let t = Instant::now() + d;
        self.until = Some(self.until.map_or(t, |u| u.max(t)));
    }

    async fn serve(&mut self) {
        for (meter, mut owed) in std::mem::take(&mut self.debts) {
            while owed > 0 {
                match meter.try_pay(owed) {
                    Ok(rest) => owed = rest,
                    Err(wait) => tokio::time::sleep(wait).await,
                }
            }
        }
        if let Some(until) = self.until.take() {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::rules::{Entity, Limits, Name, Rules};
    use kafka_protocol::messages::{
        FetchResponse, ProduceResponse, RequestHeader, fetch_response::FetchableTopicResponse,
    };
    use kafka_protocol::protocol::StrBytes;

    async fn quotas(rules: &str) -> Quotas {
        Quotas::for_tests(rules).await
    }

    fn request(key: ApiKey, client_id: &str) -> Request {
        let body = match key {
            ApiKey::Fetch => RequestKind::Fetch(
                kafka_protocol::messages::FetchRequest::default().with_max_bytes(50 * 1024 * 1024),
            ),
            _ => RequestKind::Metadata(Default::default()),
        };
        Request {
            header: RequestHeader::default()
                .with_client_id(Some(StrBytes::from_string(client_id.into()))),
            api_key: key,
            version: 12,
            body: Body::Kind(body),
        }
    }

    #[tokio::test]
    async fn over_quota_produce_is_answered_with_a_throttle_and_a_debt() {
        let q = quotas("quotas:\n  - client-id: slow\n    producer_byte_rate: 1000\n").await;
        let mut conn = Conn::default();
        let mut req = request(ApiKey::Produce, "slow");
        let g = q.prepare(&mut conn, None, &mut req);
        let reply = Some(Reply::Kind(ResponseKind::Produce(ProduceResponse::default())));
        let (reply, before) = q.settle(&mut conn, &g, ApiKey::Produce, 9, 800, reply);
        assert!(!before);
        let Some(Reply::Kind(ResponseKind::Produce(r))) = reply else { panic!() };
        assert_eq!(r.throttle_time_ms, 0, "within the first bucket");
        let reply = Some(Reply::Kind(ResponseKind::Produce(ProduceResponse::default())));
        let (reply, before) = q.settle(&mut conn, &g, ApiKey::Produce, 9, 800, reply);
        let Some(Reply::Kind(ResponseKind::Produce(r))) = reply else { panic!() };
        assert!((500..=700).contains(&r.throttle_time_ms), "{}", r.throttle_time_ms);
        assert!(!before, "v9 clients throttle themselves");
        assert_eq!(conn.hold.debts.len(), 1);
        // Old versions get the response after the hold.
        let (_, before) = q.settle(&mut conn, &g, ApiKey::Produce, 5, 800, None);
        assert!(before);
        // Another client id is not limited.
        let mut other = Conn::default();
        let mut req = request(ApiKey::Produce, "fast");
        let g = q.prepare(&mut other, None, &mut req);
        let (_, before) = q.settle(&mut other, &g, ApiKey::Produce, 9, 10_000_000, None);
        assert!(!before && other.hold.debts.is_empty() && other.hold.until.is_none());
    }

    #[tokio::test]
    async fn a_throttled_fetch_is_empty_and_capped() {
        let q = quotas("quotas:\n  - client-id: <default>\n    consumer_byte_rate: 4096\n").await;
        let mut conn = Conn::default();
        let mut req = request(ApiKey::Fetch, "c");
        let g = q.prepare(&mut conn, None, &mut req);
        let Body::Kind(RequestKind::Fetch(f)) = &req.body else { panic!() };
        assert_eq!(f.max_bytes, 3584, "capped to 7/8 of a bucket");
        let full = || {
            let topic = FetchableTopicResponse::default().with_partitions(vec![
                kafka_protocol::messages::fetch_response::PartitionData::default()
                    .with_records(Some(bytes::Bytes::from(vec![0u8; 3000]))),
            ]);
            Some(Reply::Kind(ResponseKind::Fetch(
                FetchResponse::default().with_responses(vec![topic]),
            )))
        };
        let (reply, _) = q.settle(&mut conn, &g, ApiKey::Fetch, 12, 100, full());
        let Some(Reply::Kind(ResponseKind::Fetch(r))) = reply else { panic!() };
        assert_eq!((r.responses.len(), r.throttle_time_ms), (1, 0));
        let (reply, before) = q.settle(&mut conn, &g, ApiKey::Fetch, 12, 100, full());
        let Some(Reply::Kind(ResponseKind::Fetch(r))) = reply else { panic!() };
        assert!(r.responses.is_empty() && r.throttle_time_ms > 0 && !before, "{r:?}");
        assert!(conn.hold.debts.is_empty(), "an emptied fetch owes nothing");
    }

    #[tokio::test]
    async fn request_rate_and_exempt_apis() {
        let q = quotas("quotas:\n  - client-id: c\n    request_rate: 2\n").await;
        let mut conn = Conn::default();
        let mut req = request(ApiKey::Metadata, "c");
        let g = q.prepare(&mut conn, None, &mut req);
        for _ in 0..10 {
            q.settle(&mut conn, &g, ApiKey::ApiVersions, 3, 10, None);
        }
        assert!(conn.hold.until.is_none(), "ApiVersions is exempt");
        let mut throttled = 0;
        for _ in 0..4 {
            let reply = Some(Reply::Kind(ResponseKind::Metadata(Default::default())));
            let (reply, _) = q.settle(&mut conn, &g, ApiKey::Metadata, 12, 10, reply);
            let Some(Reply::Kind(ResponseKind::Metadata(r))) = reply else { panic!() };
            throttled += usize::from(r.throttle_time_ms > 0);
        }
        assert_eq!(throttled, 2, "a bucket of two requests");
    }

    #[tokio::test]
    async fn rule_changes_reach_open_connections() {
        let q = quotas("").await;
        let mut conn = Conn::default();
        let mut req = request(ApiKey::Produce, "c");
        assert!(q.prepare(&mut conn, None, &mut req).get(Kind::Produce).is_none());
        let mut filer = Rules::default();
        let mut l = Limits::default();
        l.set(Kind::Produce, Some(100.0));
        filer.insert(Entity { user: None, client_id: Some(Name::Is("c".into())) }, l);
        q.set_filer_rules(filer);
        let g = q.prepare(&mut conn, None, &mut req);
        assert_eq!(g.get(Kind::Produce).map(|(m, s)| (m.rate(), *s)), Some((100.0, Shape::Client)));
        // The same meter is shared by a second connection of the same client.
        let mut conn2 = Conn::default();
        let g2 = q.prepare(&mut conn2, None, &mut req);
        assert!(Arc::ptr_eq(&g.get(Kind::Produce).unwrap().0, &g2.get(Kind::Produce).unwrap().0));
    }
}
