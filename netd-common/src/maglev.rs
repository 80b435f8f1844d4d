//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights:
//! the lookup table of a service, computed in userspace, read by the
//! datapath as `table[flow_hash % M]` → backend id.
//!
//! Every host computes the same table from the same backends, whatever order
//! it learnt them in (the backends are taken in id order), so a flow picks
//! the same backend on every host. Removing one of N backends moves little
//! more than that backend's 1/N of the table.
//!
//! Pure and `no_std`: the caller hands in the scratch space.

/// A backend as Maglev sees it: a stable id (the value written into the
/// table) and a weight (0: draining, it gets no slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: u32,
    pub weight: u32,
}

/// A table size: a prime, so every backend's permutation visits every
/// slot. Larger spreads weights more finely and disrupts less when a backend
/// goes (removing 1 of N moves at most 1/N + 1% of the slots up to 20
/// backends at this size, up to 200 at 65537), at 4 bytes a slot.
pub const TABLE_SIZE: u32 = 16381;

/// The largest weight accepted: a round then still fits in any table.
pub const MAX_WEIGHT: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The table's length is not a prime (or is below 2).
    NotPrime(usize),
    /// No backend with a weight above 0.
    NoBackends,
    /// Backends must come sorted by id, each id once.
    Unsorted,
    /// A weight above [`MAX_WEIGHT`].
    Weight(u32),
    /// The scratch space holds fewer entries than there are backends.
    Scratch,
}

impl core::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MaglevError::NotPrime(m) => {
                write!(f, "a Maglev table of {m} slots: the size must be a prime")
            }
            MaglevError::NoBackends => write!(f, "no backend with a weight above 0"),
            MaglevError::Unsorted => write!(f, "backends must be sorted by id, each id once"),
            MaglevError::Weight(w) => write!(f, "weight {w} is above {MAX_WEIGHT}"),
            MaglevError::Scratch => write!(f, "scratch space smaller than the backend list"),
        }
    }
}

pub const fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from `x`.
const fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Backend `id`'s permutation of a table of `m` slots: its first choice
/// and the step to its next (never 0, and coprime with a prime `m`).
const fn permutation(id: u32, m: usize) -> (usize, usize) {
    let offset = (mix(id as u64) % m as u64) as usize;
    let skip = (mix((id as u64) ^ 0xa5a5_a5a5_0000_0000) % (m as u64 - 1)) as usize + 1;
    (offset, skip)
}

