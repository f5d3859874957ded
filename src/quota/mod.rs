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
//!
//! Owns: the rules in force, the meters shared by the connections of one client, the tasks
//! that follow the file and the filer, and the domain half of KIP-546 ([`Quotas::describe`],
//! [`Quotas::alter`]). Does not own: KIP-546 wire types, request checks and responses
//! (`api::describe_client_quotas`, `api::alter_client_quotas`), charging one connection's
//! requests (`conn`), rule semantics (`rules`), the stored form (`store`), meter arithmetic
//! (`meter`) or which clients throttle themselves (`kip219`).

mod conn;
mod kip219;
mod meter;
pub(crate) mod rules;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::Error;
use crate::seaweed::Seaweed;
use crate::shutdown::{CancellationToken, TaskTracker};
pub(crate) use conn::{Conn, Governing};
use meter::Meter;
use rules::{Change, Entity, Filter, Limits, MeterKey, Rules};

/// How often every kelp re-reads the rules stored through AlterClientQuotas.
const FILER_REFRESH: Duration = Duration::from_secs(3);
/// How often the quotas file is checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(2);
/// A meter no connection has used for this long is forgotten (its bucket is full again long
/// before; keeping it a while stops a client from resetting a debt by reconnecting).
const METER_IDLE: Duration = Duration::from_secs(60);

/// A shared meter and since when no connection has held it.
type MeterSlot = (Arc<Meter>, Option<Instant>);

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
    fn new(seaweed: Seaweed, root: String) -> Quotas {
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
    pub(crate) fn rules(&self) -> Arc<Rules> {
        self.inner.state.read().effective.clone()
    }

    /// Bumped whenever the rules in force change; connections re-resolve their meters then.
    fn generation(&self) -> u64 {
        self.inner.state.read().generation
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.inner.state.write();
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

    fn set_file_rules(&self, rules: Rules) {
        self.update(|s| s.file = rules);
    }

    fn set_filer_rules(&self, rules: Rules) {
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
        self.meters().retain(|_, (meter, unused_since)| {
            if Arc::strong_count(meter) > 1 {
                *unused_since = None;
                return true;
            }
            now.duration_since(*unused_since.get_or_insert(now)) < METER_IDLE
        });
    }

    /// The shared meter for a matched rule (a new one when the rate changed).
    fn meter(&self, m: &rules::Match) -> Arc<Meter> {
        if let Some((meter, _)) = self.meters().get(&m.key)
            && meter.rate() == m.rate
        {
            return meter.clone();
        }
        // Built outside the lock: nothing that runs while it is held can fail.
        let meter = Arc::new(Meter::new(m.rate));
        self.meters().insert(m.key.clone(), (meter.clone(), None));
        meter
    }

    /// The meters (a `parking_lot` lock, as everywhere in kelp: a panic while one is held does
    /// not poison it, so one failed request cannot fail every later one).
    fn meters(&self) -> parking_lot::MutexGuard<'_, HashMap<MeterKey, MeterSlot>> {
        self.inner.meters.lock()
    }

    // === KIP-546: the domain half; checks and wire types are in `api::*_client_quotas` ===

    /// DescribeClientQuotas: the entities in force that `filter` selects, with their limits.
    pub(crate) fn describe(&self, filter: &Filter) -> Vec<(Entity, Limits)> {
        self.rules().describe(filter).into_iter().map(|(e, l)| (e.clone(), *l)).collect()
    }

    /// AlterClientQuotas for one validated entry: store `changes` to `entity` in the filer and
    /// apply the result here at once; other kelps pick it up within [`FILER_REFRESH`].
    /// Returns the entity's limits after the change.
    pub(crate) async fn alter(&self, entity: Entity, changes: &[Change]) -> Result<Limits, Error> {
        match store::alter(&self.inner.seaweed, &self.inner.root, &entity, changes).await {
            Ok(limits) => {
                info!(%entity, ?limits, "client quota altered");
                self.update(|s| s.filer.insert(entity, limits));
                Ok(limits)
            }
            Err(e) => {
                warn!(%entity, error = %e, "storing a client quota failed");
                Err(e)
            }
        }
    }

    /// Quotas with the rules of a quotas file and a filer nobody answers at.
    #[cfg(test)]
    pub(crate) async fn for_tests(file: &str) -> Quotas {
        let seaweed = Seaweed::connect(crate::seaweed::SeaweedOptions {
            master: "127.0.0.1:1".into(),
            filer: None,
            namespace: "kafka".into(),
            call_timeout: Duration::from_millis(100),
        })
        .await
        .expect("options are valid");
        let q = Quotas::new(seaweed, "/kelp".into());
        q.set_file_rules(Rules::parse_file(file).expect("a valid quotas file"));
        q
    }
}
