//! A map keyed by paths relative to a release, for its index (100,000 entries on a large site).
//!
//! Every key's bytes are kept end to end in one buffer, and the table holds where each one is.
//! A `HashMap<PathBuf, _>` held a `PathBuf` (24 bytes) in each bucket and a heap block for each
//! key (48 bytes for a 25-byte path): a third of an index's memory.
//!
//! Keys are compared as bytes. The paths pushdeploy builds (tree names joined with `/`) and
//! reads back from an index are normal: no `.` component, no `//`, no trailing `/`.

use std::ffi::OsStr;
use std::hash::{BuildHasher, RandomState};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// A map from relative paths to `V`, with the methods of `HashMap<PathBuf, V>` the index uses.
#[derive(Debug, Clone)]
pub struct PathMap<V> {
    /// The keys, end to end; a removed key's bytes stay until the map is dropped.
    bytes: Vec<u8>,
    table: HashTable<Slot<V>>,
    hasher: RandomState,
}

/// One entry: where its key is in `bytes`, and its value.
#[derive(Debug, Clone)]
struct Slot<V> {
    start: usize,
    len: usize,
    value: V,
}

impl<V> Slot<V> {
    fn key<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.start..self.start + self.len]
    }
}

fn as_path(key: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(key))
}

impl<V> Default for PathMap<V> {
    fn default() -> Self {
        PathMap { bytes: Vec::new(), table: HashTable::new(), hasher: RandomState::new() }
    }
}

impl<V> PathMap<V> {
    /// Returns an empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        PathMap { table: HashTable::with_capacity(capacity), ..PathMap::default() }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Makes room for `additional` more entries.
    pub fn reserve(&mut self, additional: usize) {
        let (bytes, hasher) = (&self.bytes, &self.hasher);
        self.table.reserve(additional, |slot| hasher.hash_one(slot.key(bytes)));
    }

    pub fn get(&self, path: &Path) -> Option<&V> {
        let key = path.as_os_str().as_bytes();
        let bytes = &self.bytes;
        let found = self.table.find(self.hasher.hash_one(key), |slot| slot.key(bytes) == key);
        found.map(|slot| &slot.value)
    }

    pub fn contains_key(&self, path: &Path) -> bool {
        self.get(path).is_some()
    }

    /// Inserts `value` at `path`, returning the value it replaces.
    pub fn insert(&mut self, path: PathBuf, value: V) -> Option<V> {
        self.insert_bytes(path.as_os_str().as_bytes(), value)
    }

    /// Inserts `value` at the path whose bytes are `key` (copied into the map), returning the
    /// value it replaces: for a reader that has the path in a buffer of its own, with no
    /// `PathBuf` to make for each entry.
    pub fn insert_bytes(&mut self, key: &[u8], value: V) -> Option<V> {
        let (bytes, hasher) = (&self.bytes, &self.hasher);
        let entry = self.table.entry(
            hasher.hash_one(key),
            |slot| slot.key(bytes) == key,
            |slot| hasher.hash_one(slot.key(bytes)),
        );
        match entry {
            Entry::Occupied(mut occupied) => {
                Some(std::mem::replace(&mut occupied.get_mut().value, value))
            }
            Entry::Vacant(vacant) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(key);
                vacant.insert(Slot { start, len: key.len(), value });
                None
            }
        }
    }

    /// Removes the entry at `path`, returning its value.
    pub fn remove(&mut self, path: &Path) -> Option<V> {
        let key = path.as_os_str().as_bytes();
        let bytes = &self.bytes;
        let hash = self.hasher.hash_one(key);
        let found = self.table.find_entry(hash, |slot| slot.key(bytes) == key).ok()?;
        Some(found.remove().0.value)
    }

    /// Keeps only the entries `keep` returns true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path, &mut V) -> bool) {
        let bytes = &self.bytes;
        self.table.retain(|slot| keep(as_path(slot.key(bytes)), &mut slot.value));
    }

    /// Returns every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &V)> {
        self.into_iter()
    }
}

