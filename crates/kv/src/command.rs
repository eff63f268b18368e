//! What goes into the log and what comes out of applying it. Both are JSON so that a log
//! or a snapshot can be read with ordinary tools; the size overhead is small next to the
//! per-entry framing. Both use serde's default, externally tagged enum form
//! (`{"put":{...}}`): the internally tagged and flattened forms buffer every field before
//! decoding it, which cost a visible share of the CPU per write.

use raftlock_raft::Index;
use serde::{Deserialize, Serialize};

/// A write, as proposed to Raft and stored in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Set `key` to `to` if it currently holds `from` (`None`: if it is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold; `None` means it must be absent.
        from: Option<String>,
        /// The value written if the comparison holds.
        to: String,
    },
}

impl Command {
    /// The command as log entry data.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses log entry data; `None` if it is not a command.
    pub fn decode(data: &[u8]) -> Option<Command> {
        serde_json::from_slice(data).ok()
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A put was applied.
    Stored,
    /// A delete was applied; `existed` tells whether the key was there.
    Deleted {
        /// Whether the key existed.
        existed: bool,
    },
    /// A compare-and-swap succeeded.
    Swapped,
    /// A compare-and-swap failed; nothing changed.
    CasFailed {
        /// The value the key held (`None`: absent).
        current: Option<String>,
    },
    /// The entry was not a command this store understands; nothing changed. Only a
    /// foreign writer to the log can cause this.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The applier's answer to one command: its log index and outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index at which the command was applied.
    pub index: Index,
    /// What it did.
    pub outcome: Outcome,
}

impl Applied {
    /// The answer as bytes, returned through `propose_and_wait`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses [`Applied::encode`].
    pub fn decode(data: &[u8]) -> Result<Applied, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let commands = [
            Command::Put {
                key: "k".into(),
                value: "v \"quoted\" ü".into(),
            },
            Command::Delete { key: "k".into() },
            Command::Cas {
                key: "k".into(),
                from: None,
                to: "x".into(),
            },
        ];
        for c in commands {
            assert_eq!(Command::decode(&c.encode()), Some(c));
        }
        assert_eq!(Command::decode(b"SET x=1"), None);
        assert_eq!(Command::decode(br#"{"drop_all":{}}"#), None);
        let put = Command::Put {
            key: "k".into(),
            value: "v".into(),
        };
        assert_eq!(put.encode(), br#"{"put":{"key":"k","value":"v"}}"#);
    }

    #[test]
    fn applied_round_trips() {
        let a = Applied {
            index: 7,
            outcome: Outcome::CasFailed {
                current: Some("old".into()),
            },
        };
        assert_eq!(Applied::decode(&a.encode()).unwrap(), a);
    }
}
