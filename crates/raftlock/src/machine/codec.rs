//! The byte format of entries and answers (`proto/raftlock_log.proto`), and the mapping to
//! the machine's own types. Decoding is strict: a missing session, lists of different
//! lengths or an unknown enum value is an error, never a default.

use prost::Message;

use super::command::{AcquireCommand, Command, Entry, ReleaseCommand, SessionId};
use super::response::{
    AcquireOutcome, NotAcquired, Refusal, RefusalKind, ReleaseOutcome, Response,
};
use crate::proto::log as pb;

/// Why bytes are not a valid entry or answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not protobuf of the expected message.
    #[error("{0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A required part is missing or a value is out of its range.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(message.into())
}

pub(crate) fn session_to_pb(id: SessionId) -> pb::SessionRef {
    pb::SessionRef {
        index: id.index,
        nonce: id.nonce,
    }
}

pub(crate) fn session_from_pb(r: Option<pb::SessionRef>) -> Result<SessionId, DecodeError> {
    let r = r.ok_or_else(|| invalid("the session is missing"))?;
    if r.index == 0 {
        return Err(invalid("session index 0"));
    }
    Ok(SessionId {
        index: r.index,
        nonce: r.nonce,
    })
}

fn optional_session(r: Option<pb::SessionRef>) -> Result<Option<SessionId>, DecodeError> {
    r.map(|r| session_from_pb(Some(r))).transpose()
}

/// Encodes an entry for the log.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    use pb::entry::Command as C;
    let command = match &entry.command {
        Command::CreateSession {
            nonce,
            ttl_ms,
            lock_delay_ms,
            client,
            max_sessions,
        } => C::CreateSession(pb::CreateSession {
            nonce: *nonce,
            ttl_ms: *ttl_ms,
            lock_delay_ms: *lock_delay_ms,
            client: client.clone(),
            max_sessions: *max_sessions,
        }),
        Command::Renew { sessions } => C::Renew(pb::Renew {
            indices: sessions.iter().map(|s| s.index).collect(),
            nonces: sessions.iter().map(|s| s.nonce).collect(),
        }),
        Command::CloseSession { session } => C::CloseSession(pb::CloseSession {
            session: Some(session_to_pb(*session)),
        }),
        Command::Acquire(a) => C::Acquire(pb::Acquire {
            session: Some(session_to_pb(a.session)),
            lock: a.lock.clone(),
            wait_ms: a.wait_ms,
            priority: a.priority,
            request_id: a.request_id.clone(),
            max_waiters: a.max_waiters,
        }),
        Command::Release(r) => C::Release(pb::Release {
            session: Some(session_to_pb(r.session)),
            lock: r.lock.clone(),
            token: r.token,
            request_id: r.request_id.clone(),
        }),
        Command::CancelWait {
            session,
            lock,
            request_id,
        } => C::CancelWait(pb::CancelWait {
            session: Some(session_to_pb(*session)),
            lock: lock.clone(),
            request_id: request_id.clone(),
        }),
        Command::Expire {
            sessions,
            waits,
            locks,
        } => C::Expire(pb::Expire {
            sessions: sessions.clone(),
            waits: waits
                .iter()
                .map(|(lock, session)| pb::WaitRef {
                    lock: lock.clone(),
                    session: *session,
                })
                .collect(),
            locks: locks.clone(),
        }),
    };
    pb::Entry {
        stamp_ms: entry.stamp_ms,
        grace_ms: entry.grace_ms,
        command: Some(command),
    }
    .encode_to_vec()
}

