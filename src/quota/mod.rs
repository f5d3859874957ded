//! Client quotas with Kafka's semantics: who is limited (rules), how much they used
//! (meters), and how a connection over quota is held back (KIP-219).
//!
//! Rules come from two places, merged per entity and key with the filer winning:
//! - the quotas file (`KELP_QUOTAS_FILE`), re-read when it changes;
//! - AlterClientQuotas, stored in the filer (`store`) and re-read every
//!   [`FILER_REFRESH`] by every kelp, so all sidecars apply the same rules.
//!
//! Metering is per kelp process, as a Kafka broker meters its own connections: produce bytes
//! (request size), fetch bytes (response size) and requests per second. A request over quota
//! is still served; its response carries `throttle_time_ms`, and the connection is not read
//! again until the throttle has passed (see `meter` for why this holds even clients that
//! ignore the field). A throttled Fetch is answered empty, as Kafka does. Nothing here ever
//! turns a quota into an error or a disconnect.

pub mod kip219;
pub mod meter;
pub mod rules;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, RequestKind, ResponseKind, alter_client_quotas_response,
    describe_client_quotas_response,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::ApiKind;
use crate::protocol::{Body, Reply, Request};
use crate::seaweed::Seaweed;
use crate::shutdown::{CancellationToken, TaskTracker};
use meter::{Charge, Meter};
use rules::{Entity, Kind, MeterKey, Name, Rules, Shape};

/// How often every kelp re-reads the rules stored through AlterClientQuotas.
pub const FILER_REFRESH: Duration = Duration::from_secs(3);
/// How often the quotas file is checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(2);
/// A meter no connection has used for this long is forgotten (its bucket is full again long
/// before; keeping it a while stops a client from resetting a debt by reconnecting).
const METER_IDLE: Duration = Duration::from_secs(60);

/// APIs never charged to the request quota (as in Kafka: a client must always be able to
/// find out versions and log in).
const EXEMPT: &[ApiKey] = &[ApiKey::ApiVersions, ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];

/// A shared meter and since when no connection has held it.
type MeterSlot = (Arc<Meter>, Option<Instant>);

/// An AlterClientQuotas entry: the entity and its operations (`None` removes a key).
type Alteration = (Entity, Vec<(Kind, Option<f64>)>);

/// Where the rules in force came from; both sets are kept so either can change alone.
struct State {
    file: Rules,
    filer: Rules,
    effective: Arc<Rules>,
    /// Bumped whenever `effective` changes, so connections re-resolve their meters.
    generation: u64,
}

struct Inner {
    seaweed: Seaweed,
    root: String,
    state: RwLock<State>,
    /// Meters by who shares them, with when they were first seen unused.
    meters: Mutex<HashMap<MeterKey, MeterSlot>>,
}

/// The quotas of one kelp process, shared by all connections.
#[derive(Clone)]
pub struct Quotas {
    inner: Arc<Inner>,
}

/// Settings for [`Quotas::start`].
pub struct Options {
    pub seaweed: Seaweed,
    pub filer_root: String,
    pub file: Option<PathBuf>,
}

