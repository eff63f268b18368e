//! Well-formedness of inbound messages: what the core assumes of a message from a peer
//! and does not re-check. A message built by a correct peer always passes; one that
//! fails would otherwise corrupt the log (entries at the wrong indices) or the snapshot
//! being received, or stop the node (a configuration it cannot decode, found when the
//! entry is applied or the snapshot installed, long after the sender was answered).

use crate::error::RejectReason;
use crate::membership::Membership;
use crate::message::{AppendEntries, InstallSnapshot, Message, MessageBody};
use crate::types::{EntryKind, Term};

/// Checks the body of `m` against its header; `Err` says why it is refused.
pub(super) fn check(m: &Message) -> Result<(), RejectReason> {
    match &m.body {
        MessageBody::RequestVote(r) if r.last_log_term > m.term => {
            Err(RejectReason::Malformed(format!(
                "{}: last log term {} is newer than the request's term {}",
                m.kind(),
                r.last_log_term,
                m.term
            )))
        }
        MessageBody::AppendEntries(a) => {
            check_append(m.term, a).map_err(RejectReason::Malformed)?;
            check_config_entries(a)
        }
        MessageBody::InstallSnapshot(s) => {
            check_chunk(m.term, s).map_err(RejectReason::Malformed)?;
            check_snapshot_membership(s)
        }
        _ => Ok(()),
    }
}

/// Every `ConfigChange` entry must carry a configuration that decodes (decoding checks
/// the rules of a configuration too). Configuration entries are rare, so decoding each
/// one here costs nothing measurable and keeps a bad one out of the log, where no later
/// step could refuse it.
fn check_config_entries(a: &AppendEntries) -> Result<(), RejectReason> {
    for e in a
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::ConfigChange)
    {
        Membership::decode(&e.data).map_err(|err| RejectReason::BadConfiguration {
            index: e.index,
            reason: format!("ConfigChange entry of {} bytes: {err}", e.data.len()),
        })?;
    }
    Ok(())
}

/// A snapshot's membership must obey the rules of a configuration: storage refuses to
/// install one that does not (it could not read it back), which would stop the node.
/// From the gRPC transport it has been decoded already (undecodable bytes are refused
/// there); a transport that passes messages as values is checked here.
fn check_snapshot_membership(s: &InstallSnapshot) -> Result<(), RejectReason> {
    match &s.meta.membership {
        Some(m) => m.validate().map_err(|err| RejectReason::BadConfiguration {
            index: s.meta.last_index,
            reason: format!("snapshot membership: {err}"),
        }),
        None => Ok(()),
    }
}

/// Entries must follow `prev_log_index` one by one, with terms that never decrease, start
/// no earlier than `prev_log_term` and end no later than the leader's term.
fn check_append(term: Term, a: &AppendEntries) -> Result<(), String> {
    if a.prev_log_term > term {
        return Err(format!(
            "AppendEntries: prev_log_term {} is newer than the leader's term {term}",
            a.prev_log_term
        ));
    }
    let mut last_term = a.prev_log_term;
    for (k, e) in a.entries.iter().enumerate() {
        let expected = a
            .prev_log_index
            .checked_add(k as u64 + 1)
            .ok_or_else(|| "AppendEntries: entry index overflows".to_string())?;
        if e.index != expected {
            return Err(format!(
                "AppendEntries: entry {k} has index {}, expected {expected}",
                e.index
            ));
        }
        if e.term < last_term || e.term > term {
            return Err(format!(
                "AppendEntries: entry {} has term {}, outside [{last_term}, {term}]",
                e.index, e.term
            ));
        }
        last_term = e.term;
    }
    Ok(())
}

/// A chunk must lie inside the snapshot, end it exactly when it says it is the last, and
/// describe a snapshot no newer than the leader's term. The snapshot's total size is not
/// limited: the follower streams chunks to disk and never holds the whole (the transport
/// bounds each message, and so each chunk).
fn check_chunk(term: Term, s: &InstallSnapshot) -> Result<(), String> {
    if s.meta.last_term > term {
        return Err(format!(
            "InstallSnapshot: snapshot term {} is newer than the leader's term {term}",
            s.meta.last_term
        ));
    }
    let end = s
        .offset
        .checked_add(s.data.len() as u64)
        .filter(|end| *end <= s.total_size)
        .ok_or_else(|| {
            format!(
                "InstallSnapshot: chunk of {} bytes at offset {} exceeds the total size {}",
                s.data.len(),
                s.offset,
                s.total_size
            )
        })?;
    if s.done && end != s.total_size {
        return Err(format!(
            "InstallSnapshot: last chunk ends at {end}, not at the total size {}",
            s.total_size
        ));
    }
    Ok(())
}
