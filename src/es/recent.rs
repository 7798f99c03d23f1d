//! Tasks this store claimed or lost a race for moments ago.
//!
//! Search is near-real-time: for up to a refresh interval after a claim, searches still show
//! the claimed tasks as they were before, so every following claim would race for them again
//! and lose. The store remembers the ids it just took (or saw taken) for a short while and
//! leaves them out of its candidate searches. This only saves wasted requests; correctness
//! never depends on it, since every claim is conditional on the version.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an id stays excluded: past the engine's default 1 s refresh, with a margin.
pub(crate) const RECENT_WINDOW: Duration = Duration::from_secs(3);

/// Most ids remembered; the oldest go first.
const MAX_IDS: usize = 5_000;

/// Most unreadable documents remembered.
const MAX_UNREADABLE: usize = 1_000;

#[derive(Debug, Default)]
pub(crate) struct RecentClaims {
    ids: Mutex<VecDeque<(Instant, String)>>,
    /// Candidates that could not be read as tasks: left out of this store's claims for good,
    /// so they cannot fill every claim's candidate window.
    unreadable: Mutex<VecDeque<String>>,
}

impl RecentClaims {
    /// Remembers document ids as just taken.
    pub(crate) fn note<I: IntoIterator<Item = String>>(&self, doc_ids: I) {
        let now = Instant::now();
        let mut ids = self.lock();
        ids.extend(doc_ids.into_iter().map(|id| (now, id)));
        while ids.len() > MAX_IDS {
            ids.pop_front();
        }
    }

    /// Forgets a document id (its task was given back and may be claimed again).
    pub(crate) fn forget(&self, doc_id: &str) {
        self.lock().retain(|(_, id)| id != doc_id);
    }

    /// Remembers a document that is not a readable task.
    pub(crate) fn note_unreadable(&self, doc_id: String) {
        let mut unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        if !unreadable.contains(&doc_id) {
            unreadable.push_back(doc_id);
            if unreadable.len() > MAX_UNREADABLE {
                unreadable.pop_front();
            }
        }
    }

    /// The ids to leave out of candidate searches: taken within the window, or unreadable.
    pub(crate) fn current(&self) -> Vec<String> {
        let mut ids = self.lock();
        let cutoff = Instant::now().checked_sub(RECENT_WINDOW);
        while ids.front().is_some_and(|(at, _)| Some(*at) < cutoff) {
            ids.pop_front();
        }
        let unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .map(|(_, id)| id.clone())
            .chain(unreadable.iter().cloned())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, String)>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_forgets() {
        let recent = RecentClaims::default();
        recent.note(["a".to_owned(), "b".to_owned()]);
        assert_eq!(recent.current(), ["a", "b"]);
        recent.forget("a");
        assert_eq!(recent.current(), ["b"]);
        recent.note((0..MAX_IDS + 10).map(|i| i.to_string()));
        assert_eq!(recent.current().len(), MAX_IDS);
    }
}