/// Decodes [`encode_entry`].
pub fn decode_entry(data: &[u8]) -> Result<Entry, DecodeError> {
    use pb::entry::Command as C;
    let e = pb::Entry::decode(data)?;
    let command = match e
        .command
        .ok_or_else(|| invalid("the entry has no command"))?
    {
        C::CreateSession(c) => Command::CreateSession {
            nonce: c.nonce,
            ttl_ms: c.ttl_ms,
            lock_delay_ms: c.lock_delay_ms,
            client: c.client,
            max_sessions: c.max_sessions,
        },
        C::Renew(r) => {
            if r.indices.len() != r.nonces.len() {
                return Err(invalid(format!(
                    "a renewal lists {} sessions and {} nonces",
                    r.indices.len(),
                    r.nonces.len()
                )));
            }
            Command::Renew {
                sessions: r
                    .indices
                    .into_iter()
                    .zip(r.nonces)
                    .map(|(index, nonce)| SessionId { index, nonce })
                    .collect(),
            }
        }
        C::CloseSession(c) => Command::CloseSession {
            session: session_from_pb(c.session)?,
        },
        C::Acquire(a) => Command::Acquire(AcquireCommand {
            session: session_from_pb(a.session)?,
            lock: a.lock,
            wait_ms: a.wait_ms,
            priority: a.priority,
            request_id: a.request_id,
            max_waiters: a.max_waiters,
        }),
        C::Release(r) => Command::Release(ReleaseCommand {
            session: session_from_pb(r.session)?,
            lock: r.lock,
            token: r.token,
            request_id: r.request_id,
        }),
        C::CancelWait(c) => Command::CancelWait {
            session: session_from_pb(c.session)?,
            lock: c.lock,
            request_id: c.request_id,
        },
        C::Expire(x) => Command::Expire {
            sessions: x.sessions,
            waits: x.waits.into_iter().map(|w| (w.lock, w.session)).collect(),
            locks: x.locks,
        },
    };
    Ok(Entry {
        stamp_ms: e.stamp_ms,
        grace_ms: e.grace_ms,
        command,
    })
}

fn why_to_pb(why: NotAcquired) -> pb::acquire_outcome::Why {
    use pb::acquire_outcome::Why;
    match why {
        NotAcquired::Held => Why::Held,
        NotAcquired::LockDelay => Why::LockDelay,
        NotAcquired::WaitTimedOut => Why::WaitTimedOut,
        NotAcquired::WaitCancelled => Why::WaitCancelled,
        NotAcquired::Superseded => Why::Superseded,
        NotAcquired::QueueFull => Why::QueueFull,
        NotAcquired::SessionEnded => Why::SessionEnded,
    }
}

fn why_from_pb(code: i32) -> Result<NotAcquired, DecodeError> {
    use pb::acquire_outcome::Why;
    Ok(
        match Why::try_from(code).map_err(|_| invalid(format!("unknown reason {code}")))? {
            Why::Held => NotAcquired::Held,
            Why::LockDelay => NotAcquired::LockDelay,
            Why::WaitTimedOut => NotAcquired::WaitTimedOut,
            Why::WaitCancelled => NotAcquired::WaitCancelled,
            Why::Superseded => NotAcquired::Superseded,
            Why::QueueFull => NotAcquired::QueueFull,
            Why::SessionEnded => NotAcquired::SessionEnded,
            Why::None => return Err(invalid("a refused acquire without a reason")),
        },
    )
}

pub(crate) fn acquire_to_pb(o: &AcquireOutcome) -> pb::AcquireOutcome {
    use pb::acquire_outcome::{Kind, Why};
    match o {
        AcquireOutcome::Granted { token, acquired_ms } => pb::AcquireOutcome {
            kind: Kind::Granted.into(),
            why: Why::None.into(),
            token: *token,
            at_ms: *acquired_ms,
            ..Default::default()
        },
        AcquireOutcome::Waiting { deadline_ms } => pb::AcquireOutcome {
            kind: Kind::Waiting.into(),
            why: Why::None.into(),
            wait_deadline_ms: *deadline_ms,
            ..Default::default()
        },
        AcquireOutcome::NotAcquired {
            why,
            holder,
            token,
            retry_after_ms,
        } => pb::AcquireOutcome {
            kind: Kind::NotAcquired.into(),
            why: why_to_pb(*why).into(),
            token: token.unwrap_or(0),
            holder: holder.map(session_to_pb),
            retry_after_ms: *retry_after_ms,
            ..Default::default()
        },
    }
}

pub(crate) fn acquire_from_pb(o: pb::AcquireOutcome) -> Result<AcquireOutcome, DecodeError> {
    use pb::acquire_outcome::Kind;
    let kind = Kind::try_from(o.kind).map_err(|_| invalid(format!("unknown kind {}", o.kind)))?;
    Ok(match kind {
        Kind::Granted => AcquireOutcome::Granted {
            token: o.token,
            acquired_ms: o.at_ms,
        },
        Kind::Waiting => AcquireOutcome::Waiting {
            deadline_ms: o.wait_deadline_ms,
        },
        Kind::NotAcquired => AcquireOutcome::NotAcquired {
            why: why_from_pb(o.why)?,
            holder: optional_session(o.holder)?,
            // Tokens are log indices, never 0.
            token: (o.token != 0).then_some(o.token),
            retry_after_ms: o.retry_after_ms,
        },
    })
}

