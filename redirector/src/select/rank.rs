//! Ranking the candidates of one decision: the rank key (tier, then closeness), the
//! "nearby" limit, the weighted draw among the nearby ones (or a sticky one), the best few
//! alternatives, with availability checked lazily for the drawn mirror only. Pure: random
//! bits come in with the facts.

use std::net::IpAddr;

use super::{Cand, Facts, Tier};

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Cand>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The candidate buffer, reused across decisions on a thread: a request allocates none (a
/// fresh one of 50–200 candidates is a large allocation for malloc, which then consolidates
/// its free lists on every request).
pub(super) struct Scratch(pub(super) Vec<Cand>);

impl Scratch {
    pub(super) fn take(capacity: usize) -> Scratch {
        let mut v = SCRATCH
            .with(|s| s.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)))
            .unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        Scratch(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        SCRATCH.with(|s| {
            if let Ok(mut b) = s.try_borrow_mut() {
                *b = v;
            }
        });
    }
}

/// Alternatives kept after the chosen mirror when not explaining (Link headers, JSON).
const ALTERNATIVES: usize = 4;

/// Ranking key, smaller is better: the tier, then nearness (missing locations last). Tiers are
/// 4 apart and `-closeness` lies in [-1, 2], so one float comparison orders both.
pub(super) fn rank_key(tier: Tier, closeness: Option<f64>) -> f64 {
    f64::from(tier as u8) * 4.0 - closeness.unwrap_or(-2.0)
}

/// The cosine of the largest angle still "nearby" a mirror at angle θ0 (given as its cosine):
/// 1.5 × θ0 + 100 km, computed without inverse trigonometry (half-angle and triple-angle
/// identities), capped at the antipode.
pub(super) fn nearby_limit(dot0: f64) -> f64 {
    const DELTA: f64 = 100.0 / 6371.0;
    let dot0 = dot0.clamp(-1.0, 1.0);
    if dot0 < -0.5 {
        // 1.5 × θ0 is past the antipode.
        return -1.0;
    }
    let half = ((1.0 + dot0) / 2.0).sqrt(); // cos(θ0 / 2)
    let c = 4.0 * half * half * half - 3.0 * half; // cos(1.5 θ0)
    if c < -DELTA.cos() {
        return -1.0;
    }
    let s = (1.0 - c * c).max(0.0).sqrt(); // sin(1.5 θ0), 1.5 θ0 in [0, π]
    c * DELTA.cos() - s * DELTA.sin()
}

/// Index of the best-ranked choice in `choices[from..]`, if any.
fn best_from(choices: &[Cand], from: usize) -> Option<usize> {
    let mut best = from;
    for i in from + 1..choices.len() {
        if choices[i].key < choices[best].key {
            best = i;
        }
    }
    (best < choices.len()).then_some(best)
}

/// Orders `choices`: the drawn mirror first, then the rest of the nearby set by weight, then
/// the others by tier and distance (all of them when explaining, else the best few). `best`
/// is the best-ranked candidate. Returns the size of the nearby set (at the front) and its
/// total weight, or None when no candidate holds the file.
///
/// When not explaining, availability is checked here, lazily (`holds`), so that a decision
/// looks up only the mirrors that can win: the best candidate until one holds the file, the
/// drawn mirror (a drawn mirror without the file is removed and the draw repeated — the same
/// distribution as drawing among the holders only), and the few alternatives shown. The
/// nearby set's weight is then that of its candidates before their availability was checked
/// (only the order of the alternatives uses it).
pub(super) fn rank(
    facts: &Facts<'_>,
    choices: &mut Vec<Cand>,
    mut best: usize,
    holds: &dyn Fn(&Cand) -> bool,
) -> Option<(usize, f64)> {
    let lazy = !facts.explain;
    // The best choice that holds the file: a linear pass per miss (no sort on the hot path).
    while lazy && !holds(choices.get(best)?) {
        choices.swap_remove(best);
        best = best_from(choices, 0)?;
    }
    let (tier, closest) = (choices.get(best)?.tier, choices[best].closeness);
    // Nearby: same tier, within 1.5 × the closest distance + 100 km (compared as cosines).
    // NaN closeness (unlocated) compares false: never nearby a located best choice.
    let limit = if closest.is_nan() {
        None
    } else {
        Some(nearby_limit(closest))
    };
    let is_nearby = |c: &Cand| c.tier == tier && limit.is_none_or(|l| c.closeness >= l);
    // Move the nearby set to the front, the best first, and weigh it.
    choices.swap(0, best);
    let mut nearby = 1;
    for i in 1..choices.len() {
        if is_nearby(&choices[i]) {
            if i != nearby {
                choices.swap(nearby, i);
            }
            nearby += 1;
        }
    }
    let mut total = sum_weights(&choices[..nearby]);
    // The draw; the best choice (index 0) is known to hold the file, so it always ends. A
    // redraw takes fresh random bits (the same bits would hand the removed mirror's share to
    // its neighbour in the list).
    let mut random = facts.random;
    let pick = loop {
        let pick = if facts.sticky {
            sticky_pick(facts, &choices[..nearby])
        } else {
            weighted_pick(random, &choices[..nearby], total)
        };
        random = mix(random ^ 0x2545_f491_4f6c_dd1d);
        if !lazy || pick == 0 || holds(&choices[pick]) {
            break pick;
        }
        total -= choices[pick].weight;
        drop_nearby(choices, pick, &mut nearby);
    };
    choices.swap(0, pick);
    let by_weight = |a: &Cand, b: &Cand| b.weight.total_cmp(&a.weight);
    if !lazy {
        choices[1..nearby].sort_unstable_by(by_weight);
        choices[nearby..].sort_unstable_by(|a, b| a.key.total_cmp(&b.key));
        return Some((nearby, total));
    }
    // The few alternatives shown: the rest of the nearby set by weight, then the others by
    // rank, each checked. Found by single passes for the heaviest few (a taken or rejected
    // candidate is marked with an infinite key and a negative weight); no sort.
    let mut out = Vec::with_capacity(1 + ALTERNATIVES);
    out.push(choices[0]);
    let mut shown_nearby = 1;
    'nearby: while out.len() < 1 + ALTERNATIVES {
        let (top, n) = heaviest(&choices[1..nearby], 1 + ALTERNATIVES - out.len());
        if n == 0 {
            break;
        }
        for &t in &top[..n] {
            let c = &mut choices[1 + t];
            if holds(c) {
                out.push(*c);
                shown_nearby += 1;
                c.weight = -1.0;
            } else {
                total -= c.weight;
                c.weight = -1.0;
                // Others may now be among the heaviest: look again.
                continue 'nearby;
            }
        }
    }
    while out.len() < 1 + ALTERNATIVES {
        let Some(b) = best_from(choices, nearby).filter(|&b| choices[b].key.is_finite()) else {
            break;
        };
        if holds(&choices[b]) {
            out.push(choices[b]);
        }
        choices[b].key = f64::INFINITY;
    }
    choices.clear();
    choices.extend_from_slice(&out);
    Some((shown_nearby, total))
}

