//! Golden-file protocol traces: scenarios in `testdata/*.txt` drive a [`Cluster`] command
//! by command, and every `Ready` a core produces is printed, so a reviewer reads a
//! membership change as the messages it took, and any change of behaviour shows up as a
//! diff of a trace (`REWRITE=1` regenerates them; review the diff before committing).
//!
//! The commands, after etcd-io/raft's interaction tests (nodes are numbered, `n<i>`):
//!
//! - `cluster n=3 [seed=1] [prevote=false] [lease=false] [checkquorum=false]
//!   [election=10] [heartbeat=1] [snapshot=0] [keep=0] [lag=N]`: a new cluster of voters
//!   `n1..n<n>`; the options apply to nodes joined later too (`snapshot` and `keep` set
//!   `snapshot_threshold` and `log_compaction_min_entries`, `lag` `max_promotion_lag`);
//! - `join id=4`: a node with empty storage and no peers;
//! - `campaign id=1`: ticks the node until its election timeout expires;
//! - `stabilize`: delivers queued messages, oldest first, until none is left (a
//!   message on a cut link is printed as dropped);
//! - `tick id=1 [n=1]`, `tick-all [n=1]`: ticks, without delivering anything;
//! - `propose id=1 data=x`, `change id=1 voters=(1,2) [learners=(3)]`,
//!   `transfer id=1 to=2`: print the result, then the proposer's `Ready`;
//! - `isolate id=3`, `partition a=1 b=2`, `heal`: cut and restore links;
//! - `deliver [from=1] [to=3] [kind=AppendEntries]`: delivers the matching queued
//!   messages once (what they cause stays queued), to stop a scenario half way;
//! - `drop [from=1] [to=3] [kind=AppendEntries]`: removes matching queued messages;
//! - `status [id=1]`, `log id=1`: a node's state and log;
//! - `restart id=2`: a crash and restart from what the node stored.
//!
//! Every command takes `quiet`, which hides the `Ready`s it caused (for set-up steps).
//!
//! A `Ready` prints as a header, `n1: term=2 role=Leader commit=5`, with `membership=` when
//! the configuration in effect changed, then one indented line per item: the hard state
//! and log writes, snapshot writes and restores, entries to apply, snapshot and
//! compaction requests, campaigns started and messages (`-> n2 Kind ...`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;

use super::harness::{id, Cluster};
use crate::config::Config;
use crate::core::{RaftCore, Ready, SnapshotWrite};
use crate::error::Error;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::testutil::datadriven::{run_file, TestCase};
use crate::types::{Entry, EntryKind, InitialState, NodeId, Role};

/// One line per item of `rd`, which `core` just produced (called by the harness's
/// `process` when tracing).
pub(super) fn describe_ready(core: &RaftCore, rd: &Ready) -> Vec<String> {
    let mut header = format!(
        "{}: term={} role={:?} commit={}",
        core.id(),
        core.term(),
        core.role(),
        core.commit_index()
    );
    if let Some(m) = &rd.membership {
        let _ = write!(header, " membership={m}");
    }
    let mut lines = vec![header];
    let mut item = |s: String| lines.push(format!("  {s}"));
    if let Some(w) = &rd.write {
        for sw in &w.snapshot {
            match sw {
                SnapshotWrite::Chunk { meta, offset, data } => item(format!(
                    "write snapshot chunk {}/{} offset={offset} len={}",
                    meta.last_index,
                    meta.last_term,
                    data.len()
                )),
                SnapshotWrite::Install { info, log } => item(format!(
                    "install snapshot {}/{} log={log:?} membership={}",
                    info.meta.last_index,
                    info.meta.last_term,
                    membership_of(info.meta.membership.as_deref())
                )),
            }
        }
        if let Some(hs) = &w.hard_state {
            let vote = hs.voted_for.as_ref().map_or("-", |v| v.as_str());
            item(format!("hard state term={} vote={vote}", hs.term));
        }
        if let Some(from) = w.log.truncate_from {
            item(format!("truncate from={from}"));
        }
        if !w.log.entries.is_empty() {
            item(format!("append {}", entries(&w.log.entries)));
        }
    }
    if let Some(info) = &rd.snapshot {
        item(format!(
            "restore snapshot {}/{}",
            info.meta.last_index, info.meta.last_term
        ));
    }
    if !rd.committed_entries.is_empty() {
        item(format!("apply {}", entries(&rd.committed_entries)));
    }
    if let Some(at) = rd.snapshot_request {
        item(format!("build snapshot at={at}"));
    }
    if let Some(to) = rd.compact_to {
        item(format!("compact to={to}"));
    }
    for e in &rd.elections {
        item(format!(
            "campaign term={} reason={}",
            e.term,
            e.reason.label()
        ));
    }
    for m in &rd.messages {
        item(message(m));
    }
    for c in &rd.snapshot_chunks {
        item(format!("{} len={}", message(&c.message), c.len));
    }
    lines
}