/// Fills `table` (its length is M, a prime) with backend ids. `next` is
/// scratch space of at least `backends.len()` entries. Backends take turns
/// in id order, each as many turns per round as its weight, each turn the
/// first slot of its permutation not yet taken.
pub fn populate(
    backends: &[Backend],
    next: &mut [u32],
    table: &mut [u32],
) -> Result<(), MaglevError> {
    let m = table.len();
    if !is_prime(m) {
        return Err(MaglevError::NotPrime(m));
    }
    if next.len() < backends.len() {
        return Err(MaglevError::Scratch);
    }
    let mut previous: Option<u32> = None;
    let mut any = false;
    for b in backends {
        if previous.is_some_and(|p| p >= b.id) {
            return Err(MaglevError::Unsorted);
        }
        if b.weight > MAX_WEIGHT {
            return Err(MaglevError::Weight(b.weight));
        }
        previous = Some(b.id);
        any |= b.weight > 0;
    }
    if !any {
        return Err(MaglevError::NoBackends);
    }
    const EMPTY: u32 = u32::MAX;
    for slot in table.iter_mut() {
        *slot = EMPTY;
    }
    for n in next.iter_mut().take(backends.len()) {
        *n = 0;
    }
    let mut filled = 0;
    while filled < m {
        for (i, b) in backends.iter().enumerate() {
            let (offset, skip) = permutation(b.id, m);
            for _ in 0..b.weight {
                // The next slot of this backend's permutation nobody took.
                let mut slot = (offset + next[i] as usize * skip) % m;
                while table[slot] != EMPTY {
                    next[i] += 1;
                    slot = (offset + next[i] as usize * skip) % m;
                }
                table[slot] = b.id;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(backends: &[Backend], m: usize) -> Vec<u32> {
        let mut t = vec![0; m];
        let mut next = vec![0; backends.len()];
        populate(backends, &mut next, &mut t).expect("populate");
        t
    }

    fn equal(n: u32) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                id: 100 + i * 7,
                weight: 1,
            })
            .collect()
    }

    fn shares(t: &[u32], backends: &[Backend]) -> Vec<f64> {
        backends
            .iter()
            .map(|b| t.iter().filter(|s| **s == b.id).count() as f64 / t.len() as f64)
            .collect()
    }

    #[test]
    fn every_slot_holds_a_backend_and_every_host_builds_the_same_table() {
        let backends = equal(5);
        let t = table(&backends, TABLE_SIZE as usize);
        assert!(t.iter().all(|s| backends.iter().any(|b| b.id == *s)));
        assert_eq!(t, table(&backends, TABLE_SIZE as usize));
    }

    #[test]
    fn each_backend_gets_its_weighted_share_within_10_percent() {
        for weights in [
            vec![1, 1, 1],
            vec![1, 2, 3, 4],
            vec![1, 1, 2, 5, 10, 1, 1],
            vec![256, 1, 17],
            vec![3; 100],
        ] {
            let backends: Vec<Backend> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| Backend {
                    id: i as u32 * 3 + 1,
                    weight: *w,
                })
                .collect();
            let t = table(&backends, TABLE_SIZE as usize);
            let total: u32 = weights.iter().sum();
            for (b, got) in backends.iter().zip(shares(&t, &backends)) {
                let want = f64::from(b.weight) / f64::from(total);
                assert!(
                    (got - want).abs() <= 0.10 * want,
                    "weights {weights:?}: backend {} got {got:.4}, wants {want:.4}",
                    b.id
                );
            }
        }
    }

    #[test]
    fn a_draining_backend_gets_no_slot() {
        let mut backends = equal(4);
        backends[1].weight = 0;
        let t = table(&backends, 1021);
        assert!(!t.contains(&backends[1].id));
        assert!(backends
            .iter()
            .filter(|b| b.weight > 0)
            .all(|b| t.contains(&b.id)));
    }

    /// Measured here: the extra disruption grows with N/M. With M = 16381 it
    /// stays within 1% up to 20 backends, with M = 65537 up to 200.
    #[test]
    fn removing_one_of_n_backends_moves_little_more_than_its_share() {
        for (m, n) in [
            (16381usize, 10u32),
            (16381, 20),
            (65537, 50),
            (65537, 100),
            (65537, 200),
        ] {
            let all = equal(n);
            let before = table(&all, m);
            let mut worst: f64 = 0.0;
            // Ten backends spread over the list (all of them when fewer).
            for gone in (0..n as usize).step_by((n as usize / 10).max(1)) {
                let mut fewer = all.clone();
                fewer.remove(gone);
                let after = table(&fewer, m);
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                worst = worst.max(moved as f64 / m as f64);
            }
            let bound = 1.0 / f64::from(n) + 0.01;
            println!(
                "maglev M={m}: removing 1 of {n} backends moves at most {:.2}% of the table (1/N = {:.2}%)",
                worst * 100.0,
                100.0 / f64::from(n)
            );
            assert!(
                worst <= bound,
                "M={m}, {n} backends: {worst:.4} > {bound:.4}"
            );
        }
    }

    #[test]
    fn the_table_does_not_depend_on_how_the_backends_were_learnt() {
        // Sorted by id is the contract; an unsorted list is refused.
        let backends = equal(6);
        let mut shuffled = backends.clone();
        shuffled.swap(0, 4);
        let mut t = vec![0; 1021];
        let mut next = vec![0; 6];
        assert_eq!(
            populate(&shuffled, &mut next, &mut t),
            Err(MaglevError::Unsorted)
        );
        shuffled.sort_by_key(|b| b.id);
        assert_eq!(table(&shuffled, 1021), table(&backends, 1021));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let mut next = vec![0; 4];
        let two = equal(2);
        assert_eq!(
            populate(&two, &mut next, &mut vec![0; 1000]),
            Err(MaglevError::NotPrime(1000))
        );
        assert_eq!(
            populate(&[], &mut next, &mut vec![0; 1021]),
            Err(MaglevError::NoBackends)
        );
        let idle = [Backend { id: 1, weight: 0 }];
        assert_eq!(
            populate(&idle, &mut next, &mut vec![0; 1021]),
            Err(MaglevError::NoBackends)
        );
        let twice = [Backend { id: 1, weight: 1 }, Backend { id: 1, weight: 1 }];
        assert_eq!(
            populate(&twice, &mut next, &mut vec![0; 1021]),
            Err(MaglevError::Unsorted)
        );
        let heavy = [Backend {
            id: 1,
            weight: MAX_WEIGHT + 1,
        }];
        assert_eq!(
            populate(&heavy, &mut next, &mut vec![0; 1021]),
            Err(MaglevError::Weight(MAX_WEIGHT + 1))
        );
        assert_eq!(
            populate(&equal(5), &mut next, &mut vec![0; 1021]),
            Err(MaglevError::Scratch)
        );
        assert_eq!(
            MaglevError::NotPrime(1000).to_string(),
            "a Maglev table of 1000 slots: the size must be a prime"
        );
    }

    #[test]
    fn primes() {
        assert!(is_prime(TABLE_SIZE as usize) && is_prime(1021) && is_prime(65537));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(16383));
    }
}