pub(crate) fn release_to_pb(o: &ReleaseOutcome) -> pb::ReleaseOutcome {
    match o {
        ReleaseOutcome::Released { next_holder } => pb::ReleaseOutcome {
            released: true,
            holder: next_holder.map(session_to_pb),
            holder_token: 0,
        },
        ReleaseOutcome::NotHolder { holder, token } => pb::ReleaseOutcome {
            released: false,
            holder: holder.map(session_to_pb),
            holder_token: token.unwrap_or(0),
        },
    }
}

pub(crate) fn release_from_pb(o: pb::ReleaseOutcome) -> Result<ReleaseOutcome, DecodeError> {
    let holder = optional_session(o.holder)?;
    Ok(if o.released {
        ReleaseOutcome::Released {
            next_holder: holder,
        }
    } else {
        ReleaseOutcome::NotHolder {
            holder,
            token: (o.holder_token != 0).then_some(o.holder_token),
        }
    })
}

fn refusal_kind_to_pb(kind: RefusalKind) -> pb::refusal::Kind {
    use pb::refusal::Kind;
    match kind {
        RefusalKind::BadRequest => Kind::BadRequest,
        RefusalKind::SessionNotFound => Kind::SessionNotFound,
        RefusalKind::TooManySessions => Kind::TooManySessions,
        RefusalKind::TooManyLocks => Kind::TooManyLocks,
    }
}

fn refusal_kind_from_pb(code: i32) -> Result<RefusalKind, DecodeError> {
    use pb::refusal::Kind;
    Ok(
        match Kind::try_from(code).map_err(|_| invalid(format!("unknown refusal {code}")))? {
            Kind::BadRequest => RefusalKind::BadRequest,
            Kind::SessionNotFound => RefusalKind::SessionNotFound,
            Kind::TooManySessions => RefusalKind::TooManySessions,
            Kind::TooManyLocks => RefusalKind::TooManyLocks,
        },
    )
}

/// Encodes an answer (handed from the applier to the waiting proposer).
pub fn encode_response(response: &Response) -> Vec<u8> {
    use pb::response::Result as R;
    let result = match response {
        Response::Created {
            session,
            ttl_ms,
            lock_delay_ms,
        } => R::Created(pb::Created {
            session: Some(session_to_pb(*session)),
            ttl_ms: *ttl_ms,
            lock_delay_ms: *lock_delay_ms,
        }),
        Response::Renewed { remaining_ms } => R::Renewed(pb::Renewed {
            remaining_ms: remaining_ms.clone(),
        }),
        Response::Closed { released } => R::Closed(pb::Closed {
            released: released.clone(),
        }),
        Response::Acquire(o) => R::Acquire(acquire_to_pb(o)),
        Response::Release(o) => R::Release(release_to_pb(o)),
        Response::Cancelled {
            outcome,
            was_waiting,
        } => R::Cancelled(pb::Cancelled {
            outcome: Some(acquire_to_pb(outcome)),
            was_waiting: *was_waiting,
        }),
        Response::Expired {
            sessions,
            waits,
            grants,
        } => R::Expired(pb::Expired {
            sessions: *sessions,
            waits: *waits,
            grants: *grants,
        }),
        Response::Refused(r) => R::Refused(pb::Refusal {
            kind: refusal_kind_to_pb(r.kind).into(),
            message: r.message.clone(),
        }),
    };
    pb::Response {
        result: Some(result),
    }
    .encode_to_vec()
}

