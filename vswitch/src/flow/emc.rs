//! PLACEHOLDER until the exact-match cache lands from its branch.
use super::key::Key;
use super::megaflow::MegaflowId;

pub fn hash_key(k: &Key) -> u32 {
    let mut h: u64 = 0;
    for w in k.0 {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    (h >> 32) as u32
}

pub struct ExactMatchCache {
    entries: Vec<Option<(Key, MegaflowId)>>,
    mask: usize,
}

impl ExactMatchCache {
    pub fn new(size: usize) -> Self {
        let n = size.next_power_of_two();
        ExactMatchCache {
            entries: vec![None; n],
            mask: n - 1,
        }
    }
    pub fn lookup(&self, key: &Key, hash: u32) -> Option<MegaflowId> {
        match &self.entries[hash as usize & self.mask] {
            Some((k, id)) if k == key => Some(*id),
            _ => None,
        }
    }
    pub fn insert(&mut self, key: &Key, hash: u32, id: MegaflowId) {
        self.entries[hash as usize & self.mask] = Some((*key, id));
    }
    pub fn clear(&mut self) {
        self.entries.iter_mut().for_each(|e| *e = None);
    }
}