/// `-> to Kind term=T ...` with the fields that matter for the protocol.
fn message(m: &Message) -> String {
    let mut s = format!("-> {} {} term={}", m.to, m.kind(), m.term);
    let _ = match &m.body {
        MessageBody::RequestVote(r) => {
            let transfer = if r.transfer { " transfer" } else { "" };
            write!(
                s,
                " last={}/{}{transfer}",
                r.last_log_index, r.last_log_term
            )
        }
        MessageBody::RequestVoteResponse(r) => {
            s.push_str(if r.granted { " granted" } else { " rejected" });
            Ok(())
        }
        MessageBody::AppendEntries(a) => write!(
            s,
            " prev={}/{} entries={} commit={}",
            a.prev_log_index,
            a.prev_log_term,
            entries(&a.entries),
            a.leader_commit
        ),
        MessageBody::AppendEntriesResponse(r) if r.success => write!(s, " ok index={}", r.index),
        MessageBody::AppendEntriesResponse(r) => {
            let hint = r.conflict.map_or("-".to_string(), |h| {
                format!(
                    "{}/{}",
                    h.index,
                    h.term.map_or("-".into(), |t| t.to_string())
                )
            });
            write!(s, " reject index={} hint={hint}", r.index)
        }
        MessageBody::Heartbeat(h) => write!(s, " commit={}", h.commit),
        MessageBody::HeartbeatResponse(_) | MessageBody::TimeoutNow => Ok(()),
        MessageBody::InstallSnapshot(i) => write!(
            s,
            " snapshot={}/{} offset={}{} membership={}",
            i.meta.last_index,
            i.meta.last_term,
            i.offset,
            if i.done { " done" } else { "" },
            membership_of(i.meta.membership.as_deref())
        ),
        MessageBody::InstallSnapshotResponse(r) => write!(
            s,
            " index={} next_offset={}{}",
            r.last_index,
            r.next_offset,
            if r.installed { " installed" } else { "" }
        ),
        MessageBody::ReadIndex(r) => write!(s, " id={}", r.id),
        MessageBody::ReadIndexResponse(r) => write!(s, " id={} index={:?}", r.id, r.index),
    };
    s
}

fn membership_of(m: Option<&Membership>) -> String {
    m.map_or_else(|| "none".to_string(), |m| format!("({m})"))
}

/// `[i/t Kind, ...]`: a normal entry shows its command, a configuration entry what it
/// sets.
fn entries(es: &[Entry]) -> String {
    let items: Vec<String> = es.iter().map(entry).collect();
    format!("[{}]", items.join(", "))
}

fn entry(e: &Entry) -> String {
    let what = match e.kind {
        EntryKind::Normal => format!("Normal({})", String::from_utf8_lossy(&e.data)),
        EntryKind::Noop => "Noop".to_string(),
        EntryKind::ConfigChange => match Membership::decode(&e.data) {
            Ok(m) => format!("ConfigChange({m})"),
            Err(err) => format!("ConfigChange(undecodable: {err})"),
        },
    };
    format!("{}/{} {what}", e.index, e.term)
}

