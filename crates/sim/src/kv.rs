//! The key-value state machine the simulated clients drive, and the encoding of its
//! commands in log entries. Every command carries a unique operation id so the simulator
//! can tell which client operation an applied entry is, and count how often it applied.

use std::collections::HashMap;

use crate::linearizability::{KvOp, KvResult};

/// A command as stored in a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Unique id of the client operation.
    pub op_id: u64,
    /// The key it acts on.
    pub key: String,
    /// What it does.
    pub op: KvOp,
}

// Generated keys and values never contain the separator, and `~` stands for "absent".
const SEP: char = '|';
const ABSENT: &str = "~";

impl Command {
    /// Encodes the command as log entry data.
    pub fn encode(&self) -> Vec<u8> {
        let body = match &self.op {
            KvOp::Put { value } => format!("put{SEP}{value}"),
            KvOp::Get => "get".to_string(),
            KvOp::Cas { from, to } => {
                format!("cas{SEP}{}{SEP}{to}", from.as_deref().unwrap_or(ABSENT))
            }
            KvOp::Append { suffix } => format!("app{SEP}{suffix}"),
            KvOp::Delete => "del".to_string(),
        };
        format!("{}{SEP}{}{SEP}{body}", self.op_id, self.key).into_bytes()
    }

    /// Decodes [`Command::encode`]; `None` for anything else.
    pub fn decode(data: &[u8]) -> Option<Command> {
        let text = std::str::from_utf8(data).ok()?;
        let mut parts = text.split(SEP);
        let op_id = parts.next()?.parse().ok()?;
        let key = parts.next()?.to_string();
        let op = match parts.next()? {
            "put" => KvOp::Put {
                value: parts.next()?.to_string(),
            },
            "get" => KvOp::Get,
            "cas" => {
                let from = parts.next()?;
                KvOp::Cas {
                    from: (from != ABSENT).then(|| from.to_string()),
                    to: parts.next()?.to_string(),
                }
            }
            "app" => KvOp::Append {
                suffix: parts.next()?.to_string(),
            },
            "del" => KvOp::Delete,
            _ => return None,
        };
        Some(Command { op_id, key, op })
    }
}

/// The replicated key-value store of one node (volatile: rebuilt by replaying the log).
#[derive(Debug, Default)]
pub struct KvStore {
    data: HashMap<String, String>,
    /// Self-test bug: answer reads with the value before the latest write.
    stale_reads: bool,
    previous: HashMap<String, Option<String>>,
}

impl KvStore {
    /// A store that answers reads with the value before the latest write (a deliberate
    /// bug for the simulator's self-tests: the history checker must catch it).
    pub fn with_stale_reads() -> Self {
        KvStore {
            stale_reads: true,
            ..Default::default()
        }
    }

    /// Reads a key directly (a ReadIndex or lease read served from local state).
    pub fn read(&self, key: &str) -> Option<String> {
        if self.stale_reads {
            return self.previous.get(key).cloned().flatten();
        }
        self.data.get(key).cloned()
    }

    /// The store's contents as snapshot data (sorted, one `key\tvalue` line per key).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut keys: Vec<&String> = self.data.keys().collect();
        keys.sort();
        let mut out = String::new();
        for k in keys {
            out.push_str(k);
            out.push('\t');
            out.push_str(&self.data[k]);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Replaces the contents with a snapshot's; `None` if the data is malformed.
    pub fn restore(&mut self, data: &[u8]) -> Option<()> {
        let text = std::str::from_utf8(data).ok()?;
        let mut map = HashMap::new();
        for line in text.lines() {
            let (k, v) = line.split_once('\t')?;
            map.insert(k.to_string(), v.to_string());
        }
        self.data = map;
        self.previous.clear();
        Some(())
    }

    /// A hash of the contents, to compare state machines across nodes.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.snapshot() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// Applies a command and returns what the client gets back.
    pub fn apply(&mut self, cmd: &Command) -> KvResult {
        let current = self.data.get(&cmd.key).cloned();
        if self.stale_reads {
            if cmd.op == KvOp::Get {
                let stale = self.previous.get(&cmd.key).cloned().flatten();
                return KvResult::Value(stale);
            }
            self.previous.insert(cmd.key.clone(), current.clone());
        }
        match &cmd.op {
            KvOp::Put { value } => {
                self.data.insert(cmd.key.clone(), value.clone());
                KvResult::Done
            }
            KvOp::Get => KvResult::Value(current),
            KvOp::Cas { from, to } => {
                if current == *from {
                    self.data.insert(cmd.key.clone(), to.clone());
                    KvResult::CasOk
                } else {
                    KvResult::CasFailed { current }
                }
            }
            KvOp::Append { suffix } => {
                let mut v = current.unwrap_or_default();
                v.push_str(suffix);
                self.data.insert(cmd.key.clone(), v);
                KvResult::Done
            }
            KvOp::Delete => {
                self.data.remove(&cmd.key);
                KvResult::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let ops = [
            KvOp::Put { value: "v1".into() },
            KvOp::Get,
            KvOp::Cas {
                from: None,
                to: "a".into(),
            },
            KvOp::Cas {
                from: Some("a".into()),
                to: "b".into(),
            },
            KvOp::Append { suffix: "x".into() },
            KvOp::Delete,
        ];
        for op in ops {
            let c = Command {
                op_id: 42,
                key: "k3".into(),
                op,
            };
            assert_eq!(Command::decode(&c.encode()), Some(c));
        }
        assert_eq!(Command::decode(b"garbage"), None);
    }

    #[test]
    fn store_semantics() {
        let mut s = KvStore::default();
        let c = |op| Command {
            op_id: 1,
            key: "k".into(),
            op,
        };
        assert_eq!(s.apply(&c(KvOp::Get)), KvResult::Value(None));
        assert_eq!(
            s.apply(&c(KvOp::Cas {
                from: None,
                to: "a".into()
            })),
            KvResult::CasOk
        );
        assert_eq!(
            s.apply(&c(KvOp::Cas {
                from: None,
                to: "b".into()
            })),
            KvResult::CasFailed {
                current: Some("a".into())
            }
        );
        s.apply(&c(KvOp::Append { suffix: "z".into() }));
        assert_eq!(s.apply(&c(KvOp::Get)), KvResult::Value(Some("az".into())));
        s.apply(&c(KvOp::Delete));
        assert_eq!(s.apply(&c(KvOp::Get)), KvResult::Value(None));
    }
}
