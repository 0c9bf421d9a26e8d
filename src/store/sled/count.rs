//! How many records each resource's tree holds, for the stored-resources
//! gauge: kept in step by every write, so reading it costs nothing.
//!
//! sled counts a tree only by scanning it, which at a million accounts
//! takes a second; the store must not wait for that to open. So the trees
//! are counted on a thread of their own after opening, while writes go on,
//! without double counting: the count walks each tree in key order, a chunk
//! at a time under the store's write lock, and a write adjusts the count
//! only for a key the walk has already passed (the walk will see the
//! others as they are when it gets there).

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Mutex, PoisonError,
};

use crate::resource::Resource;

/// Keys the walk counts per hold of the write lock.
const CHUNK: usize = 1024;

/// The stored records of every resource.
#[derive(Default)]
pub(super) struct StoredCounts {
    /// Per resource (indexed by `Resource as usize`): records counted so far.
    counts: [AtomicU64; Resource::ALL.len()],
    /// Every tree has been walked: `counts` is exact.
    done: AtomicBool,
    /// While walking: per resource, how far the walk has got. Changed only
    /// under the store's write lock.
    walked: Mutex<[Walked; Resource::ALL.len()]>,
}

/// How far the walk has got through one tree.
#[derive(Debug, Clone, Default)]
enum Walked {
    #[default]
    Nothing,
    /// Every key up to and including this one is counted.
    Through(Vec<u8>),
    Everything,
}

impl StoredCounts {
    /// The count of `resource`, once every tree has been walked.
    pub(super) fn get(&self, resource: Resource) -> Option<u64> {
        self.done
            .load(Ordering::SeqCst)
            .then(|| self.counts[resource as usize].load(Ordering::SeqCst))
    }

    /// A write (under the store's write lock) added (`true`) or removed
    /// (`false`) `key`'s record in `resource`'s tree.
    pub(super) fn changed(&self, resource: Resource, key: &[u8], added: bool) {
        if !self.done.load(Ordering::SeqCst) {
            let walked = self.walked.lock().unwrap_or_else(PoisonError::into_inner);
            let passed = match &walked[resource as usize] {
                Walked::Nothing => false,
                Walked::Through(last) => key <= last.as_slice(),
                Walked::Everything => true,
            };
            if !passed {
                return;
            }
        }
        let count = &self.counts[resource as usize];
        if added {
            count.fetch_add(1, Ordering::SeqCst);
        } else {
            // Saturating: never below zero, whatever happens.
            let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// Walks every tree on a thread of its own; `write_lock` is the store's.
    pub(super) fn count_in_background(
        self: &Arc<Self>,
        trees: Vec<sled::Tree>,
        write_lock: Arc<Mutex<()>>,
    ) {
        let counts = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("settingsd-count-records".into())
            .spawn(move || {
                if let Err(e) = counts.walk(&trees, &write_lock) {
                    tracing::warn!(error = %e, "cannot count the stored records; the gauge stays unset until a restart");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start counting the stored records");
        }
    }

    fn walk(&self, trees: &[sled::Tree], write_lock: &Mutex<()>) -> sled::Result<()> {
        for resource in Resource::ALL {
            let tree = &trees[resource as usize];
            loop {
                let _writes = write_lock.lock().unwrap_or_else(PoisonError::into_inner);
                let mut walked = self.walked.lock().unwrap_or_else(PoisonError::into_inner);
                let keys = match &walked[resource as usize] {
                    Walked::Nothing => tree.iter(),
                    Walked::Through(last) => tree.range::<&[u8], _>((
                        std::ops::Bound::Excluded(last.as_slice()),
                        std::ops::Bound::Unbounded,
                    )),
                    Walked::Everything => break,
                }
                .keys()
                .take(CHUNK)
                .collect::<sled::Result<Vec<_>>>()?;
                self.counts[resource as usize].fetch_add(keys.len() as u64, Ordering::SeqCst);
                walked[resource as usize] = match keys.last() {
                    Some(last) if keys.len() == CHUNK => Walked::Through(last.to_vec()),
                    _ => Walked::Everything,
                };
            }
        }
        self.done.store(true, Ordering::SeqCst);
        Ok(())
    }
}