impl<V: PartialEq> PartialEq for PathMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(path, value)| other.get(path) == Some(value))
    }
}

impl<V> Extend<(PathBuf, V)> for PathMap<V> {
    fn extend<I: IntoIterator<Item = (PathBuf, V)>>(&mut self, entries: I) {
        let entries = entries.into_iter();
        self.reserve(entries.size_hint().0);
        for (path, value) in entries {
            self.insert(path, value);
        }
    }
}

impl<'a, V> IntoIterator for &'a PathMap<V> {
    type Item = (&'a Path, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        Iter { bytes: &self.bytes, slots: self.table.iter() }
    }
}

/// The entries of a [`PathMap`], borrowed.
pub struct Iter<'a, V> {
    bytes: &'a [u8],
    slots: hashbrown::hash_table::Iter<'a, Slot<V>>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Path, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let slot = self.slots.next()?;
        Some((as_path(slot.key(self.bytes)), &slot.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl<V> IntoIterator for PathMap<V> {
    type Item = (PathBuf, V);
    type IntoIter = IntoIter<V>;

    fn into_iter(self) -> IntoIter<V> {
        IntoIter { bytes: self.bytes, slots: self.table.into_iter() }
    }
}

/// The entries of a [`PathMap`], each path made a `PathBuf` again.
pub struct IntoIter<V> {
    bytes: Vec<u8>,
    slots: hashbrown::hash_table::IntoIter<Slot<V>>,
}

impl<V> Iterator for IntoIter<V> {
    type Item = (PathBuf, V);

    fn next(&mut self) -> Option<Self::Item> {
        let slot = self.slots.next()?;
        Some((as_path(slot.key(&self.bytes)).to_owned(), slot.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn path(bytes: &[u8]) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(bytes))
    }

    #[test]
    fn behaves_as_a_hash_map_of_paths() {
        let mut map = PathMap::default();
        let mut model = HashMap::new();
        let keys: Vec<PathBuf> = (0..300)
            .map(|i| path(format!("section-{:02}/page-{i}.html", i % 7).as_bytes()))
            .chain([path(b""), path(b"x/\xff\xfe"), path(b"a b/\x80")])
            .collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.insert(key.clone(), i), model.insert(key.clone(), i));
        }
        // Replacing keeps one entry; removing twice finds it once.
        assert_eq!(map.insert(keys[3].clone(), 1000), model.insert(keys[3].clone(), 1000));
        for key in keys.iter().step_by(5) {
            assert_eq!(map.remove(key), model.remove(key));
            assert_eq!(map.remove(key), None);
        }
        map.retain(|path, value| {
            *value += 1;
            !path.starts_with("section-03")
        });
        model.retain(|path, value| {
            *value += 1;
            !path.starts_with("section-03")
        });
        map.extend([(path(b"new"), 7), (keys[1].clone(), 8)]);
        model.extend([(path(b"new"), 7), (keys[1].clone(), 8)]);

        assert_eq!(map.len(), model.len());
        for key in keys.iter().chain([&path(b"new"), &path(b"missing")]) {
            assert_eq!(map.get(key), model.get(key), "{}", key.display());
            assert_eq!(map.contains_key(key), model.contains_key(key));
        }
        let mut seen: Vec<(PathBuf, usize)> =
            map.iter().map(|(path, value)| (path.to_owned(), *value)).collect();
        let mut expected: Vec<(PathBuf, usize)> = model.clone().into_iter().collect();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);
        let mut owned: Vec<(PathBuf, usize)> = map.clone().into_iter().collect();
        owned.sort();
        assert_eq!(owned, expected);
        assert_eq!(map, map.clone());
        let mut other = map.clone();
        other.insert(path(b"one more"), 0);
        assert_ne!(map, other);
    }
}
