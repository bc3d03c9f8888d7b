//! PLACEHOLDER (linear) until the tuple-space megaflow cache lands from its branch.
use super::key::Key;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MegaflowId {
    pub slot: u32,
    pub version: u32,
}

#[allow(clippy::type_complexity)]
pub struct MegaflowCache<T> {
    slots: Vec<(u32, Option<(Key, Key, T)>)>,
    cap: usize,
    len: usize,
}

impl<T> MegaflowCache<T> {
    pub fn new(cap: usize) -> Self {
        MegaflowCache {
            slots: Vec::new(),
            cap,
            len: 0,
        }
    }
    pub fn insert(&mut self, mask: &Key, key: &Key, value: T) -> MegaflowId {
        if self.len >= self.cap {
            self.clear();
        }
        let v = key.masked(mask);
        let slot = match self.slots.iter().position(|s| s.1.is_none()) {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                self.slots.len() - 1
            }
        };
        self.slots[slot].0 += 1;
        self.slots[slot].1 = Some((*mask, v, value));
        self.len += 1;
        MegaflowId {
            slot: slot as u32,
            version: self.slots[slot].0,
        }
    }
    pub fn lookup(&mut self, key: &Key) -> Option<(MegaflowId, &mut T)> {
        for (i, s) in self.slots.iter_mut().enumerate() {
            let ver = s.0;
            if let Some((m, v, t)) = &mut s.1
                && key.matches(m, v)
            {
                return Some((
                    MegaflowId {
                        slot: i as u32,
                        version: ver,
                    },
                    t,
                ));
            }
        }
        None
    }
    pub fn get_mut(&mut self, id: MegaflowId) -> Option<&mut T> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.0 != id.version {
            return None;
        }
        s.1.as_mut().map(|e| &mut e.2)
    }
    pub fn remove(&mut self, id: MegaflowId) -> Option<T> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.0 != id.version {
            return None;
        }
        let e = s.1.take()?;
        self.len -= 1;
        Some(e.2)
    }
    pub fn retain(&mut self, mut f: impl FnMut(&mut T) -> bool) {
        for s in &mut self.slots {
            if let Some(e) = &mut s.1
                && !f(&mut e.2)
            {
                s.1 = None;
                self.len -= 1;
            }
        }
    }
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.1 = None;
        }
        self.len = 0;
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = (MegaflowId, &Key, &Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.1.as_ref().map(|(m, v, t)| {
                (
                    MegaflowId {
                        slot: i as u32,
                        version: s.0,
                    },
                    m,
                    v,
                    t,
                )
            })
        })
    }
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<(u32, Option<(Key, Key, T)>)>()
    }
}