/// The options a trace's cluster was created with; nodes joined later get them too.
#[derive(Clone, Debug, Default)]
struct Tune {
    prevote: Option<bool>,
    lease: Option<bool>,
    checkquorum: Option<bool>,
    election: Option<u32>,
    heartbeat: Option<u32>,
    snapshot: Option<u64>,
    keep: Option<u64>,
    lag: Option<u64>,
}

impl Tune {
    fn apply(&self, c: &mut Config) {
        if let Some(v) = self.prevote {
            c.feature_flags.pre_vote_enabled = v;
        }
        if let Some(v) = self.checkquorum {
            c.feature_flags.check_quorum = v;
        }
        if let Some(v) = self.lease {
            c.feature_flags.enable_leader_lease = v;
        }
        if let Some(v) = self.election {
            c.options.election_tick_count = v;
        }
        if let Some(v) = self.heartbeat {
            c.options.heartbeat_tick_count = v;
        }
        if let Some(v) = self.snapshot {
            c.options.snapshot_threshold = v;
        }
        if let Some(v) = self.keep {
            c.options.log_compaction_min_entries = v;
        }
        if let Some(v) = self.lag {
            c.tuning.max_promotion_lag = v;
        }
    }
}

/// The state of one trace file: the cluster and the options it was made with.
#[derive(Default)]
struct Trace {
    cluster: Option<Cluster>,
    tune: Tune,
    seed: u64,
}

impl Trace {
    fn c(&mut self) -> &mut Cluster {
        self.cluster
            .as_mut()
            .expect("no cluster yet: start with `cluster`")
    }

