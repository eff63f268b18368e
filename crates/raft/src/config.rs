//! Node configuration: [`Config`] with its [`Options`], [`FeatureFlags`] and
//! [`TuningParams`], their defaults (the original's documented ones), validation and TOML
//! loading.
//!
//! ```
//! use raftlock_raft::{Config, PeerConfig};
//!
//! let config = Config::from_toml_str(r#"
//!     id = "node-1"
//!     peers = [
//!         { id = "node-1", address = "127.0.0.1:8001" },
//!         { id = "node-2", address = "127.0.0.1:8002" },
//!         { id = "node-3", address = "127.0.0.1:8003" },
//!     ]
//!     [options]
//!     election_tick_count = 10
//!     nominal_tick_interval = "50ms"
//! "#).unwrap();
//! assert_eq!(config.options.heartbeat_tick_count, 1);
//! assert_eq!(config.options.nominal_tick_interval.as_millis(), 50);
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::types::{NodeId, PeerConfig};

/// Default election timeout, in ticks (1 s at the nominal tick interval).
pub const DEFAULT_ELECTION_TICK_COUNT: u32 = 10;
/// Default heartbeat interval, in ticks.
pub const DEFAULT_HEARTBEAT_TICK_COUNT: u32 = 1;
/// Default duration of one tick (the original's `NominalTickInterval`).
pub const NOMINAL_TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Default cap on entries in one AppendEntries request.
pub const DEFAULT_MAX_LOG_ENTRIES_PER_REQUEST: usize = 100;
/// Default number of entries past the last snapshot that triggers a new one.
pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 10_000;
/// Default number of entries kept in the log behind a snapshot.
pub const DEFAULT_LOG_COMPACTION_MIN_ENTRIES: u64 = 5_000;
/// Default bound on applying one entry.
pub const DEFAULT_APPLY_ENTRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on fetching entries from storage.
pub const DEFAULT_FETCH_ENTRIES_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on clock drift between nodes, in percent (leader lease).
pub const DEFAULT_MAX_CLOCK_DRIFT_PERCENT: u32 = 5;
/// Default cap on entries applied in one batch.
pub const DEFAULT_MAX_APPLY_BATCH_SIZE: usize = 10;
/// Default snapshot chunk size: 0 lets the transport choose.
pub const DEFAULT_MAX_SNAPSHOT_CHUNK_SIZE: usize = 0;
/// Default cap on AppendEntries requests in flight to one follower.
pub const DEFAULT_MAX_INFLIGHT_MSGS: usize = 256;
/// Default of [`TuningParams::max_promotion_lag`].
pub const DEFAULT_MAX_PROMOTION_LAG: u64 = 1000;
/// Default cap on the payload bytes of one AppendEntries request.
pub const DEFAULT_MAX_APPEND_BYTES: usize = 1024 * 1024;
/// Default cap on the size of one proposed command.
pub const DEFAULT_MAX_PROPOSAL_BYTES: usize = 4 * 1024 * 1024;
/// Default cap on the bytes a leader holds proposed and not yet committed.
pub const DEFAULT_MAX_UNCOMMITTED_BYTES: u64 = 64 * 1024 * 1024;
/// Default cap on the bytes a leader holds proposed and not yet applied.
pub const DEFAULT_MAX_UNAPPLIED_BYTES: u64 = 128 * 1024 * 1024;
/// Default cap on apply batches handed to the state machine and not yet applied.
pub const DEFAULT_MAX_PENDING_APPLY_BATCHES: usize = 16;
/// Default cap on jobs queued for the storage thread.
pub const DEFAULT_MAX_PENDING_STORAGE_JOBS: usize = 256;
/// Default cap on linearizable reads waiting on one node.
pub const DEFAULT_MAX_PENDING_READS: usize = 65_536;

/// Everything a node needs to know about itself and its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id; must appear in `peers`.
    pub id: NodeId,
    /// Every voting member of the cluster, this node included.
    pub peers: Vec<PeerConfig>,
    /// Timing and log-management settings.
    #[serde(default)]
    pub options: Options,
    /// Protocol features.
    #[serde(default)]
    pub feature_flags: FeatureFlags,
    /// Performance tuning.
    #[serde(default)]
    pub tuning: TuningParams,
}

