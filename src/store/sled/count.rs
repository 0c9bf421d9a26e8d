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

use super::keys_after;
use crate::resource::Resource;

/// Keys the walk counts per hold of the write lock.
const CHUNK: usize = 1024;

/// The stored records of every resource.
pub(super) struct StoredCounts {
    /// The resources counted, in the order of the store's trees.
    resources: Vec<Resource>,
    /// Per resource (in the order of `resources`): records counted so far.
    counts: Vec<AtomicU64>,
    /// Every tree has been walked: `counts` is exact.
    done: AtomicBool,
    /// While walking: per resource, how far the walk has got. Changed only
    /// under the store's write lock.
    walked: Mutex<Vec<Walked>>,
    /// Tells the walk to stop: its trees keep the database open, which must
    /// close when the store does (or reopens after a failure).
    stop: AtomicBool,
    walker: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// Counts of `resources`, whose trees the walk will be given in the
    /// same order.
    pub(super) fn new(resources: Vec<Resource>) -> StoredCounts {
        StoredCounts {
            counts: resources.iter().map(|_| AtomicU64::new(0)).collect(),
            walked: Mutex::new(vec![Walked::Nothing; resources.len()]),
            resources,
            done: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            walker: Mutex::new(None),
        }
    }

    fn slot(&self, resource: Resource) -> Option<usize> {
        self.resources.iter().position(|r| *r == resource)
    }

    /// The count of `resource`, once every tree has been walked.
    pub(super) fn get(&self, resource: Resource) -> Option<u64> {
        let slot = self.slot(resource)?;
        self.done
            .load(Ordering::SeqCst)
            .then(|| self.counts[slot].load(Ordering::SeqCst))
    }

    /// A write (under the store's write lock) added (`true`) or removed
    /// (`false`) `key`'s record in `resource`'s tree.
    pub(super) fn changed(&self, resource: Resource, key: &[u8], added: bool) {
        let Some(slot) = self.slot(resource) else {
            return;
        };
        if !self.done.load(Ordering::SeqCst) {
            let walked = self.walked.lock().unwrap_or_else(PoisonError::into_inner);
            let passed = match &walked[slot] {
                Walked::Nothing => false,
                Walked::Through(last) => key <= last.as_slice(),
                Walked::Everything => true,
            };
            if !passed {
                return;
            }
        }
        let count = &self.counts[slot];
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
                let mut walked = Ok(false);
                while walked == Ok(false) && !counts.stop.load(Ordering::SeqCst) {
                    walked = counts.walk_chunk(&trees, &write_lock);
                }
                if let Err(e) = walked {
                    tracing::warn!(error = %e, "cannot count the stored records; the gauge stays unset until a restart");
                }
            });
        match spawned {
            Ok(walker) => {
                *self.walker.lock().unwrap_or_else(PoisonError::into_inner) = Some(walker);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start counting the stored records"),
        }
    }

    /// Stops the walk (the gauge stays unset) and waits for it to let go of
    /// the database.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let walker = self
            .walker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(walker) = walker {
            let _ = walker.join();
        }
    }

    /// Counts the next chunk of keys; `Ok(true)` once every tree is walked.
    /// The chunk is read once before taking the write lock, so that the
    /// read under it finds the keys in the cache rather than on disk (Sets
    /// wait for the lock on the async workers).
    fn walk_chunk(&self, trees: &[sled::Tree], write_lock: &Mutex<()>) -> sled::Result<bool> {
        let next = |walked: &[Walked]| walked.iter().position(|w| !matches!(w, Walked::Everything));
        let chunk = |tree: &sled::Tree, from: &Walked| match from {
            Walked::Through(last) => keys_after(tree, Some(last), CHUNK),
            _ => keys_after(tree, None, CHUNK),
        };
        let from = {
            let walked = self.walked.lock().unwrap_or_else(PoisonError::into_inner);
            next(&walked).map(|slot| (slot, walked[slot].clone()))
        };
        if let Some((slot, from)) = from {
            chunk(&trees[slot], &from)?;
        }
        let _writes = write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut walked = self.walked.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = next(&walked) else {
            self.done.store(true, Ordering::SeqCst);
            return Ok(true);
        };
        let keys = chunk(&trees[slot], &walked[slot])?;
        self.counts[slot].fetch_add(keys.len() as u64, Ordering::SeqCst);
        walked[slot] = match keys.last() {
            Some(last) if keys.len() == CHUNK => Walked::Through(last.to_vec()),
            _ => Walked::Everything,
        };
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk and writes interleaved chunk by chunk, with inserts and
    /// removals on both sides of where the walk has got: the count ends
    /// exact.
    #[test]
    fn writes_during_the_walk_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let trees: Vec<_> = Resource::ALL
            .iter()
            .map(|r| db.open_tree(r.name()).unwrap())
            .collect();
        let tree = &trees[0];
        let key = |i: usize| format!("AC{i:032x}").into_bytes();
        for i in 0..3 * CHUNK {
            tree.insert(key(2 * i), b"x").unwrap();
        }
        let counts = StoredCounts::new(Resource::ALL.to_vec());
        let lock = Mutex::new(());
        // What a write does under the write lock.
        let write = |k: Vec<u8>, add: bool| {
            if add {
                if tree.insert(&k, b"y").unwrap().is_none() {
                    counts.changed(Resource::Recording, &k, true);
                }
            } else if tree.remove(&k).unwrap().is_some() {
                counts.changed(Resource::Recording, &k, false);
            }
        };

        assert!(!counts.walk_chunk(&trees, &lock).unwrap());
        write(key(1), true); // behind the walk: counted by the write
        write(key(5 * CHUNK + 1), true); // ahead: left to the walk
        write(key(0), false); // behind: uncounted by the write
        write(key(4 * CHUNK), false); // ahead: the walk never sees it
        write(key(2), true); // a rewrite: no change
        while !counts.walk_chunk(&trees, &lock).unwrap() {
            assert_eq!(counts.get(Resource::Recording), None, "unset until done");
        }
        write(key(7), true); // after the walk

        assert_eq!(
            counts.get(Resource::Recording),
            Some(tree.len() as u64),
            "{} stored",
            tree.len()
        );
        assert_eq!(counts.get(Resource::Composition), Some(0));
    }
}