    /// Runs one command; returns what it printed.
    fn run(&mut self, tc: &TestCase) -> String {
        let mut out = Vec::new();
        match tc.cmd.as_str() {
            "cluster" => self.cluster_cmd(tc),
            "join" => {
                tc.check_args(&["id", "quiet"]);
                let i = node(tc, "id");
                let (tune, seed) = (self.tune.clone(), self.seed * 1000 + 500 + i as u64);
                let c = self.c();
                c.join(i, seed, |cfg| tune.apply(cfg));
                c.process(&id(i));
            }
            "campaign" => {
                tc.check_args(&["id", "quiet"]);
                let i = node(tc, "id");
                let c = self.c();
                // Not the harness's `expire_election_timeout`, which panics: a node that
                // does not vote never campaigns, and a trace shows that.
                let started = (0..1000).any(|_| {
                    c.tick(i);
                    c.node(i).role() != Role::Follower
                });
                if !started {
                    out.push(format!("{} did not campaign within 1000 ticks", id(i)));
                }
            }
            "stabilize" => {
                tc.check_args(&["quiet"]);
                self.stabilize();
            }
            "tick" => {
                tc.check_args(&["id", "n", "quiet"]);
                let i = node(tc, "id");
                let n = tc.parse_arg("n").unwrap_or(1);
                self.c().tick_n(i, n);
            }
            "tick-all" => {
                tc.check_args(&["n", "quiet"]);
                let n: u32 = tc.parse_arg("n").unwrap_or(1);
                for _ in 0..n {
                    self.c().tick_all();
                }
            }
            "propose" => {
                tc.check_args(&["id", "data", "quiet"]);
                let i = node(tc, "id");
                let data: String = tc.parse_arg("data").expect("data=");
                let c = self.c();
                let r = c.node_mut(i).core.propose(Bytes::from(data));
                out.push(result(r));
                c.process(&id(i));
            }
            "change" => {
                tc.check_args(&["id", "voters", "learners", "quiet"]);
                let i = node(tc, "id");
                let voters = ids(tc, "voters");
                let learners = ids(tc, "learners");
                let c = self.c();
                let r = c
                    .node_mut(i)
                    .core
                    .change_membership(voters, learners, BTreeMap::new());
                out.push(result(r));
                c.process(&id(i));
            }
            "transfer" => {
                tc.check_args(&["id", "to", "quiet"]);
                let i = node(tc, "id");
                let to = id(node(tc, "to"));
                let c = self.c();
                let r = c.node_mut(i).core.transfer_leader(to);
                out.push(result(r.map(|()| Done)));
                c.process(&id(i));
            }
            "isolate" => {
                tc.check_args(&["id"]);
                let i = node(tc, "id");
                let c = self.c();
                let all: Vec<NodeId> = c.nodes.keys().cloned().collect();
                for other in all.into_iter().filter(|o| *o != id(i)) {
                    c.cut.insert((id(i), other.clone()));
                    c.cut.insert((other, id(i)));
                }
            }
            "partition" => {
                tc.check_args(&["a", "b"]);
                let (a, b) = (node(tc, "a"), node(tc, "b"));
                self.c().partition(a, b);
            }
            "heal" => {
                tc.check_args(&[]);
                self.c().heal();
            }
            "drop" => {
                tc.check_args(&["from", "to", "kind"]);
                let pred = filter(tc);
                for m in &self.c().take(pred) {
                    out.push(dropped(m));
                }
            }
            "deliver" => {
                tc.check_args(&["from", "to", "kind", "quiet"]);
                let pred = filter(tc);
                let c = self.c();
                c.process_all();
                for m in c.take(pred) {
                    c.deliver_or_drop(m);
                }
            }
            "status" => {
                tc.check_args(&["id"]);
                let only = tc.parse_arg::<usize>("id").map(id);
                let c = self.c();
                for (who, n) in &c.nodes {
                    if only.as_ref().is_none_or(|o| o == who) {
                        out.push(status(&n.core, &n.applied));
                    }
                }
            }
            "log" => {
                tc.check_args(&["id"]);
                let i = node(tc, "id");
                let core = self.c().node(i);
                // The log kept in memory, which may start before the snapshot's index
                // (`log_compaction_min_entries`).
                out.push(format!(
                    "{}: snapshot={}/{} log={}",
                    id(i),
                    core.snapshot_index(),
                    core.term_at(core.snapshot_index()).unwrap_or(0),
                    entries(&log(core))
                ));
            }
            "restart" => {
                tc.check_args(&["id", "quiet"]);
                let i = node(tc, "id");
                let seed = self.seed * 1000 + 700 + i as u64;
                let c = self.c();
                c.restart(i, seed);
                c.process(&id(i));
            }
            other => panic!("unknown command `{other}`"),
        }
        let readies = self
            .cluster
            .as_mut()
            .and_then(|c| c.trace.as_mut())
            .map(std::mem::take)
            .unwrap_or_default();
        if !tc.has_arg("quiet") {
            out.extend(readies);
        }
        if out.is_empty() {
            "ok".to_string()
        } else {
            out.join("\n")
        }
    }

    fn cluster_cmd(&mut self, tc: &TestCase) {
        tc.check_args(&[
            "n",
            "seed",
            "prevote",
            "lease",
            "checkquorum",
            "election",
            "heartbeat",
            "snapshot",
            "keep",
            "lag",
            "quiet",
        ]);
        let n: usize = tc.parse_arg("n").expect("n=");
        self.seed = tc.parse_arg("seed").unwrap_or(1);
        self.tune = Tune {
            prevote: tc.parse_arg("prevote"),
            lease: tc.parse_arg("lease"),
            checkquorum: tc.parse_arg("checkquorum"),
            election: tc.parse_arg("election"),
            heartbeat: tc.parse_arg("heartbeat"),
            snapshot: tc.parse_arg("snapshot"),
            keep: tc.parse_arg("keep"),
            lag: tc.parse_arg("lag"),
        };
        let tune = self.tune.clone();
        let mut c = Cluster::with(
            n,
            self.seed,
            |cfg| tune.apply(cfg),
            |_| InitialState::default(),
        );
        c.trace = Some(Vec::new());
        c.process_all();
        self.cluster = Some(c);
    }

