//! Users kept in memory, in id order, with a broadcast of every creation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::user::UserRecord;

/// The store: ids start at 1 and only grow.
#[derive(Debug)]
pub struct Store {
    users: Mutex<BTreeMap<i64, UserRecord>>,
    created: broadcast::Sender<UserRecord>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            users: Mutex::new(BTreeMap::new()),
            created: broadcast::channel(256).0,
        }
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a user under the next id and announces it.
    pub fn insert(&self, name: String, email: String) -> UserRecord {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let id = users.keys().next_back().map_or(1, |last| last + 1);
        let user = UserRecord { id, name, email };
        users.insert(id, user.clone());
        // Nobody watching is fine.
        let _ = self.created.send(user.clone());
        user
    }

    /// The user with `id`.
    pub fn get(&self, id: i64) -> Option<UserRecord> {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Up to `limit` users with ids above `after`, and whether more follow.
    pub fn page(&self, after: i64, limit: usize) -> (Vec<UserRecord>, bool) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut rest = users
            .range(after.saturating_add(1)..)
            .map(|(_, u)| u.clone());
        let page: Vec<_> = rest.by_ref().take(limit).collect();
        (page, rest.next().is_some())
    }

    /// Every user now, and a receiver of users created from now on, taken atomically so
    /// none is missed or sent twice.
    pub fn snapshot_and_watch(&self) -> (Vec<UserRecord>, broadcast::Receiver<UserRecord>) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        (users.values().cloned().collect(), self.created.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_all_users_in_id_order() {
        let store = Store::new();
        for i in 0..5 {
            store.insert(format!("u{i}"), format!("u{i}@example.com"));
        }
        let (first, more) = store.page(0, 2);
        assert_eq!(first.iter().map(|u| u.id).collect::<Vec<_>>(), [1, 2]);
        assert!(more);
        let (last, more) = store.page(4, 2);
        assert_eq!(last.iter().map(|u| u.id).collect::<Vec<_>>(), [5]);
        assert!(!more);
    }
}
