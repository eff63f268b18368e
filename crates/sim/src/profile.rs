//! Fault profiles (swarm testing): each seed draws one profile, and within it the rates of
//! each fault, so that some runs are calm, some brutal, some only partition, some only
//! crash — a mix that finds more bugs than one uniform fault rate.

use raftlock_raft::Rand;

use crate::network::NetworkConfig;

/// A family of fault schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// No faults beyond small delays.
    Calm,
    /// Loss, duplication and wide delays (reordering).
    Lossy,
    /// Symmetric, one-way and partial partitions.
    Partitions,
    /// Crashes (with torn writes) and restarts, and pauses.
    Crashes,
    /// Everything at once.
    Brutal,
    /// The leader lease with PreVote off: only CheckQuorum and the vote guard keep a
    /// deposed leader's lease sound, under delays that deliver stale leaders' messages
    /// late, partitions, pauses and crashes.
    LeaseNoPreVote,
    /// Frequent membership changes (learners added and promoted, voters removed,
    /// replaced and demoted, the leader removed, leadership transferred, removed nodes
    /// wiped and rejoined under a new id) under loss, partitions, pauses and crashes.
    Reconfig,
}

impl Profile {
    /// Every profile, in the order seeds cycle through them.
    pub const ALL: [Profile; 7] = [
        Profile::Calm,
        Profile::Lossy,
        Profile::Partitions,
        Profile::Crashes,
        Profile::Brutal,
        Profile::LeaseNoPreVote,
        Profile::Reconfig,
    ];

    /// The profile a seed gets when none is forced.
    pub fn for_seed(seed: u64) -> Profile {
        Self::ALL[(seed % Self::ALL.len() as u64) as usize]
    }

    /// Parses a profile name (as printed by `Debug`, case-insensitive).
    pub fn parse(name: &str) -> Option<Profile> {
        Self::ALL
            .into_iter()
            .find(|p| format!("{p:?}").eq_ignore_ascii_case(name))
    }
}

/// One kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Split the nodes in two groups.
    Partition,
    /// Cut one direction of one link.
    OneWay,
    /// The leader keeps contact with a single follower.
    LeaderReachesOne,
    /// The leader loses contact with everyone (the old-leader case of lease reads).
    IsolateLeader,
    /// Restore every link.
    Heal,
    /// Kill a node, losing unsynced writes; it restarts later.
    Crash,
    /// Kill the current leader (leader changes with uncommitted entries of old terms).
    CrashLeader,
    /// Freeze a node for a while.
    Pause,
}

/// One kind of membership change the simulator asks the leader for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconfigKind {
    /// Add a spare slot (a node in join mode) as a learner.
    AddLearner,
    /// Make a learner a voter (refused unless it caught up).
    Promote,
    /// Remove a voter other than the leader.
    RemoveVoter,
    /// Remove the leader itself: it leads until C_new commits, then steps down.
    RemoveLeader,
    /// Promote a learner and remove a voter in one joint change.
    Replace,
    /// Turn a voter (maybe the leader) into a learner.
    Demote,
    /// Remove a learner.
    RemoveLearner,
    /// Hand leadership to another voter.
    Transfer,
    /// Hand leadership to another voter and, once `TimeoutNow` is out, cut every link
    /// into the old leader (it still sends): a deaf old leader that keeps serving lease
    /// reads while the target is elected at once would serve stale reads.
    TransferDeaf,
    /// Two changes back to back: the second must be refused with `ChangePending`.
    SecondChange,
    /// Wipe a node removed by a committed configuration and boot its slot as a fresh
    /// node (new id, empty disk, join mode).
    Wipe,
}

/// The concrete schedule parameters of one run.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Network behaviour during the fault period.
    pub network: NetworkConfig,
    /// Faults to draw from.
    pub fault_kinds: Vec<FaultKind>,
    /// Mean time between faults (0: none).
    pub fault_interval_ms: u64,
    /// Some crashes leave a torn last write.
    pub torn_writes: bool,
    /// Maximum deviation of a node's tick period, in percent.
    pub tick_skew_pct: u64,
    /// Disk write latency range.
    pub disk_min_ms: u64,
    /// Disk write latency range.
    pub disk_max_ms: u64,
    /// Number of concurrent clients.
    pub clients: usize,
    /// Number of keys they share (few keys: more contention, harder histories).
    pub keys: usize,
    /// Chance (per mille) that a node crashes within 30 ms of becoming leader.
    pub crash_new_leader_per_mille: u64,
    /// Snapshot every this many applied entries (0: never).
    pub snapshot_threshold: u64,
    /// Entries kept behind a snapshot.
    pub log_compaction_min_entries: u64,
    /// Snapshot chunk size (0: the default).
    pub snapshot_chunk: usize,
    /// How long a client waits for an operation before it gives up (outcome unknown).
    pub client_timeout_ms: u64,
    /// Clients read through ReadIndex (leader and any node) as well as through the log.
    pub read_index: bool,
    /// The leader lease is on.
    pub lease: bool,
    /// PreVote is on (every profile but `LeaseNoPreVote`).
    pub pre_vote: bool,
    /// Configure this clock drift bound instead of one that covers the real skew (the
    /// beyond-the-bound test).
    pub drift_bound_override: Option<u32>,
    /// Flow-control window used by the nodes.
    pub max_inflight: usize,
    /// Entries per AppendEntries used by the nodes.
    pub max_entries_per_request: usize,
    /// Mean time between membership changes (0: none).
    pub reconfig_interval_ms: u64,
    /// Membership changes to draw from.
    pub reconfig_kinds: Vec<ReconfigKind>,
    /// Node slots beyond the initial voters, booted in join mode (empty peers) so that
    /// changes can add them.
    pub spare_slots: usize,
}