/// Timing and log-management settings (the original's `Options`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Ticks a follower waits without hearing from a leader before it starts an election.
    /// The actual timeout is drawn at random from `[n, 2n)` ticks. Default 10.
    pub election_tick_count: u32,
    /// Ticks between a leader's heartbeats. Must be less than `election_tick_count`.
    /// Default 1.
    pub heartbeat_tick_count: u32,
    /// Duration of one tick when the node drives its own ticker. Default 100 ms.
    #[serde(with = "duration_text")]
    pub nominal_tick_interval: Duration,
    /// Most entries in one AppendEntries request. Default 100.
    pub max_log_entries_per_request: usize,
    /// A snapshot is taken once this many entries were applied past the last snapshot.
    /// 0 turns automatic snapshots off. Default 10 000.
    ///
    /// Memory: the core keeps the log since its compaction point in memory, so it holds at
    /// most about `snapshot_threshold + log_compaction_min_entries` applied entries plus
    /// the unapplied ones (on a leader bounded by `tuning.max_unapplied_bytes`, which
    /// includes the uncommitted ones), and one snapshot.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a new snapshot, so that followers slightly behind
    /// can still be served from the log instead of a snapshot: after a snapshot at index
    /// `s`, entries up to `s - log_compaction_min_entries` may be dropped. Default 5000.
    pub log_compaction_min_entries: u64,
    /// Longest time the application may take to apply one entry. Default 5 s.
    #[serde(with = "duration_text")]
    pub apply_entry_timeout: Duration,
    /// Longest time a read of entries from storage may take. Default 5 s.
    #[serde(with = "duration_text")]
    pub fetch_entries_timeout: Duration,
    /// Bound on how much the tick rates (clocks) of two nodes may differ, in percent.
    /// The leader lease relies on it: after a heartbeat round sent at tick `t` is
    /// acknowledged by a majority, the leader serves reads alone until
    /// `t + floor((E - 1)(100 - d)/(100 + d)) - 1` ticks (`E` = election_tick_count,
    /// `d` = this value), which is shorter than the time any follower that acknowledged
    /// the round refuses votes. If clocks drift apart by more, lease reads can be stale;
    /// turn the lease off where that cannot be ruled out. Default 5.
    pub max_clock_drift_percent: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            election_tick_count: DEFAULT_ELECTION_TICK_COUNT,
            heartbeat_tick_count: DEFAULT_HEARTBEAT_TICK_COUNT,
            nominal_tick_interval: NOMINAL_TICK_INTERVAL,
            max_log_entries_per_request: DEFAULT_MAX_LOG_ENTRIES_PER_REQUEST,
            snapshot_threshold: DEFAULT_SNAPSHOT_THRESHOLD,
            log_compaction_min_entries: DEFAULT_LOG_COMPACTION_MIN_ENTRIES,
            apply_entry_timeout: DEFAULT_APPLY_ENTRY_TIMEOUT,
            fetch_entries_timeout: DEFAULT_FETCH_ENTRIES_TIMEOUT,
            max_clock_drift_percent: DEFAULT_MAX_CLOCK_DRIFT_PERCENT,
        }
    }
}

/// Protocol features (the original's `FeatureFlags`). `FeatureFlags::default()` turns all
/// of them on; unlike the Go original, a field set explicitly is never overridden.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureFlags {
    /// Linearizable reads through the ReadIndex protocol. Default on.
    pub enable_read_index: bool,
    /// Let the leader answer ReadIndex from a time lease, without a round of heartbeats.
    /// Requires `enable_read_index` and `check_quorum`. Default on.
    pub enable_leader_lease: bool,
    /// Ask for pre-votes before starting an election, so that a node that was partitioned
    /// does not disrupt a healthy leader. Default on.
    pub pre_vote_enabled: bool,
    /// A leader that has not heard from a majority within an election timeout steps down.
    /// Default on; required by the leader lease.
    pub check_quorum: bool,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        FeatureFlags {
            enable_read_index: true,
            enable_leader_lease: true,
            pre_vote_enabled: true,
            check_quorum: true,
        }
    }
}

