//! PLACEHOLDER (linear scan) until the tuple-space classifier lands from its branch.
use super::key::Key;
use super::spec::Match;

pub struct Classifier<T> {
    rules: Vec<(Match, u16, u64, T)>,
    seq: u64,
}

impl<T> Default for Classifier<T> {
    fn default() -> Self {
        Classifier {
            rules: Vec::new(),
            seq: 0,
        }
    }
}

impl<T> Classifier<T> {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, m: Match, priority: u16, value: T) -> Option<T> {
        if let Some(r) = self.rules.iter_mut().find(|r| r.0 == m && r.1 == priority) {
            return Some(std::mem::replace(&mut r.3, value));
        }
        self.seq += 1;
        self.rules.push((m, priority, self.seq, value));
        None
    }
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<T> {
        let i = self
            .rules
            .iter()
            .position(|r| r.0 == *m && r.1 == priority)?;
        Some(self.rules.remove(i).3)
    }
    pub fn get(&self, m: &Match, priority: u16) -> Option<&T> {
        self.rules
            .iter()
            .find(|r| r.0 == *m && r.1 == priority)
            .map(|r| &r.3)
    }
    pub fn lookup(&self, key: &Key, consulted: &mut Key) -> Option<(&Match, u16, &T)> {
        let mut best: Option<&(Match, u16, u64, T)> = None;
        for r in &self.rules {
            consulted.or_assign(&r.0.mask);
            if r.0.matches(key)
                && best
                    .is_none_or(|b| (r.1, std::cmp::Reverse(r.2)) > (b.1, std::cmp::Reverse(b.2)))
            {
                best = Some(r);
            }
        }
        best.map(|r| (&r.0, r.1, &r.3))
    }
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Match, u16, &T)> {
        self.rules.iter().map(|r| (&r.0, r.1, &r.3))
    }
    pub fn n_subtables(&self) -> usize {
        1
    }
    pub fn memory_bytes(&self) -> usize {
        self.rules.len() * std::mem::size_of::<(Match, u16, u64, T)>()
    }
}