impl Quotas {
    /// Load the quotas file (an unreadable or invalid file at start is an error) and start the
    /// tasks that follow the file and the filer until `cancel`.
    pub fn start(
        opts: Options,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Quotas> {
        let quotas = Quotas::new(opts.seaweed, opts.filer_root);
        if let Some(path) = opts.file {
            let env = crate::config::ENV_QUOTAS_FILE;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{env}: reading {}", path.display()))?;
            let rules = Rules::parse_file(&text)
                .map_err(|e| anyhow::anyhow!("{env}: {}: {e}", path.display()))?;
            info!(entities = rules.len(), file = %path.display(), "quotas file loaded");
            quotas.set_file_rules(rules);
            let q = quotas.clone();
            tracker.spawn(crate::watch::poll(
                path,
                FILE_POLL,
                text.into_bytes(),
                cancel.clone(),
                "quotas",
                move |text| {
                    let rules = Rules::parse_file(text)?;
                    info!(entities = rules.len(), "quotas file reloaded");
                    q.set_file_rules(rules);
                    Ok(())
                },
            ));
        }
        let q = quotas.clone();
        tracker.spawn(async move {
            q.refresh_loop(cancel).instrument(info_span!("quota_refresh")).await
        });
        Ok(quotas)
    }

    /// Quotas with no rules and no background tasks (rules arrive through the setters).
    pub fn new(seaweed: Seaweed, root: String) -> Quotas {
        let state = State {
            file: Rules::default(),
            filer: Rules::default(),
            effective: Arc::default(),
            generation: 0,
        };
        Quotas {
            inner: Arc::new(Inner {
                seaweed,
                root,
                state: RwLock::new(state),
                meters: Mutex::default(),
            }),
        }
    }

    /// The rules in force: file rules with the filer's laid on top.
    pub fn rules(&self) -> Arc<Rules> {
        self.inner.state.read().expect("quota state lock").effective.clone()
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.inner.state.write().expect("quota state lock");
        change(&mut s);
        let effective = s.file.overlay(&s.filer);
        if effective != *s.effective {
            s.effective = Arc::new(effective);
            s.generation += 1;
        }
        let m = crate::metrics::global();
        m.quota_rules
            .get_or_create(&crate::metrics::SourceLabels { source: "file" })
            .set(s.file.len() as i64);
        m.quota_rules
            .get_or_create(&crate::metrics::SourceLabels { source: "filer" })
            .set(s.filer.len() as i64);
    }

    pub fn set_file_rules(&self, rules: Rules) {
        self.update(|s| s.file = rules);
    }

    pub fn set_filer_rules(&self, rules: Rules) {
        self.update(|s| s.filer = rules);
    }

    async fn refresh_loop(&self, cancel: CancellationToken) {
        let mut healthy = true;
        let mut tick = tokio::time::interval(FILER_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store::load(&self.inner.seaweed, &self.inner.root).await {
                Ok(rules) => {
                    if !healthy {
                        info!("reading stored quotas works again");
                    }
                    healthy = true;
                    self.set_filer_rules(rules);
                }
                // Keep the last rules read; one warning per outage, not one per refresh.
                Err(e) if healthy => {
                    healthy = false;
                    warn!(error = %e, "cannot read stored quotas; keeping the last ones read");
                }
                Err(e) => debug!(error = %e, "cannot read stored quotas"),
            }
            self.forget_idle_meters();
        }
    }

    fn forget_idle_meters(&self) {
        let now = Instant::now();
        self.inner.meters.lock().expect("meters lock").retain(|_, (meter, unused_since)| {
            if Arc::strong_count(meter) > 1 {
                *unused_since = None;
                return true;
            }
            now.duration_since(*unused_since.get_or_insert(now)) < METER_IDLE
        });
    }

    /// The shared meter for a matched rule (a new one when the rate changed).
    fn meter(&self, m: &rules::Match) -> Arc<Meter> {
        let mut meters = self.inner.meters.lock().expect("meters lock");
        if let Some((meter, _)) = meters.get(&m.key)
            && meter.rate() == m.rate
        {
            return meter.clone();
        }
        let meter = Arc::new(Meter::new(m.rate));
        meters.insert(m.key.clone(), (meter.clone(), None));
        meter
    }

    // === per request ===

    /// Resolve which meters govern this request's client (cached per connection until the
    /// rules or the client id change) and fit the request to them: a Fetch asks for no more
    /// than its quota could ever admit at once, as Kafka caps `fetch.max.bytes`.
    pub fn prepare(&self, conn: &mut Conn, user: Option<&str>, request: &mut Request) -> Governing {
        let client_id = request.header.client_id.as_deref().unwrap_or("");
        let generation = self.inner.state.read().expect("quota state lock").generation;
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
    pub fn settle(
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

    // === KIP-546 ===

    /// DescribeClientQuotas over the rules in force.
    pub fn describe(&self, req: &DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
        use describe_client_quotas_response::{EntityData, EntryData, ValueData};
        let rules = self.rules();
        let components: Vec<_> = req
            .components
            .iter()
            .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref()))
            .collect();
        match rules.describe(&components, req.strict) {
            Err((code, message)) => DescribeClientQuotasResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message)))
                .with_entries(None),
            Ok(found) => {
                let entries = found
                    .into_iter()
                    .map(|(entity, limits)| {
                        let mut sides = Vec::new();
                        if let Some(u) = &entity.user {
                            sides.push(
                                EntityData::default()
                                    .with_entity_type(str_bytes(rules::ENTITY_USER))
                                    .with_entity_name(u.as_kafka().map(str_bytes)),
                            );
                        }
                        if let Some(c) = &entity.client_id {
                            sides.push(
                                EntityData::default()
                                    .with_entity_type(str_bytes(rules::ENTITY_CLIENT_ID))
                                    .with_entity_name(c.as_kafka().map(str_bytes)),
                            );
                        }
                        let values = limits
                            .iter()
                            .map(|(k, v)| {
                                ValueData::default()
                                    .with_key(str_bytes(k.config_key()))
                                    .with_value(v)
                            })
                            .collect();
                        EntryData::default().with_entity(sides).with_values(values)
                    })
                    .collect();
                DescribeClientQuotasResponse::default().with_entries(Some(entries))
            }
        }
    }

    /// AlterClientQuotas: validate each entry like Kafka's controller, store it in the filer
    /// (unless `validate_only`) and apply it here at once; other kelps pick it up within
    /// [`FILER_REFRESH`].
    pub async fn alter(&self, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
        use alter_client_quotas_response::{EntityData, EntryData};
        let mut out = Vec::with_capacity(req.entries.len());
        let mut seen: Vec<Entity> = Vec::new();
        for entry in req.entries {
            let echo = entry
                .entity
                .iter()
                .map(|e| {
                    EntityData::default()
                        .with_entity_type(e.entity_type.clone())
                        .with_entity_name(e.entity_name.clone())
                })
                .collect();
            let result = match parse_alteration(&entry) {
                Err(message) => Err((ResponseError::InvalidRequest, message)),
                Ok((entity, _)) if seen.contains(&entity) => Err((
                    ResponseError::InvalidRequest,
                    format!("ignoring duplicate entity {entity}"),
                )),
                Ok((entity, ops)) => {
                    seen.push(entity.clone());
                    if req.validate_only {
                        Ok(())
                    } else {
                        match store::alter(&self.inner.seaweed, &self.inner.root, &entity, &ops)
                            .await
                        {
                            Ok(limits) => {
                                info!(%entity, ?limits, "client quota altered");
                                self.update(|s| s.filer.insert(entity, limits));
                                Ok(())
                            }
                            Err(e) => {
                                warn!(%entity, error = %e, "storing a client quota failed");
                                Err((e.code(ApiKind::Data), e.to_string()))
                            }
                        }
                    }
                }
            };
            let mut item = EntryData::default().with_entity(echo);
            if let Err((code, message)) = result {
                item = item
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
            out.push(item);
        }
        AlterClientQuotasResponse::default().with_entries(out)
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// An AlterClientQuotas entry as (entity, operations), or why it is invalid.
fn parse_alteration(
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<Alteration, String> {
    let mut entity = Entity { user: None, client_id: None };
    if entry.entity.is_empty() {
        return Err("invalid empty client quota entity".into());
    }
    for e in &entry.entity {
        let name = Name::from_kafka(e.entity_name.as_deref());
        let side = match e.entity_type.as_str() {
            rules::ENTITY_USER => &mut entity.user,
            rules::ENTITY_CLIENT_ID => &mut entity.client_id,
            rules::ENTITY_IP => {
                return Err("kelp has no ip quotas (connection_creation_rate)".into());
            }
            other => return Err(format!("unhandled client quota entity type: {other}")),
        };
        if side.replace(name).is_some() {
            return Err(format!(
                "invalid client quota entity, duplicate entity entry {}",
                e.entity_type.as_str()
            ));
        }
    }
    let mut ops: Vec<(Kind, Option<f64>)> = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let kind = Kind::from_config_key(&op.key).ok_or_else(|| rules::unsupported_key(&op.key))?;
        if ops.iter().any(|(k, _)| *k == kind) {
            return Err(format!("duplicate quota key {}", op.key.as_str()));
        }
        if op.remove {
            ops.push((kind, None));
        } else {
            rules::validate_value(kind, op.value)?;
            ops.push((kind, Some(op.value)));
        }
    }
    Ok((entity, ops))
}

// === per connection ===

/// A connection's quota state: the meters resolved for its client, and what it owes.
#[derive(Default)]
pub struct Conn {
    resolved: Option<Resolved>,
    hold: Hold,
}

impl Conn {
    /// Wait out what the last request cost over quota: pay its debts, then let the throttle
    /// time pass. Returns at once when nothing is owed.
    pub async fn hold(&mut self) {
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
pub struct Governing([Option<(Arc<Meter>, Shape)>; 3]);

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
    use crate::seaweed::SeaweedOptions;
    use kafka_protocol::messages::{
        FetchResponse, ProduceResponse, RequestHeader, fetch_response::FetchableTopicResponse,
    };
    use rules::Limits;

    async fn quotas(rules: &str) -> Quotas {
        let seaweed = Seaweed::connect(SeaweedOptions {
            master: "127.0.0.1:1".into(),
            filer: None,
            namespace: "kafka".into(),
            call_timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
        let q = Quotas::new(seaweed, "/kelp".into());
        q.set_file_rules(Rules::parse_file(rules).unwrap());
        q
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

    #[tokio::test]
    async fn alterations_are_validated_like_kafka() {
        use kafka_protocol::messages::alter_client_quotas_request::{
            EntityData, EntryData, OpData,
        };
        let q = quotas("").await;
        let entry = |entity: Vec<(&str, Option<&str>)>, ops: Vec<(&str, f64, bool)>| {
            EntryData::default()
                .with_entity(
                    entity
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(str_bytes(t))
                                .with_entity_name(n.map(str_bytes))
                        })
                        .collect(),
                )
                .with_ops(
                    ops.into_iter()
                        .map(|(k, v, r)| {
                            OpData::default().with_key(str_bytes(k)).with_value(v).with_remove(r)
                        })
                        .collect(),
                )
        };
        let req = AlterClientQuotasRequest::default().with_validate_only(true).with_entries(vec![
            entry(vec![("client-id", Some("a"))], vec![("producer_byte_rate", 1024.0, false)]),
            entry(
                vec![("user", None), ("client-id", Some("a"))],
                vec![("request_rate", 0.5, false), ("consumer_byte_rate", 0.0, true)],
            ),
            entry(vec![], vec![]),
            entry(vec![("ip", Some("1.2.3.4"))], vec![("connection_creation_rate", 1.0, false)]),
            entry(vec![("client-id", Some("b"))], vec![("request_percentage", 50.0, false)]),
            entry(vec![("client-id", Some("c"))], vec![("producer_byte_rate", 1.5, false)]),
            entry(vec![("client-id", Some("d"))], vec![("producer_byte_rate", -1.0, false)]),
            entry(vec![("client-id", Some("e")), ("client-id", Some("f"))], vec![]),
            entry(vec![("client-id", Some("a"))], vec![("producer_byte_rate", 2048.0, false)]),
            entry(
                vec![("client-id", Some("g"))],
                vec![("request_rate", 1.0, false), ("request_rate", 2.0, false)],
            ),
        ]);
        let codes: Vec<i16> = q.alter(req).await.entries.iter().map(|e| e.error_code).collect();
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(
            codes,
            vec![0, 0, invalid, invalid, invalid, invalid, invalid, invalid, invalid, invalid]
        );
        assert!(q.rules().is_empty(), "validate_only changes nothing");
    }
}