/// Indices of the (up to) `k` heaviest candidates with a non-negative weight, heaviest first,
/// in one pass.
fn heaviest(choices: &[Cand], k: usize) -> ([usize; ALTERNATIVES], usize) {
    let k = k.min(ALTERNATIVES);
    let mut top = [0usize; ALTERNATIVES];
    let mut n = 0;
    if k == 0 {
        return (top, 0);
    }
    for (i, c) in choices.iter().enumerate() {
        if c.weight < 0.0 || (n == k && c.weight <= choices[top[n - 1]].weight) {
            continue;
        }
        // Insert in order, dropping the lightest when full.
        let mut j = if n < k { n } else { k - 1 };
        while j > 0 && choices[top[j - 1]].weight < c.weight {
            top[j] = top[j - 1];
            j -= 1;
        }
        top[j] = i;
        n = (n + 1).min(k);
    }
    (top, n)
}

/// Removes `choices[i]`, one of the first `nearby`, keeping those contiguous.
fn drop_nearby(choices: &mut Vec<Cand>, i: usize, nearby: &mut usize) {
    *nearby -= 1;
    choices.swap(i, *nearby);
    choices.swap_remove(*nearby);
}

/// The sum of the weights, over four independent accumulators (a single running sum is one
/// long chain of dependent additions).
fn sum_weights(cands: &[Cand]) -> f64 {
    let mut acc = [0.0; 4];
    let mut chunks = cands.chunks_exact(4);
    for q in &mut chunks {
        for (a, c) in acc.iter_mut().zip(q) {
            *a += c.weight;
        }
    }
    let rest: f64 = chunks.remainder().iter().map(|c| c.weight).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// A draw in proportion to the weights: the block of 8 the draw falls in, then the candidate
/// inside it.
fn weighted_pick(random: u64, nearby: &[Cand], total: f64) -> usize {
    let mut x = unit(mix(random)) * total;
    let mut start = 0;
    for block in nearby.chunks(8) {
        let w = sum_weights(block);
        if x < w || start + block.len() == nearby.len() {
            for (i, c) in block.iter().enumerate() {
                x -= c.weight;
                if x < 0.0 {
                    return start + i;
                }
            }
            return start + block.len() - 1;
        }
        x -= w;
        start += block.len();
    }
    nearby.len().saturating_sub(1)
}

/// Rendezvous hashing on the client's network: the same /24 (or /48) and project keep their
/// mirror while it stays eligible, and weights still hold across clients.
fn sticky_pick(facts: &Facts<'_>, nearby: &[Cand]) -> usize {
    let key = client_key(facts.ip) ^ (facts.project as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    nearby
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let salt = (c.mirror as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let u = unit(mix(key ^ salt));
            (i, -u.ln() / c.weight)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i)
}

fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (u128::from(v6) >> 80) as u64 | 1 << 63,
    }
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A float in (0, 1) from 64 random bits.
fn unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}