impl FaultPlan {
    /// Draws a plan of `profile` from `rng`.
    pub fn for_profile(profile: Profile, rng: &mut dyn Rand) -> Self {
        use FaultKind::*;
        let mut plan = FaultPlan {
            network: NetworkConfig::calm(),
            fault_kinds: Vec::new(),
            fault_interval_ms: 0,
            torn_writes: false,
            tick_skew_pct: rng.gen_range(0, 6),
            disk_min_ms: 0,
            disk_max_ms: rng.gen_range(1, 5),
            crash_new_leader_per_mille: 0,
            client_timeout_ms: crate::clients::CLIENT_TIMEOUT_MS,
            read_index: rng.gen_range(0, 4) != 0,
            lease: rng.gen_range(0, 2) == 0,
            pre_vote: true,
            drift_bound_override: None,
            snapshot_threshold: [0, 5, 20, 100, 10_000][rng.gen_range(0, 5) as usize],
            log_compaction_min_entries: [0, 3, 50][rng.gen_range(0, 3) as usize],
            snapshot_chunk: [8, 100, 0][rng.gen_range(0, 3) as usize],
            clients: rng.gen_range(1, 7) as usize,
            keys: rng.gen_range(1, 6) as usize,
            max_inflight: [4, 16, 256][rng.gen_range(0, 3) as usize],
            max_entries_per_request: [5, 20, 100][rng.gen_range(0, 3) as usize],
            reconfig_interval_ms: 0,
            reconfig_kinds: Vec::new(),
            spare_slots: 0,
        };
        let lossy = |rng: &mut dyn Rand| NetworkConfig {
            min_delay_ms: 1,
            max_delay_ms: rng.gen_range(3, 60),
            drop_per_mille: rng.gen_range(0, 200),
            duplicate_per_mille: rng.gen_range(0, 100),
            straggler_per_mille: 0,
            straggler_max_ms: 0,
        };
        match profile {
            Profile::Calm => {}
            Profile::Lossy => plan.network = lossy(rng),
            Profile::Partitions => {
                plan.fault_kinds = vec![
                    Partition,
                    Partition,
                    OneWay,
                    LeaderReachesOne,
                    IsolateLeader,
                    Heal,
                    Heal,
                ];
                plan.fault_interval_ms = rng.gen_range(200, 1500);
            }
            Profile::Crashes => {
                plan.fault_kinds = vec![Crash, CrashLeader, CrashLeader, Pause];
                plan.crash_new_leader_per_mille = rng.gen_range(0, 600);
                plan.fault_interval_ms = rng.gen_range(200, 1500);
                plan.torn_writes = rng.gen_range(0, 2) == 1;
            }
            Profile::Brutal => {
                plan.network = lossy(rng);
                plan.fault_kinds = vec![
                    Partition,
                    OneWay,
                    LeaderReachesOne,
                    IsolateLeader,
                    Heal,
                    Crash,
                    CrashLeader,
                    Pause,
                ];
                plan.fault_interval_ms = rng.gen_range(100, 800);
                plan.torn_writes = true;
                plan.crash_new_leader_per_mille = rng.gen_range(0, 400);
                plan.tick_skew_pct = rng.gen_range(0, 20);
            }
            Profile::LeaseNoPreVote => {
                plan.network = lossy(rng);
                plan.network.straggler_per_mille = rng.gen_range(5, 50);
                plan.network.straggler_max_ms = rng.gen_range(200, 1500);
                plan.lease = true;
                plan.pre_vote = false;
                plan.read_index = true;
                plan.fault_kinds = vec![
                    Partition,
                    OneWay,
                    OneWay,
                    LeaderReachesOne,
                    IsolateLeader,
                    IsolateLeader,
                    Heal,
                    Crash,
                    Pause,
                ];
                plan.fault_interval_ms = rng.gen_range(100, 800);
            }
            Profile::Reconfig => {
                plan.network = lossy(rng);
                plan.network.drop_per_mille /= 2;
                plan.fault_kinds = vec![
                    Partition,
                    OneWay,
                    LeaderReachesOne,
                    IsolateLeader,
                    Heal,
                    Heal,
                    Crash,
                    CrashLeader,
                    Pause,
                ];
                plan.fault_interval_ms = rng.gen_range(150, 1000);
                plan.torn_writes = rng.gen_range(0, 2) == 1;
                plan.crash_new_leader_per_mille = rng.gen_range(0, 200);
                plan.pre_vote = rng.gen_range(0, 4) != 0;
            }
        }
        // Membership changes: always in `Reconfig`, in half of the runs of every other
        // profile (drawn last, so the draws above keep their meaning), so that the normal
        // sweep covers reconfiguration under each kind of fault as well as without it.
        let (reconfig, interval) = if profile == Profile::Reconfig {
            (true, rng.gen_range(80, 400))
        } else {
            (rng.gen_range(0, 2) == 0, rng.gen_range(200, 1200))
        };
        if reconfig {
            use ReconfigKind::*;
            plan.reconfig_interval_ms = interval;
            plan.reconfig_kinds = vec![
                AddLearner,
                AddLearner,
                Promote,
                Promote,
                RemoveVoter,
                RemoveLeader,
                Replace,
                Demote,
                RemoveLearner,
                Transfer,
                Transfer,
                TransferDeaf,
                SecondChange,
                Wipe,
            ];
            plan.spare_slots = 2;
        }
        plan
    }
}