/// Decodes [`encode_response`].
pub fn decode_response(data: &[u8]) -> Result<Response, DecodeError> {
    use pb::response::Result as R;
    let r = pb::Response::decode(data)?;
    Ok(
        match r.result.ok_or_else(|| invalid("the answer is empty"))? {
            R::Created(c) => Response::Created {
                session: session_from_pb(c.session)?,
                ttl_ms: c.ttl_ms,
                lock_delay_ms: c.lock_delay_ms,
            },
            R::Renewed(r) => Response::Renewed {
                remaining_ms: r.remaining_ms,
            },
            R::Closed(c) => Response::Closed {
                released: c.released,
            },
            R::Acquire(o) => Response::Acquire(acquire_from_pb(o)?),
            R::Release(o) => Response::Release(release_from_pb(o)?),
            R::Cancelled(c) => Response::Cancelled {
                outcome: acquire_from_pb(
                    c.outcome
                        .ok_or_else(|| invalid("a cancel answer without its outcome"))?,
                )?,
                was_waiting: c.was_waiting,
            },
            R::Expired(x) => Response::Expired {
                sessions: x.sessions,
                waits: x.waits,
                grants: x.grants,
            },
            R::Refused(r) => Response::Refused(Refusal {
                kind: refusal_kind_from_pb(r.kind)?,
                message: r.message,
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(index: u64) -> SessionId {
        SessionId {
            index,
            nonce: index * 31,
        }
    }

    #[test]
    fn every_command_round_trips() {
        let commands = vec![
            Command::CreateSession {
                nonce: 7,
                ttl_ms: 15_000,
                lock_delay_ms: 0,
                client: "worker ü".into(),
                max_sessions: 10,
            },
            Command::Renew {
                sessions: vec![sid(1), sid(2)],
            },
            Command::CloseSession { session: sid(3) },
            Command::Acquire(AcquireCommand {
                session: sid(4),
                lock: "a/b".into(),
                wait_ms: 100,
                priority: -3,
                request_id: "r1".into(),
                max_waiters: 9,
            }),
            Command::Release(ReleaseCommand {
                session: sid(4),
                lock: "a/b".into(),
                token: 12,
                request_id: "r2".into(),
            }),
            Command::CancelWait {
                session: sid(5),
                lock: "x".into(),
                request_id: "r3".into(),
            },
            Command::Expire {
                sessions: vec![1, 2],
                waits: vec![("x".into(), 5)],
                locks: vec!["y".into()],
            },
        ];
        for command in commands {
            let entry = Entry {
                stamp_ms: 1_700_000_000_000,
                grace_ms: 2_000,
                command,
            };
            assert_eq!(decode_entry(&encode_entry(&entry)).unwrap(), entry);
        }
    }

    #[test]
    fn every_answer_round_trips() {
        let answers = vec![
            Response::Created {
                session: sid(1),
                ttl_ms: 1000,
                lock_delay_ms: 5,
            },
            Response::Renewed {
                remaining_ms: vec![0, 1000],
            },
            Response::Closed {
                released: vec!["a".into()],
            },
            Response::Acquire(AcquireOutcome::Granted {
                token: 9,
                acquired_ms: 3,
            }),
            Response::Acquire(AcquireOutcome::Waiting { deadline_ms: 77 }),
            Response::Acquire(AcquireOutcome::NotAcquired {
                why: NotAcquired::LockDelay,
                holder: None,
                token: None,
                retry_after_ms: 40,
            }),
            Response::Acquire(AcquireOutcome::NotAcquired {
                why: NotAcquired::Held,
                holder: Some(sid(2)),
                token: Some(8),
                retry_after_ms: 1000,
            }),
            Response::Release(ReleaseOutcome::Released {
                next_holder: Some(sid(3)),
            }),
            Response::Release(ReleaseOutcome::Released { next_holder: None }),
            Response::Release(ReleaseOutcome::NotHolder {
                holder: Some(sid(3)),
                token: Some(4),
            }),
            Response::Cancelled {
                outcome: AcquireOutcome::Granted {
                    token: 5,
                    acquired_ms: 1,
                },
                was_waiting: false,
            },
            Response::Expired {
                sessions: 1,
                waits: 2,
                grants: 3,
            },
            Response::Refused(Refusal::new(RefusalKind::TooManyLocks, "no")),
        ];
        for answer in answers {
            assert_eq!(decode_response(&encode_response(&answer)).unwrap(), answer);
        }
    }

    #[test]
    fn malformed_entries_are_refused() {
        assert!(decode_entry(b"SET x=1").is_err());
        assert!(decode_entry(&[]).is_err(), "an entry without a command");
        let missing_session = pb::Entry {
            stamp_ms: 1,
            grace_ms: 0,
            command: Some(pb::entry::Command::CloseSession(pb::CloseSession {
                session: None,
            })),
        };
        assert!(decode_entry(&missing_session.encode_to_vec()).is_err());
        let uneven = pb::Entry {
            stamp_ms: 1,
            grace_ms: 0,
            command: Some(pb::entry::Command::Renew(pb::Renew {
                indices: vec![1, 2],
                nonces: vec![1],
            })),
        };
        assert!(decode_entry(&uneven.encode_to_vec()).is_err());
    }
}
