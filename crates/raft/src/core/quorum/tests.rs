//! Golden-file tests of the quorum arithmetic, ported from etcd-io/raft's
//! `quorum/testdata`: every case of its `majority_commit`, `majority_vote`,
//! `joint_commit` and `joint_vote` files, each annotated with etcd's recorded result.
//!
//! The commands (see `testdata/*.txt`):
//!
//! - `committed cfg=(ids) [cfgj=(ids)|cfgj=zero] idx=(..)` prints the committed index;
//! - `vote cfg=(ids) [cfgj=(ids)|cfgj=zero] votes=(..)` prints the election outcome.
//!
//! `cfg` is the incoming configuration; `cfgj` makes the case a joint one with that
//! outgoing configuration (`zero`: joint with an empty one). The values of `idx` and
//! `votes` (`y`, `n`) belong to the voters in the order they first appear in `cfg`, then
//! `cfgj`, as in etcd; `_` is a voter that has not answered. Like etcd's harness, each
//! case is also computed in ways that must agree (halves swapped; a simple majority
//! joined with an empty or an identical set), and any disagreement is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;

use super::{majority, JointConfig, VoteResult};
use crate::testutil::datadriven::{run_file, TestCase};
use crate::types::{Index, NodeId};

#[test]
fn majority_commit() {
    run("majority_commit.txt");
}

#[test]
fn majority_vote() {
    run("majority_vote.txt");
}

#[test]
fn joint_commit() {
    run("joint_commit.txt");
}

#[test]
fn joint_vote() {
    run("joint_vote.txt");
}

/// Runs one file of `testdata/`.
fn run(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/core/quorum/testdata")
        .join(file);
    run_file(&path, |tc| match tc.cmd.as_str() {
        "committed" => committed(tc),
        "vote" => vote(tc),
        other => panic!("unknown command `{other}`"),
    });
}

/// The configuration of a case and each voter's answer (`None` for `_`).
struct Case<T> {
    incoming: BTreeSet<NodeId>,
    /// `None` for a simple majority case, `Some` (possibly empty) for a joint one.
    outgoing: Option<BTreeSet<NodeId>>,
    answers: BTreeMap<NodeId, Option<T>>,
}

impl<T: Copy> Case<T> {
    /// Reads `cfg`, `cfgj` and the answers in argument `key`, each parsed by `parse`.
    fn read(tc: &TestCase, key: &str, parse: impl Fn(&str) -> T) -> Self {
        tc.check_args(&["cfg", "cfgj", key]);
        tc.check_no_input();
        let ids = |key: &str| -> Vec<NodeId> {
            tc.arg(key)
                .unwrap_or_default()
                .iter()
                .map(|id| NodeId::from(id.as_str()))
                .collect()
        };
        let cfg = ids("cfg");
        let cfgj = match tc.arg("cfgj") {
            None => None,
            Some([zero]) if zero == "zero" => Some(Vec::new()),
            Some(_) => Some(ids("cfgj")),
        };
        // Values go to the voters in order of first appearance, as in etcd's harness
        // (not sorted: `cfg=(1,3) cfgj=(2) idx=(a,b,c)` gives 3 the value b).
        let mut order: Vec<NodeId> = Vec::new();
        for id in cfg.iter().chain(cfgj.iter().flatten()) {
            if !order.contains(id) {
                order.push(id.clone());
            }
        }
        let values = tc.arg(key).unwrap_or_default();
        assert_eq!(
            values.len(),
            order.len(),
            "`{key}` has {} values for the {} voters {order:?}",
            values.len(),
            order.len()
        );
        let answers = order
            .into_iter()
            .zip(values)
            .map(|(id, v)| (id, (v != "_").then(|| parse(v))))
            .collect();
        Case {
            incoming: cfg.into_iter().collect(),
            outgoing: cfgj.map(|ids| ids.into_iter().collect()),
            answers,
        }
    }

    /// The answer of voter `id`, as the quorum functions ask for it.
    fn answer(&self, id: &NodeId) -> Option<T> {
        self.answers.get(id).copied().flatten()
    }

    /// Computes the result with `simple` (a majority) or `joint`, and the same result
    /// in ways that must agree; prints the result and any way that disagreed.
    fn report<R: PartialEq + Debug>(
        &self,
        name: &str,
        simple: impl Fn(&BTreeSet<NodeId>) -> R,
        joint: impl Fn(JointConfig<'_>) -> R,
        show: impl Fn(&R) -> String,
    ) -> String {
        let empty = BTreeSet::new();
        let pair = |incoming, outgoing| JointConfig { incoming, outgoing };
        let (result, checks) = match &self.outgoing {
            None => (
                simple(&self.incoming),
                vec![
                    (
                        "joint with an empty set",
                        joint(pair(&self.incoming, &empty)),
                    ),
                    (
                        "joint with itself",
                        joint(pair(&self.incoming, &self.incoming)),
                    ),
                ],
            ),
            Some(outgoing) => (
                joint(pair(&self.incoming, outgoing)),
                vec![("halves swapped", joint(pair(outgoing, &self.incoming)))],
            ),
        };
        let mut out = format!("{name}: {}\n", show(&result));
        for (how, other) in checks {
            if other != result {
                out.push_str(&format!("  but {}: {}\n", how, show(&other)));
            }
        }
        out
    }
}

/// `committed`: the committed index of the configuration.
fn committed(tc: &TestCase) -> String {
    let case = Case::read(tc, "idx", |v| {
        v.parse::<Index>()
            .unwrap_or_else(|e| panic!("bad index `{v}`: {e}"))
    });
    case.report(
        "committed",
        |voters| majority::committed_index(voters, |id| case.answer(id)),
        |joint| joint.committed_index(|id| case.answer(id)),
        |&idx| match idx {
            // What an empty configuration commits.
            Index::MAX => "Index::MAX".to_owned(),
            idx => idx.to_string(),
        },
    )
}

/// `vote`: the outcome of the election.
fn vote(tc: &TestCase) -> String {
    let case = Case::read(tc, "votes", |v| match v {
        "y" => true,
        "n" => false,
        _ => panic!("bad vote `{v}` (y, n or _)"),
    });
    case.report(
        "vote",
        |voters| majority::vote_result(voters, |id| case.answer(id)),
        |joint| joint.vote_result(|id| case.answer(id)),
        |r: &VoteResult| format!("{r:?}"),
    )
}
