//! [`LockGuard`]: a held lock. Its token goes with every write to the resource the lock
//! protects (the resource keeps the highest token it has seen and refuses lower ones);
//! [`LockGuard::lost`] says when the lock can no longer be trusted; dropping the guard
//! releases the lock in the background.

use std::sync::Arc;

use super::session::Session;
use super::Client;

/// A lock held by this client's session.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    session: Arc<Session>,
    name: String,
    token: u64,
    released: bool,
}

impl LockGuard {
    pub(crate) fn new(client: Client, session: Arc<Session>, name: String, token: u64) -> Self {
        LockGuard {
            client,
            session,
            name,
            token,
            released: false,
        }
    }

    /// The fencing token of this grant: the log index of the entry that granted it.
    /// Tokens of one lock only grow.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session holding the lock.
    pub fn session(&self) -> &str {
        &self.session.id
    }

    /// Whether the lock can no longer be trusted (see [`lost`](Self::lost)).
    pub fn is_lost(&self) -> bool {
        self.session.is_lost()
    }

    /// Resolves when the lock can no longer be trusted: the session expired, or it was
    /// not renewed before its local deadline (counted from when the last successful
    /// keep-alive was sent, minus a margin). Stop using the resource at once; another
    /// client may hold the lock soon.
    pub async fn lost(&self) {
        self.session.lost().await;
    }

    /// Releases the lock and waits for the cluster to confirm it.
    pub async fn release(mut self) -> Result<(), super::ClientError> {
        self.released = true;
        self.client
            .release_as(&self.session.id, &self.name, self.token)
            .await
            .map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released || self.session.is_lost() {
            return;
        }
        let (client, session, name, token) = (
            self.client.clone(),
            self.session.id.clone(),
            std::mem::take(&mut self.name),
            self.token,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = client.release_as(&session, &name, token).await {
                    tracing::debug!(lock = %name, token, error = %e, "releasing a dropped guard failed");
                }
            });
        }
    }
}
