//! Operations in progress. A service's operations run one at a time (its
//! queue), and so do a component's (its lease), whatever actor instance
//! runs them: the locks live here, not in the actors, so a restarted
//! ServiceActor or ComponentActor waits for what its predecessor left
//! running instead of working on the same container at once.
//!
//! A lease is a drop-safe guard: when the operation's future ends, or is
//! dropped (a panic, a restart, a shutdown), the component is free again and
//! the watch is told to look at it afresh. The watch reads [`Operations::busy`]
//! to leave components under an operation alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::Addr;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::watch::{OperationEnded, OperationStarted, WatchActor};

/// (service, component).
pub type Key = (String, String);

#[derive(Default)]
pub struct Operations {
    services: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    components: Mutex<HashMap<Key, Arc<AsyncMutex<()>>>>,
    /// Leases held, per component.
    busy: Mutex<HashMap<Key, usize>>,
    /// When the last lease on a component was given back (Unix ns). The
    /// operation's own runtime events (create, start, ...) can reach the
    /// watch after that; they are history the operation already recorded.
    ended: Mutex<HashMap<Key, i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lock of `key` in `map`, created on first use.
fn lock_of<K: Clone + Eq + std::hash::Hash>(
    map: &Mutex<HashMap<K, Arc<AsyncMutex<()>>>>,
    key: &K,
) -> Arc<AsyncMutex<()>> {
    lock(map).entry(key.clone()).or_default().clone()
}

/// Forgets the lock of `key` when nothing holds or waits for it.
fn release<K: Eq + std::hash::Hash>(map: &Mutex<HashMap<K, Arc<AsyncMutex<()>>>>, key: &K) {
    let mut map = lock(map);
    if map.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
        map.remove(key);
    }
}

impl Operations {
    /// Waits for the service's earlier operations (FIFO), then holds its
    /// queue until the guard is dropped.
    pub async fn service_turn(self: &Arc<Self>, service: &str) -> ServiceTurn {
        let guard = lock_of(&self.services, &service.to_string())
            .lock_owned()
            .await;
        ServiceTurn {
            service: service.to_string(),
            guard: Some(guard),
            ops: self.clone(),
        }
    }

    /// Waits for the component's earlier operation, then marks it busy
    /// until the lease is dropped.
    pub async fn lease(self: &Arc<Self>, key: Key, watch: Addr<WatchActor>) -> Lease {
        let guard = lock_of(&self.components, &key).lock_owned().await;
        *lock(&self.busy).entry(key.clone()).or_default() += 1;
        watch.do_send(OperationStarted { key: key.clone() });
        Lease {
            key,
            guard: Some(guard),
            ops: self.clone(),
            watch,
        }
    }

    /// True while an operation holds a lease on the component.
    pub fn busy(&self, key: &Key) -> bool {
        lock(&self.busy).get(key).is_some_and(|n| *n > 0)
    }

    /// When the last operation on the component ended (Unix ns).
    pub fn ended_at(&self, key: &Key) -> Option<i64> {
        lock(&self.ended).get(key).copied()
    }

    /// Forgets when operations ended on the components `gone` names, if
    /// they ended before `before_ns`: a later end may be a new component's
    /// of the same name, whose late runtime events it still explains.
    pub fn forget_ended(&self, gone: impl Fn(&Key) -> bool, before_ns: i64) {
        lock(&self.ended).retain(|k, ended| !gone(k) || *ended >= before_ns);
    }

    /// The components whose operations' end is remembered.
    #[cfg(test)]
    pub fn ended_components(&self) -> Vec<Key> {
        lock(&self.ended).keys().cloned().collect()
    }

    /// Every component under an operation.
    pub fn busy_components(&self) -> Vec<Key> {
        lock(&self.busy).keys().cloned().collect()
    }
}

/// A service's turn in its queue of operations.
pub struct ServiceTurn {
    service: String,
    guard: Option<OwnedMutexGuard<()>>,
    ops: Arc<Operations>,
}

impl Drop for ServiceTurn {
    fn drop(&mut self) {
        drop(self.guard.take());
        release(&self.ops.services, &self.service);
    }
}

/// A component's operation in progress.
pub struct Lease {
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
    ops: Arc<Operations>,
    watch: Addr<WatchActor>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut busy = lock(&self.ops.busy);
            if let Some(n) = busy.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    busy.remove(&self.key);
                }
            }
            // Set before the component reads as free, so no event of the
            // operation is ever taken for the component's own.
            lock(&self.ops.ended).insert(self.key.clone(), crate::runtime::now_ns());
        }
        drop(self.guard.take());
        release(&self.ops.components, &self.key);
        self.watch.do_send(OperationEnded {
            key: self.key.clone(),
        });
    }
}