/// Performance tuning (the original's `TuningParams`, plus flow-control limits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuningParams {
    /// Most entries handed to the application in one batch. Default 10.
    pub max_apply_batch_size: usize,
    /// Largest chunk of snapshot data in one InstallSnapshot message; 0 (the default)
    /// means 1 MiB, well under the gRPC message limit, so a large snapshot never hits it.
    /// At most 4 chunks are in flight to one follower.
    pub max_snapshot_chunk_size: usize,
    /// Most AppendEntries requests in flight to one follower. Default 256.
    pub max_inflight_msgs: usize,
    /// How far behind the leader's last index a node may be and still be made a voter
    /// (`RaftCore::change_membership` refuses to promote a node further behind, so that
    /// the cluster does not wait on it for commits while it copies the log). Default 1000
    /// entries.
    pub max_promotion_lag: u64,
    /// Most payload bytes in one AppendEntries request (a single larger entry is still sent
    /// alone). Default 1 MiB.
    pub max_append_bytes: usize,
    /// Largest command a client may propose. Default 4 MiB.
    pub max_proposal_bytes: usize,
    /// Bounds the payload bytes a leader holds proposed in its term and not yet committed
    /// (the backlog of followers that are slow but still answer). At the bound, proposals
    /// fail at once with [`Error::Overloaded`](crate::Error::Overloaded)
    /// ([`OverloadReason::UncommittedBytes`](crate::OverloadReason::UncommittedBytes)),
    /// nothing appended; they are never queued or blocked. With nothing uncommitted one
    /// batch is always admitted, so a batch larger than the bound cannot wedge the leader.
    /// Default 64 MiB; `None` removes the bound (settable only from code: TOML has no
    /// null), and the leader's log then grows for as long as a majority lags behind.
    pub max_uncommitted_bytes: Option<u64>,
    /// Bounds the bytes a leader holds proposed in its term and not yet applied by its own
    /// state machine, counting 256 bytes of bookkeeping per entry on top of its payload
    /// (so that empty commands count too). This is what keeps a slow state machine from
    /// growing the in-memory log: commit goes on without it, application does not. At
    /// the bound, proposals fail at once with [`Error::Overloaded`](crate::Error::Overloaded)
    /// ([`OverloadReason::UnappliedBytes`](crate::OverloadReason::UnappliedBytes)), nothing
    /// appended; as above, one batch is always admitted when nothing is pending. It also
    /// bounds the proposers waiting for their results. Default 128 MiB; `None` removes the
    /// bound (settable only from code).
    pub max_unapplied_bytes: Option<u64>,
    /// Bounds the batches of committed entries (each at most `max_apply_batch_size`
    /// entries) handed to the state machine and not yet reported applied. At the bound the
    /// node stops handing out committed entries until the state machine finishes a batch;
    /// commit itself goes on, and `max_unapplied_bytes` then refuses new proposals. Keeps
    /// the applier's queue short without ever blocking the node. Default 16.
    pub max_pending_apply_batches: usize,
    /// Bounds the jobs (write batches, snapshot saves, compactions) queued for the storage
    /// thread. At the bound the node stops carrying out the core's output (new writes,
    /// messages, committed entries) until the thread finishes its current group commit,
    /// which takes every queued job at once; the core merges what arrives meanwhile into
    /// the next write. Nothing blocks and nothing is dropped. Default 256.
    pub max_pending_storage_jobs: usize,
    /// Bounds the linearizable reads ([`Raft::read_index`](crate::Raft::read_index))
    /// waiting on one node, for a leader's confirmation or for the state machine to reach
    /// their index. Past it, reads fail at once with
    /// [`Error::Overloaded`](crate::Error::Overloaded)
    /// ([`OverloadReason::PendingReads`](crate::OverloadReason::PendingReads)). Default
    /// 65 536.
    pub max_pending_reads: usize,
}

