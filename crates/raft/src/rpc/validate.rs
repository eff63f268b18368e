//! Well-formedness of inbound messages: what the core assumes of a message from a peer
//! and does not re-check. A message built by a correct peer always passes; one that
//! fails would otherwise corrupt the log (entries at the wrong indices) or the snapshot
//! being received.

use crate::message::{AppendEntries, InstallSnapshot, Message, MessageBody};
use crate::types::Term;

/// Checks the body of `m` against its header; `Err` says what is wrong.
pub(super) fn check(m: &Message) -> Result<(), String> {
    match &m.body {
        MessageBody::RequestVote(r) if r.last_log_term > m.term => Err(format!(
            "{}: last log term {} is newer than the request's term {}",
            m.kind(),
            r.last_log_term,
            m.term
        )),
        MessageBody::AppendEntries(a) => check_append(m.term, a),
        MessageBody::InstallSnapshot(s) => check_chunk(m.term, s),
        _ => Ok(()),
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
