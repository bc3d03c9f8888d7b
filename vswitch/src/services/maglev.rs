//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
//! prime size M where each backend owns about M/N slots, filled from per-backend
//! permutations, so adding or removing one backend moves about 1/N of the slots.
//! The build is deterministic: it depends only on the backends' names, in order
//! of their names, never on the order they are given in.

/// Default (and largest) table size: a prime, as Maglev requires.
pub const DEFAULT_SIZE: u32 = 16381;

/// Table sizes used, all prime: the smallest one with at least 100 slots per
/// backend is chosen (bounded by the configured size), so a service with few
/// endpoints does not cost 32 KiB.
const PRIMES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

pub fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// The table size for `n` backends when at most `max` (a prime) is allowed.
pub fn size_for(n: usize, max: u32) -> u32 {
    let want = (n as u64 * 100).min(u64::from(max));
    PRIMES
        .iter()
        .copied()
        .find(|&p| u64::from(p) >= want && p <= max)
        .unwrap_or(max)
}

/// FNV-1a then a final mix: fixed (no seed), so every node builds the same table.
fn hash(s: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Builds the table: `table[i]` is an index into `names`. Empty when there are
/// no backends. `m` must be prime (and > names.len()).
pub fn build(names: &[String], m: u32) -> Vec<u16> {
    let n = names.len().min(usize::from(u16::MAX));
    if n == 0 || m == 0 {
        return Vec::new();
    }
    // Fill in name order so the result does not depend on the input order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let m64 = u64::from(m);
    let perm: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let b = names[i].as_bytes();
            let offset = hash(b, 0) % m64;
            let skip = hash(b, 0x9e37_79b9) % (m64 - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut table = vec![u16::MAX; m as usize];
    let mut filled = 0u32;
    'outer: loop {
        for (k, &(offset, skip)) in perm.iter().enumerate() {
            // The next preferred slot of backend k that is still free.
            let mut c = (offset + next[k] * skip) % m64;
            while table[c as usize] != u16::MAX {
                next[k] += 1;
                c = (offset + next[k] * skip) % m64;
            }
            table[c as usize] = order[k] as u16;
            next[k] += 1;
            filled += 1;
            if filled == m {
                break 'outer;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
            .collect()
    }

    #[test]
    fn populated_and_balanced() {
        let b = names(10);
        let t = build(&b, 1021);
        assert_eq!(t.len(), 1021);
        let mut counts = [0usize; 10];
        for &i in &t {
            counts[usize::from(i)] += 1;
        }
        for c in counts {
            assert!((92..=113).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn deterministic_whatever_the_order() {
        let b = names(7);
        let mut r = b.clone();
        r.reverse();
        let t1 = build(&b, 1021);
        let t2 = build(&r, 1021);
        let m1: Vec<&String> = t1.iter().map(|&i| &b[usize::from(i)]).collect();
        let m2: Vec<&String> = t2.iter().map(|&i| &r[usize::from(i)]).collect();
        assert_eq!(m1, m2);
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let b = names(10);
        let t1 = build(&b, DEFAULT_SIZE);
        let mut b2 = b.clone();
        let gone = b2.remove(3);
        let t2 = build(&b2, DEFAULT_SIZE);
        let moved = t1
            .iter()
            .zip(&t2)
            .filter(|&(&a, &c)| b[usize::from(a)] != b2[usize::from(c)])
            .count();
        let own = t1.iter().filter(|&&a| b[usize::from(a)] == gone).count();
        // Every slot of the removed one moves; few others do.
        assert!(moved >= own);
        let frac = moved as f64 / f64::from(DEFAULT_SIZE);
        assert!(frac < 0.1 * 1.6, "moved {frac}");
        // Adding one back: about 1/11 move.
        let t3 = build(&names(11), DEFAULT_SIZE);
        let b3 = names(11);
        let moved = t1
            .iter()
            .zip(&t3)
            .filter(|&(&a, &c)| b[usize::from(a)] != b3[usize::from(c)])
            .count();
        assert!((moved as f64 / f64::from(DEFAULT_SIZE)) < 0.091 * 1.6);
    }

    #[test]
    fn sizes_are_prime() {
        assert!(PRIMES.iter().all(|&p| is_prime(p)));
        assert_eq!(size_for(1, DEFAULT_SIZE), 251);
        assert_eq!(size_for(10, DEFAULT_SIZE), 1021);
        assert_eq!(size_for(1000, DEFAULT_SIZE), DEFAULT_SIZE);
        assert!(build(&[], 251).is_empty());
        assert_eq!(build(&names(1), 251), vec![0; 251]);
    }
}