    /// Delivers queued messages, oldest first, until none is left; each delivery prints
    /// the `Ready` it caused. A message on a cut link is dropped, and says so.
    fn stabilize(&mut self) {
        let c = self.c();
        c.process_all();
        for _ in 0..10_000 {
            let Some(m) = c.queue.pop_front() else {
                return;
            };
            c.deliver_or_drop(m);
        }
        panic!("message storm: the queue never drained");
    }
}

impl Cluster {
    /// Delivers `m`, or traces that it was dropped if its link is cut.
    fn deliver_or_drop(&mut self, m: Message) {
        if self.cut.contains(&(m.from.clone(), m.to.clone())) {
            self.trace.get_or_insert_with(Vec::new).push(dropped(&m));
        } else {
            self.deliver(m);
        }
    }
}

fn dropped(m: &Message) -> String {
    format!("dropped {} {}", m.from, message(m))
}

/// The queued messages `from`, `to` and of `kind` that a case names (all if none).
fn filter(tc: &TestCase) -> impl Fn(&Message) -> bool {
    let from = tc.parse_arg::<usize>("from").map(id);
    let to = tc.parse_arg::<usize>("to").map(id);
    let kind: Option<String> = tc.parse_arg("kind");
    move |m| {
        from.as_ref().is_none_or(|f| m.from == *f)
            && to.as_ref().is_none_or(|t| m.to == *t)
            && kind.as_ref().is_none_or(|k| m.kind() == k)
    }
}

/// A success with nothing to say: prints as `ok`.
struct Done;

impl std::fmt::Debug for Done {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

/// `ok <value>`, or `refused: <error>` (the membership error alone, without its wrapper).
fn result<T: std::fmt::Debug>(r: crate::error::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}").trim_end().to_string(),
        Err(Error::Membership(e)) => format!("refused: {e:?}"),
        Err(e) => format!("refused: {e:?}"),
    }
}

/// Node number of argument `key`.
fn node(tc: &TestCase, key: &str) -> usize {
    tc.parse_arg(key)
        .unwrap_or_else(|| panic!("{}: {key}= missing", tc.pos))
}

fn ids(tc: &TestCase, key: &str) -> BTreeSet<NodeId> {
    tc.parse_args::<usize>(key)
        .unwrap_or_default()
        .into_iter()
        .map(id)
        .collect()
}

fn log(core: &RaftCore) -> Vec<Entry> {
    (core.first_index()..=core.last_index())
        .filter_map(|i| core.entry(i).cloned())
        .collect()
}

fn status(core: &RaftCore, applied: &[Entry]) -> String {
    let applied: Vec<String> = applied
        .iter()
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect();
    format!(
        "{}: role={:?} term={} leader={} commit={} last={} membership=({}) at={} committed=({}) applied=[{}]",
        core.id(),
        core.role(),
        core.term(),
        core.leader().map_or("-", |l| l.as_str()),
        core.commit_index(),
        core.last_index(),
        core.membership(),
        core.membership_index(),
        core.committed_membership(),
        applied.join(" ")
    )
}

/// Runs `testdata/<file>`.
fn run(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/core/tests/testdata")
        .join(file);
    let mut trace = Trace::default();
    run_file(&path, |tc| trace.run(tc));
}

#[test]
fn add_learner_promote() {
    run("add_learner_promote.txt");
}

#[test]
fn confchange_joint_autoleave() {
    run("confchange_joint_autoleave.txt");
}

#[test]
fn confchange_safety() {
    run("confchange_safety.txt");
}

#[test]
fn confchange_idempotency() {
    run("confchange_idempotency.txt");
}

#[test]
fn confchange_promote_demote() {
    run("confchange_promote_demote.txt");
}

#[test]
fn remove_leader() {
    run("remove_leader.txt");
}

#[test]
fn replace_voter() {
    run("replace_voter.txt");
}

#[test]
fn config_truncated() {
    run("config_truncated.txt");
}

#[test]
fn join_snapshot() {
    run("join_snapshot.txt");
}

#[test]
fn transfer() {
    run("transfer.txt");
}

#[test]
fn demote_leader() {
    run("demote_leader.txt");
}

#[test]
fn joint_leader_change() {
    run("joint_leader_change.txt");
}
