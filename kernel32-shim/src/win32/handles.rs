//! The face's table of handles: which placeholder handle stands for which open file or
//! search. Keyed by the handle's value, which the system made unique in the process (the
//! placeholder is a real handle), so a DFS handle can never collide with another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::{Find, WinFile};

/// What a placeholder stands for.
#[derive(Debug)]
pub enum Object {
    /// An open file or directory (every duplicate of the handle shares it).
    File(Arc<WinFile>),
    /// A `FindFirstFileW` search.
    Find(Mutex<Find>),
}

/// The handles of one process.
#[derive(Debug, Default)]
pub struct Handles {
    map: RwLock<HashMap<usize, Arc<Object>>>,
    /// How many there are: a process with none pays one atomic load per hooked call.
    count: AtomicUsize,
}

impl Handles {
    /// An empty table.
    pub fn new() -> Handles {
        Handles::default()
    }

    /// Records that `handle` stands for `o`.
    pub fn insert(&self, handle: usize, o: Object) {
        self.insert_shared(handle, Arc::new(o));
    }

    fn insert_shared(&self, handle: usize, o: Arc<Object>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        if m.insert(handle, o).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What `handle` stands for, if it is one of ours.
    pub fn get(&self, handle: usize) -> Option<Arc<Object>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        m.get(&handle).cloned()
    }

    /// The open file `handle` stands for, if any.
    pub fn file(&self, handle: usize) -> Option<Arc<WinFile>> {
        match self.get(handle)?.as_ref() {
            Object::File(f) => Some(f.clone()),
            Object::Find(_) => None,
        }
    }

    /// Forgets `handle` (closing the file object when it was its last handle).
    pub fn remove(&self, handle: usize) -> Option<Arc<Object>> {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        let o = m.remove(&handle);
        if o.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        o
    }

    /// `DuplicateHandle` within the process: `new` stands for what `old` does.
    pub fn duplicate(&self, old: usize, new: usize) -> bool {
        match self.get(old) {
            Some(o) => {
                self.insert_shared(new, o);
                true
            }
            None => false,
        }
    }
}
