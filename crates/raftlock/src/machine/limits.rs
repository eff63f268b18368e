//! The bounds of the lock service's model, and the checks of client input against them.
//!
//! The server checks a request before proposing it, so that bad input is refused with a
//! clear message and never reaches the log; the state machine checks again when it
//! applies a command, so that no entry, however it got into the log, can break an
//! invariant. Every bound here keeps some table finite.

/// Shortest session TTL: below about a second, keep-alives and elections would race.
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest session TTL.
pub const MAX_TTL_MS: u64 = 300_000;
/// TTL of a session created without one.
pub const DEFAULT_TTL_MS: u64 = 15_000;
/// Longest lock-delay.
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;
/// Longest wait of one blocking acquire (the HTTP request is held open that long).
pub const MAX_WAIT_MS: u64 = 300_000;
/// Longest lock name, in bytes of UTF-8.
pub const MAX_LOCK_NAME_BYTES: usize = 256;
/// Longest client name, in bytes.
pub const MAX_CLIENT_NAME_BYTES: usize = 256;
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Results kept per session for retried requests (oldest dropped first). A client that
/// retries only its in-flight requests, as [`Client`](crate::Client) does, needs as many
/// as it has requests in flight on one session.
pub const DEDUP_ENTRIES_PER_SESSION: usize = 64;
/// Locks one session may hold and wait for at once.
pub const MAX_LOCKS_PER_SESSION: usize = 4_096;
/// Free locks remembered (for `GET` and token validation) before the longest-free ones
/// are forgotten.
pub const MAX_IDLE_LOCKS: usize = 65_536;
/// Default limit on sessions waiting for one lock.
pub const DEFAULT_MAX_WAITERS: u32 = 1_024;
/// Default limit on live sessions.
pub const DEFAULT_MAX_SESSIONS: u64 = 1_000_000;
/// Most sessions one renewal entry covers; the server splits larger batches.
pub const MAX_RENEW_BATCH: usize = 16_384;
/// Most deadlines one expiry entry handles.
pub const MAX_EXPIRE_BATCH: usize = 4_096;
/// Upper bound of the retry hint given while a lock is held.
pub const MAX_RETRY_HINT_MS: u64 = 1_000;
/// Lower bound of the retry hint.
pub const MIN_RETRY_HINT_MS: u64 = 10;

/// Input that breaks a rule of the model; the message names the field and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(message: String) -> InvalidInput {
    InvalidInput(message)
}

/// Checks a lock name: 1 to 256 bytes of UTF-8 without control characters.
pub fn check_lock_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(invalid("the lock name is empty".into()));
    }
    if name.len() > MAX_LOCK_NAME_BYTES {
        return Err(invalid(format!(
            "the lock name is {} bytes long; the limit is {MAX_LOCK_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("the lock name contains a control character".into()));
    }
    Ok(())
}

/// Checks a session TTL.
pub fn check_ttl(ttl_ms: u64) -> Result<(), InvalidInput> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(invalid(format!(
            "ttl_ms must be {MIN_TTL_MS}..={MAX_TTL_MS}, not {ttl_ms}"
        )))
    }
}

/// Checks a lock-delay.
pub fn check_lock_delay(lock_delay_ms: u64) -> Result<(), InvalidInput> {
    if lock_delay_ms <= MAX_LOCK_DELAY_MS {
        Ok(())
    } else {
        Err(invalid(format!(
            "lock_delay_ms must be 0..={MAX_LOCK_DELAY_MS}, not {lock_delay_ms}"
        )))
    }
}

/// Checks a wait.
pub fn check_wait(wait_ms: u64) -> Result<(), InvalidInput> {
    if wait_ms <= MAX_WAIT_MS {
        Ok(())
    } else {
        Err(invalid(format!(
            "wait_ms must be 0..={MAX_WAIT_MS}, not {wait_ms}"
        )))
    }
}

/// Checks a client name.
pub fn check_client_name(client: &str) -> Result<(), InvalidInput> {
    if client.len() > MAX_CLIENT_NAME_BYTES {
        return Err(invalid(format!(
            "the client name is {} bytes long; the limit is {MAX_CLIENT_NAME_BYTES}",
            client.len()
        )));
    }
    if client.chars().any(char::is_control) {
        return Err(invalid(
            "the client name contains a control character".into(),
        ));
    }
    Ok(())
}

/// Checks a request id: 1 to 128 bytes without control characters.
pub fn check_request_id(request_id: &str) -> Result<(), InvalidInput> {
    if request_id.is_empty() {
        return Err(invalid("the request_id is empty".into()));
    }
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(invalid(format!(
            "the request_id is {} bytes long; the limit is {MAX_REQUEST_ID_BYTES}",
            request_id.len()
        )));
    }
    if request_id.chars().any(char::is_control) {
        return Err(invalid(
            "the request_id contains a control character".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check_lock_name("a").is_ok());
        assert!(check_lock_name(&"x".repeat(256)).is_ok());
        assert!(check_lock_name("jobs/nightly ü").is_ok());
        assert!(check_lock_name("").unwrap_err().0.contains("empty"));
        assert!(check_lock_name(&"x".repeat(257))
            .unwrap_err()
            .0
            .contains("257"));
        // 128 two-byte characters are 256 bytes; one more is over.
        assert!(check_lock_name(&"ü".repeat(128)).is_ok());
        assert!(check_lock_name(&"ü".repeat(129)).is_err());
        assert!(check_lock_name("a\nb").is_err());
        assert!(check_lock_name("a\0").is_err());
        assert!(check_request_id("").is_err());
        assert!(check_request_id(&"r".repeat(129)).is_err());
        assert!(check_request_id("r-1").is_ok());
        assert!(check_client_name("").is_ok());
        assert!(check_client_name(&"c".repeat(257)).is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert!(check_ttl(999).is_err());
        assert!(check_ttl(1_000).is_ok());
        assert!(check_ttl(300_000).is_ok());
        assert!(check_ttl(300_001).unwrap_err().0.contains("ttl_ms"));
        assert!(check_lock_delay(0).is_ok());
        assert!(check_lock_delay(60_001)
            .unwrap_err()
            .0
            .contains("lock_delay_ms"));
        assert!(check_wait(MAX_WAIT_MS).is_ok());
        assert!(check_wait(MAX_WAIT_MS + 1)
            .unwrap_err()
            .0
            .contains("wait_ms"));
    }
}