impl Default for TuningParams {
    fn default() -> Self {
        TuningParams {
            max_apply_batch_size: DEFAULT_MAX_APPLY_BATCH_SIZE,
            max_snapshot_chunk_size: DEFAULT_MAX_SNAPSHOT_CHUNK_SIZE,
            max_inflight_msgs: DEFAULT_MAX_INFLIGHT_MSGS,
            max_promotion_lag: DEFAULT_MAX_PROMOTION_LAG,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
            max_proposal_bytes: DEFAULT_MAX_PROPOSAL_BYTES,
            max_uncommitted_bytes: Some(DEFAULT_MAX_UNCOMMITTED_BYTES),
            max_unapplied_bytes: Some(DEFAULT_MAX_UNAPPLIED_BYTES),
            max_pending_apply_batches: DEFAULT_MAX_PENDING_APPLY_BATCHES,
            max_pending_storage_jobs: DEFAULT_MAX_PENDING_STORAGE_JOBS,
            max_pending_reads: DEFAULT_MAX_PENDING_READS,
        }
    }
}

impl Config {
    /// A configuration with default options for node `id` of the cluster `peers`.
    pub fn new(id: impl Into<NodeId>, peers: Vec<PeerConfig>) -> Self {
        Config {
            id: id.into(),
            peers,
            options: Options::default(),
            feature_flags: FeatureFlags::default(),
            tuning: TuningParams::default(),
        }
    }

    /// Parses a TOML document and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::new("<toml>", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_toml_str(&text)
    }

    /// Serializes to TOML (the inverse of [`Config::from_toml_str`]).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::new("<toml>", e.to_string()))
    }

    /// Checks every rule; the error names the first setting that breaks one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.as_str().is_empty() {
            return Err(ConfigError::new("id", "must not be empty"));
        }
        let mut seen = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id.as_str().is_empty() {
                return Err(ConfigError::new(
                    format!("peers[{i}].id"),
                    "must not be empty",
                ));
            }
            if !seen.insert(&peer.id) {
                return Err(ConfigError::new(
                    format!("peers[{i}].id"),
                    format!(
                        "duplicate peer id {:?}; ids must be unique",
                        peer.id.as_str()
                    ),
                ));
            }
            validate_address(&peer.address)
                .map_err(|rule| ConfigError::new(format!("peers[{i}].address"), rule))?;
        }
        // No peers at all is a node that joins an existing cluster: it has no
        // configuration, never campaigns, and learns the membership from the leader.
        if !self.peers.is_empty() && !seen.contains(&self.id) {
            return Err(ConfigError::new(
                "peers",
                format!("must contain this node's id {:?}", self.id.as_str()),
            ));
        }
        self.options.validate()?;
        self.feature_flags.validate()?;
        if self.feature_flags.enable_leader_lease && self.options.lease_ticks() == 0 {
            return Err(ConfigError::new(
                "feature_flags.enable_leader_lease",
                format!(
                    "the lease would last 0 ticks with options.election_tick_count = {} and options.max_clock_drift_percent = {}; raise the election timeout or turn the lease off",
                    self.options.election_tick_count, self.options.max_clock_drift_percent
                ),
            ));
        }
        self.tuning.validate()
    }

    /// The entry of `peers` that describes this node.
    pub fn self_peer(&self) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == self.id)
    }
}

