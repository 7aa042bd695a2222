//! The mapping library a running engine uses, replaced as a whole when its files change:
//! messages being mapped keep the library they started with, the next ones get the new one.
//! A library with problems, or without a mapping the channels name, is not swapped in.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::{Library, Problem};

pub struct Live {
    current: RwLock<Arc<Library>>,
    /// The mapping and ConceptMap folders; None for a fixed library, which never reloads.
    dirs: Option<(PathBuf, PathBuf)>,
    /// Mapping ids the channels use: a reload must keep them.
    required: Mutex<Vec<String>>,
    /// What the files looked like when last loaded.
    fingerprint: Mutex<Vec<(PathBuf, Option<SystemTime>, u64)>>,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    /// The files have not changed.
    Unchanged,
    /// The new library is in use; it has this many mappings.
    Swapped(usize),
    /// The files have problems: the previous library stays in use.
    Refused(Vec<Problem>),
}

fn fingerprint(dirs: &[&Path]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(m) = e.metadata() {
                out.push((path, m.modified().ok(), m.len()));
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out.sort();
    out
}

impl Live {
    /// Loads the library; its problems are returned with it (the caller decides whether to
    /// start).
    pub fn load(mappings_dir: &Path, conceptmaps_dir: &Path) -> (Arc<Live>, Vec<Problem>) {
        let print = fingerprint(&[mappings_dir, conceptmaps_dir]);
        let (library, problems) = Library::load(mappings_dir, conceptmaps_dir);
        let live = Live {
            current: RwLock::new(Arc::new(library)),
            dirs: Some((mappings_dir.to_path_buf(), conceptmaps_dir.to_path_buf())),
            required: Mutex::new(Vec::new()),
            fingerprint: Mutex::new(print),
        };
        (Arc::new(live), problems)
    }

    /// A fixed library (tests, and channels loaded without mappings).
    pub fn fixed(library: Library) -> Arc<Live> {
        Arc::new(Live {
            current: RwLock::new(Arc::new(library)),
            dirs: None,
            required: Mutex::new(Vec::new()),
            fingerprint: Mutex::new(Vec::new()),
        })
    }

    /// The library in use now.
    pub fn get(&self) -> Arc<Library> {
        self.current.read().expect("mapping library lock").clone()
    }

    /// Records that a channel uses this mapping id.
    pub fn require(&self, id: &str) {
        let mut r = self.required.lock().expect("required lock");
        if !r.iter().any(|x| x == id) {
            r.push(id.to_string());
        }
    }

    /// Reloads when the files changed since the last load (or always, with `force`).
    pub fn reload(&self, force: bool) -> Reload {
        let Some((mappings_dir, conceptmaps_dir)) = &self.dirs else {
            return Reload::Unchanged;
        };
        let print = fingerprint(&[mappings_dir, conceptmaps_dir]);
        if !force && *self.fingerprint.lock().expect("fingerprint lock") == print {
            return Reload::Unchanged;
        }
        let (library, mut problems) = Library::load(mappings_dir, conceptmaps_dir);
        for id in self.required.lock().expect("required lock").iter() {
            if library.mapping(id).is_none() {
                problems.push(Problem {
                    file: mappings_dir.clone(),
                    line: 0,
                    column: 0,
                    message: format!("mapping `{id}` is used by a channel and no longer exists"),
                });
            }
        }
        // Remember these files either way: the same broken files are not reported again
        // every few seconds, and the next change is.
        *self.fingerprint.lock().expect("fingerprint lock") = print;
        if !problems.is_empty() {
            return Reload::Refused(problems);
        }
        let n = library.mappings().len();
        *self.current.write().expect("mapping library lock") = Arc::new(library);
        Reload::Swapped(n)
    }
}
