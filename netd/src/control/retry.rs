//! The one commit-retry loop: a request reads what it needs, builds its
//! transaction with compares that hold only if nothing it read changed,
//! and commits; when another writer got there first, it waits a moment and
//! does it all again from a fresh read.

use std::future::Future;

use super::{Control, ControlError};
use crate::store::{Store, StoreError, Txn};

/// How often a transaction is retried when another writer got there first.
/// Every round at least one of the colliding writers wins, so N writers at once
/// need at most N attempts; 100 covers a burst of 100.
const RETRIES: usize = 100;

/// What one attempt of a request came to.
pub(super) enum Attempt<T> {
    /// Commit this, and answer `T` once it is in.
    Commit(Txn, T),
    /// Nothing to write: the answer is already `T`.
    Done(T),
}

impl<S: Store> Control<S> {
    /// Runs `attempt` until its transaction commits (or it needs none);
    /// a conflict makes it run again, any other error is the answer.
    pub(super) async fn transact<T, F, Fut>(&self, mut attempt: F) -> Result<T, ControlError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Attempt<T>, ControlError>>,
    {
        let mut tries = 0;
        loop {
            let (txn, answer) = match attempt().await? {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Commit(txn, answer) => (txn, answer),
            };
            match self.commit(txn).await {
                Ok(_) => return Ok(answer),
                Err(StoreError::Conflict(_)) if tries < RETRIES => {
                    tries += 1;
                    back_off(tries).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// Waits a random moment that grows with the attempt, so writers that
/// collided do not collide again in lockstep.
async fn back_off(attempt: usize) {
    let id = crate::model::new_id();
    let noise = u64::from_str_radix(&id[..4], 16).unwrap_or(0);
    let ceiling_ms = 1u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_micros(
        noise % (ceiling_ms * 1000),
    ))
    .await;
}