impl Options {
    /// Ticks the leader may serve reads alone after a confirmed heartbeat round (see
    /// [`Options::max_clock_drift_percent`]).
    pub fn lease_ticks(&self) -> u64 {
        let e = self.election_tick_count.saturating_sub(1) as u64;
        let d = self.max_clock_drift_percent.min(99) as u64;
        (e * (100 - d) / (100 + d)).saturating_sub(1)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let o = self;
        if o.max_clock_drift_percent >= 50 {
            return Err(ConfigError::new(
                "options.max_clock_drift_percent",
                format!("must be below 50 (got {})", o.max_clock_drift_percent),
            ));
        }
        non_zero(
            "options.heartbeat_tick_count",
            o.heartbeat_tick_count as u64,
        )?;
        if o.election_tick_count <= o.heartbeat_tick_count {
            return Err(ConfigError::new(
                "options.election_tick_count",
                format!(
                    "must exceed options.heartbeat_tick_count ({} <= {})",
                    o.election_tick_count, o.heartbeat_tick_count
                ),
            ));
        }
        if o.nominal_tick_interval.is_zero() {
            return Err(ConfigError::new(
                "options.nominal_tick_interval",
                "must be greater than zero",
            ));
        }
        non_zero(
            "options.max_log_entries_per_request",
            o.max_log_entries_per_request as u64,
        )?;
        if o.apply_entry_timeout.is_zero() {
            return Err(ConfigError::new(
                "options.apply_entry_timeout",
                "must be greater than zero",
            ));
        }
        if o.fetch_entries_timeout.is_zero() {
            return Err(ConfigError::new(
                "options.fetch_entries_timeout",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

impl FeatureFlags {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.enable_leader_lease && !self.enable_read_index {
            return Err(ConfigError::new(
                "feature_flags.enable_leader_lease",
                "requires feature_flags.enable_read_index",
            ));
        }
        if self.enable_leader_lease && !self.check_quorum {
            return Err(ConfigError::new(
                "feature_flags.enable_leader_lease",
                "requires feature_flags.check_quorum (a deposed leader must step down before its lease can be trusted)",
            ));
        }
        Ok(())
    }
}

impl TuningParams {
    fn validate(&self) -> Result<(), ConfigError> {
        non_zero(
            "tuning.max_apply_batch_size",
            self.max_apply_batch_size as u64,
        )?;
        non_zero("tuning.max_inflight_msgs", self.max_inflight_msgs as u64)?;
        non_zero("tuning.max_append_bytes", self.max_append_bytes as u64)?;
        non_zero("tuning.max_proposal_bytes", self.max_proposal_bytes as u64)?;
        non_zero(
            "tuning.max_pending_apply_batches",
            self.max_pending_apply_batches as u64,
        )?;
        non_zero(
            "tuning.max_pending_storage_jobs",
            self.max_pending_storage_jobs as u64,
        )?;
        non_zero("tuning.max_pending_reads", self.max_pending_reads as u64)?;
        for (field, limit) in [
            ("tuning.max_uncommitted_bytes", self.max_uncommitted_bytes),
            ("tuning.max_unapplied_bytes", self.max_unapplied_bytes),
        ] {
            if let Some(limit) = limit {
                if limit < self.max_proposal_bytes as u64 {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "must be at least tuning.max_proposal_bytes ({limit} < {}), or no proposal could ever be accepted",
                            self.max_proposal_bytes
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn non_zero(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(())
}

/// Accepts `host:port` and `[ipv6]:port`; the host may be a name, resolved later.
fn validate_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not of the form host:port"));
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(format!("{address:?} has an invalid host {host:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "{address:?} has an invalid port {port:?} (expected 1-65535)"
        )),
    }
}

/// Durations in TOML as text with a unit (`"150ms"`, `"5s"`, `"2m"`) or as an integer
/// number of milliseconds.
mod duration_text {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            s.serialize_str(&format!("{}us", d.as_micros()))
        } else {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"100ms\", \"5s\", \"2m\", or milliseconds")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).ok_or_else(|| {
                E::custom(format!(
                    "invalid duration {text:?}: expected a number followed by us, ms, s or m"
                ))
            })
        }
    }

    pub(super) fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok()?;
        match unit.trim() {
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerConfig> {
        (1..=n)
            .map(|i| PeerConfig {
                id: NodeId::from(format!("node-{i}")),
                address: format!("127.0.0.1:{}", 8000 + i),
            })
            .collect()
    }

    fn valid() -> Config {
        Config::new("node-1", peers(3))
    }

    fn field_of(config: &Config) -> String {
        config
            .validate()
            .expect_err("config must be rejected")
            .field
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = valid();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.options.election_tick_count, 10);
        assert_eq!(c.options.heartbeat_tick_count, 1);
        assert_eq!(c.options.nominal_tick_interval, Duration::from_millis(100));
        assert_eq!(c.options.max_log_entries_per_request, 100);
        assert_eq!(c.options.snapshot_threshold, 10_000);
        assert_eq!(c.options.log_compaction_min_entries, 5_000);
        assert_eq!(c.options.apply_entry_timeout, Duration::from_secs(5));
        assert_eq!(c.options.fetch_entries_timeout, Duration::from_secs(5));
        assert_eq!(c.tuning.max_apply_batch_size, 10);
        assert_eq!(c.tuning.max_snapshot_chunk_size, 0);
        assert_eq!(c.tuning.max_inflight_msgs, 256);
        assert_eq!(c.tuning.max_uncommitted_bytes, Some(64 << 20));
        assert_eq!(c.tuning.max_unapplied_bytes, Some(128 << 20));
        assert_eq!(c.tuning.max_pending_apply_batches, 16);
        assert_eq!(c.tuning.max_pending_storage_jobs, 256);
        assert_eq!(c.tuning.max_pending_reads, 65_536);
        assert!(c.feature_flags.enable_read_index);
        assert!(c.feature_flags.enable_leader_lease);
        assert!(c.feature_flags.pre_vote_enabled);
        assert!(c.feature_flags.check_quorum);
    }

    #[test]
    fn rejects_empty_id() {
        let mut c = valid();
        c.id = NodeId::from("");
        assert_eq!(field_of(&c), "id");
    }

    #[test]
    fn rejects_peers_without_this_node() {
        let mut c = valid();
        c.id = NodeId::from("node-9");
        assert_eq!(field_of(&c), "peers");
    }

    #[test]
    fn rejects_duplicate_peer_ids() {
        let mut c = valid();
        c.peers[2].id = NodeId::from("node-1");
        assert_eq!(field_of(&c), "peers[2].id");
    }

    #[test]
    fn rejects_empty_peer_id() {
        let mut c = valid();
        c.peers[1].id = NodeId::from("");
        assert_eq!(field_of(&c), "peers[1].id");
    }

    #[test]
    fn rejects_unparseable_addresses() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            ":8001",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "host name:80",
            "[::1:80",
            "::1:80",
        ] {
            let mut c = valid();
            c.peers[1].address = bad.to_string();
            assert_eq!(field_of(&c), "peers[1].address", "{bad}");
        }
        for good in [
            "localhost:8001",
            "[::1]:8001",
            "10.0.0.7:1",
            "raft-2.internal:9000",
        ] {
            let mut c = valid();
            c.peers[1].address = good.to_string();
            assert_eq!(c.validate(), Ok(()), "{good}");
        }
    }

    #[test]
    fn rejects_election_ticks_not_exceeding_heartbeat_ticks() {
        let mut c = valid();
        c.options.election_tick_count = 3;
        c.options.heartbeat_tick_count = 3;
        let err = c.validate().expect_err("must be rejected");
        assert_eq!(err.field, "options.election_tick_count");
        assert!(err.rule.contains("heartbeat_tick_count"), "{}", err.rule);
    }

    #[test]
    fn rejects_zero_heartbeat_ticks() {
        let mut c = valid();
        c.options.heartbeat_tick_count = 0;
        assert_eq!(field_of(&c), "options.heartbeat_tick_count");
    }

    #[test]
    fn rejects_zero_tick_interval() {
        let mut c = valid();
        c.options.nominal_tick_interval = Duration::ZERO;
        assert_eq!(field_of(&c), "options.nominal_tick_interval");
    }

    #[test]
    fn rejects_zero_entries_per_request() {
        let mut c = valid();
        c.options.max_log_entries_per_request = 0;
        assert_eq!(field_of(&c), "options.max_log_entries_per_request");
    }

    #[test]
    fn rejects_zero_timeouts() {
        let mut c = valid();
        c.options.apply_entry_timeout = Duration::ZERO;
        assert_eq!(field_of(&c), "options.apply_entry_timeout");
        let mut c = valid();
        c.options.fetch_entries_timeout = Duration::ZERO;
        assert_eq!(field_of(&c), "options.fetch_entries_timeout");
    }

    #[test]
    fn rejects_lease_without_read_index() {
        let mut c = valid();
        c.feature_flags.enable_read_index = false;
        assert_eq!(field_of(&c), "feature_flags.enable_leader_lease");
        c.feature_flags.enable_leader_lease = false;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn rejects_lease_without_check_quorum() {
        let mut c = valid();
        c.feature_flags.check_quorum = false;
        assert_eq!(field_of(&c), "feature_flags.enable_leader_lease");
    }

    #[test]
    fn rejects_zero_tuning_sizes() {
        type Setter = fn(&mut TuningParams);
        let cases: [(&str, Setter); 7] = [
            ("tuning.max_apply_batch_size", |t| {
                t.max_apply_batch_size = 0
            }),
            ("tuning.max_inflight_msgs", |t| t.max_inflight_msgs = 0),
            ("tuning.max_append_bytes", |t| t.max_append_bytes = 0),
            ("tuning.max_proposal_bytes", |t| t.max_proposal_bytes = 0),
            ("tuning.max_pending_apply_batches", |t| {
                t.max_pending_apply_batches = 0
            }),
            ("tuning.max_pending_storage_jobs", |t| {
                t.max_pending_storage_jobs = 0
            }),
            ("tuning.max_pending_reads", |t| t.max_pending_reads = 0),
        ];
        for (field, set) in cases {
            let mut c = valid();
            set(&mut c.tuning);
            assert_eq!(field_of(&c), field);
        }
    }

    #[test]
    fn rejects_byte_caps_below_one_proposal() {
        let mut c = valid();
        c.tuning.max_uncommitted_bytes = Some(10);
        assert_eq!(field_of(&c), "tuning.max_uncommitted_bytes");
        let mut c = valid();
        c.tuning.max_unapplied_bytes = Some(10);
        assert_eq!(field_of(&c), "tuning.max_unapplied_bytes");
        let mut c = valid();
        c.tuning.max_uncommitted_bytes = None;
        c.tuning.max_unapplied_bytes = None;
        assert_eq!(c.validate(), Ok(()), "None removes the bounds");
    }

    #[test]
    fn toml_round_trips_and_fills_defaults() {
        let mut c = valid();
        c.options.nominal_tick_interval = Duration::from_millis(20);
        c.tuning.max_uncommitted_bytes = Some(64 << 20);
        let text = c.to_toml_string().expect("serializes");
        assert_eq!(Config::from_toml_str(&text), Ok(c));

        let minimal = r#"
            id = "a"
            peers = [{ id = "a", address = "localhost:1" }]
            [options]
            apply_entry_timeout = 250
        "#;
        let c = Config::from_toml_str(minimal).expect("valid");
        assert_eq!(c.options.apply_entry_timeout, Duration::from_millis(250));
        assert_eq!(c.options.election_tick_count, 10);
    }

    #[test]
    fn toml_rejects_unknown_fields_and_bad_durations() {
        let typo = r#"
            id = "a"
            peers = [{ id = "a", address = "localhost:1" }]
            [options]
            election_ticks = 5
        "#;
        let err = Config::from_toml_str(typo).expect_err("unknown field");
        assert!(err.rule.contains("election_ticks"), "{}", err.rule);

        let bad = r#"
            id = "a"
            peers = [{ id = "a", address = "localhost:1" }]
            [options]
            nominal_tick_interval = "fast"
        "#;
        assert!(Config::from_toml_str(bad).is_err());
    }

    #[test]
    fn toml_validates_after_parsing() {
        let text = r#"
            id = "a"
            peers = [{ id = "b", address = "localhost:1" }]
        "#;
        assert_eq!(
            Config::from_toml_str(text).expect_err("invalid").field,
            "peers"
        );
    }

    #[test]
    fn duration_text_parses_units() {
        assert_eq!(
            duration_text::parse("15us"),
            Some(Duration::from_micros(15))
        );
        assert_eq!(
            duration_text::parse("150ms"),
            Some(Duration::from_millis(150))
        );
        assert_eq!(duration_text::parse("5s"), Some(Duration::from_secs(5)));
        assert_eq!(duration_text::parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(duration_text::parse("5"), None);
        assert_eq!(duration_text::parse("ms"), None);
        assert_eq!(duration_text::parse("3h"), None);
    }
}
