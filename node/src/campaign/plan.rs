//! Selection: which of a target's matched resources a step acts on, and why the others are
//! left out. Pure: the caller gathers the candidates (resources, live health, leases) and
//! brings the random source, so `ire plan --seed N` is deterministic and the rules are
//! property-tested.
//!
//! The rules, in order:
//! 1. A resource whose lease someone else holds (another campaign, an operator hold) is
//!    left out: it cannot be faulted now.
//! 2. The mode decides how many of the matched resources to take (`count`); they are drawn
//!    at random among the rest (all of them for `all`).
//! 3. The guard keeps `min-available` healthy, unfaulted resources: a drawn resource that is
//!    healthy is taken only while the healthy ones left would stay at or above it.
//!    An unhealthy resource costs the guard nothing.

use std::fmt;

use rand::seq::SliceRandom;
use rand::Rng;

use super::model::{Guard, Mode};

/// What the selection knows of one matched resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its key (for display).
    pub key: String,
    /// Healthy now (per the monitor).
    pub healthy: bool,
    /// Who else holds its lease, if anyone.
    pub leased_by: Option<String>,
}

/// Why a matched resource was left out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum Exclusion {
    /// Its lease is held by someone else.
    Leased {
        /// The holder.
        holder: String,
    },
    /// The mode took enough resources without it.
    Mode {
        /// The mode, as written.
        mode: String,
        /// How many it takes.
        takes: usize,
    },
    /// Faulting it would leave fewer than `min-available` healthy resources.
    Guard {
        /// Healthy, unfaulted resources before it.
        available: usize,
        /// The guard's minimum.
        min_available: usize,
    },
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Leased { holder } => write!(f, "leased by {holder}"),
            Exclusion::Mode { mode, takes } => {
                write!(f, "mode {mode} takes {takes}")
            }
            Exclusion::Guard {
                available,
                min_available,
            } => write!(
                f,
                "guard: {available} healthy left, min-available {min_available}"
            ),
        }
    }
}

/// The outcome: indices into the candidates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Chosen, in the order they were drawn.
    pub chosen: Vec<usize>,
    /// Left out, with the reason, in candidate order.
    pub excluded: Vec<(usize, Exclusion)>,
}

/// How many of `matched` resources the mode takes, before leases and guards. For
/// `random-max-percent` this is the upper bound; [`select`] draws the number.
///
/// - `one`: 1; `all`: all; `fixed: N`: N (at most all).
/// - `fixed-percent: P`: floor(matched * P / 100), at least 1 when anything matched.
/// - `random-max-percent: P`: floor(matched * P / 100) at most (the draw is between 1 and
///   that bound; 0 when the bound is 0).
pub fn mode_count(mode: Mode, matched: usize) -> usize {
    let pct = |p: f64| ((matched as f64) * p / 100.0 + 1e-9).floor() as usize;
    let n = match mode {
        Mode::One => 1,
        Mode::All => matched,
        Mode::Fixed(n) => n as usize,
        Mode::FixedPercent(p) => pct(p).max(1),
        Mode::RandomMaxPercent(p) => pct(p),
    };
    n.min(matched)
}

/// Chooses among the candidates (see the module docs).
pub fn select(
    mode: Mode,
    guard: &Guard,
    candidates: &[Candidate],
    rng: &mut impl Rng,
) -> Selection {
    let matched = candidates.len();
    let mut out = Selection::default();
    let mut eligible: Vec<usize> = Vec::with_capacity(matched);
    for (i, c) in candidates.iter().enumerate() {
        match &c.leased_by {
            Some(h) => out
                .excluded
                .push((i, Exclusion::Leased { holder: h.clone() })),
            None => eligible.push(i),
        }
    }
    let bound = mode_count(mode, matched);
    let takes = match mode {
        Mode::RandomMaxPercent(_) if bound > 0 => rng.random_range(1..=bound),
        _ => bound,
    }
    .min(eligible.len());
    if mode != Mode::All {
        eligible.shuffle(rng);
    }
    let min_available = guard.min_available.map(|m| m.resolve(matched)).unwrap_or(0);
    let mut available = candidates.iter().filter(|c| c.healthy).count();
    let mut taken = 0;
    for &i in &eligible {
        if taken == takes {
            out.excluded.push((
                i,
                Exclusion::Mode {
                    mode: mode.to_string(),
                    takes,
                },
            ));
            continue;
        }
        if candidates[i].healthy {
            if available <= min_available {
                out.excluded.push((
                    i,
                    Exclusion::Guard {
                        available,
                        min_available,
                    },
                ));
                continue;
            }
            available -= 1;
        }
        out.chosen.push(i);
        taken += 1;
    }
    out.excluded.sort_by_key(|(i, _)| *i);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::model::MinAvailable;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn fleet(healthy: &[bool]) -> Vec<Candidate> {
        healthy
            .iter()
            .enumerate()
            .map(|(i, h)| Candidate {
                key: format!("local/svc-{i}"),
                healthy: *h,
                leased_by: None,
            })
            .collect()
    }

    #[test]
    fn fixed_percent_rounds_down_with_at_least_one() {
        assert_eq!(mode_count(Mode::FixedPercent(50.0), 5), 2);
        assert_eq!(mode_count(Mode::FixedPercent(10.0), 3), 1);
        assert_eq!(mode_count(Mode::FixedPercent(100.0), 7), 7);
        assert_eq!(mode_count(Mode::FixedPercent(33.3), 3), 1);
        assert_eq!(mode_count(Mode::FixedPercent(50.0), 0), 0);
        assert_eq!(mode_count(Mode::RandomMaxPercent(10.0), 3), 0);
        assert_eq!(mode_count(Mode::Fixed(10), 3), 3);
    }

    #[test]
    fn leased_resources_are_left_out_with_their_holder() {
        let mut c = fleet(&[true, true, true]);
        c[1].leased_by = Some("campaign-b/step".into());
        let s = select(
            Mode::All,
            &Guard::default(),
            &c,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(s.chosen, vec![0, 2]);
        assert_eq!(
            s.excluded,
            vec![(
                1,
                Exclusion::Leased {
                    holder: "campaign-b/step".into()
                }
            )]
        );
    }

    #[test]
    fn the_same_seed_picks_the_same_resources() {
        let c = fleet(&[true; 50]);
        let a = select(
            Mode::Fixed(5),
            &Guard::default(),
            &c,
            &mut StdRng::seed_from_u64(7),
        );
        let b = select(
            Mode::Fixed(5),
            &Guard::default(),
            &c,
            &mut StdRng::seed_from_u64(7),
        );
        assert_eq!(a, b);
        let other = select(
            Mode::Fixed(5),
            &Guard::default(),
            &c,
            &mut StdRng::seed_from_u64(8),
        );
        assert_ne!(a.chosen, other.chosen);
    }

    fn mode_strategy() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::One),
            Just(Mode::All),
            (1u32..40).prop_map(Mode::Fixed),
            (0.5f64..=100.0).prop_map(Mode::FixedPercent),
            (0.5f64..=100.0).prop_map(Mode::RandomMaxPercent),
        ]
    }

    proptest! {
        /// fixed-percent takes exactly floor(n * P / 100), at least one, when nothing else
        /// (leases, guards) is in the way.
        #[test]
        fn fixed_percent_takes_the_documented_count(n in 0usize..300, p in 0.5f64..=100.0, seed: u64) {
            let c = fleet(&vec![true; n]);
            let s = select(Mode::FixedPercent(p), &Guard::default(), &c, &mut StdRng::seed_from_u64(seed));
            let expected = if n == 0 { 0 } else { ((n as f64 * p / 100.0) + 1e-9).floor().max(1.0) as usize };
            prop_assert_eq!(s.chosen.len(), expected);
            prop_assert_eq!(s.chosen.len() + s.excluded.len(), n);
        }

        /// random-max-percent never takes more than P percent of the matched resources.
        #[test]
        fn random_max_percent_never_exceeds_its_bound(n in 0usize..300, p in 0.5f64..=100.0, seed: u64) {
            let c = fleet(&vec![true; n]);
            let s = select(Mode::RandomMaxPercent(p), &Guard::default(), &c, &mut StdRng::seed_from_u64(seed));
            prop_assert!((s.chosen.len() as f64) <= n as f64 * p / 100.0 + 1e-9,
                "{} of {} at {}%", s.chosen.len(), n, p);
            if (n as f64 * p / 100.0) >= 1.0 {
                prop_assert!(!s.chosen.is_empty());
            }
        }

        /// Whatever the mode, health and leases, the chosen healthy resources leave at least
        /// min-available healthy ones, and every matched resource is either chosen or left
        /// out with a reason, once.
        #[test]
        fn the_guard_is_never_violated(
            mode in mode_strategy(),
            health in proptest::collection::vec(any::<bool>(), 0..60),
            leased in proptest::collection::vec(any::<bool>(), 0..60),
            min in 0u32..70,
            seed: u64,
        ) {
            let mut c = fleet(&health);
            for (cand, l) in c.iter_mut().zip(&leased) {
                if *l { cand.leased_by = Some("other".into()); }
            }
            let guard = Guard { min_available: Some(MinAvailable::Count(min)) };
            let s = select(mode, &guard, &c, &mut StdRng::seed_from_u64(seed));
            let healthy = c.iter().filter(|x| x.healthy).count();
            let faulted_healthy = s.chosen.iter().filter(|&&i| c[i].healthy).count();
            if faulted_healthy > 0 {
                prop_assert!(healthy - faulted_healthy >= min as usize);
            }
            let mut seen: Vec<usize> = s.chosen.iter().copied().chain(s.excluded.iter().map(|e| e.0)).collect();
            seen.sort();
            prop_assert_eq!(seen, (0..c.len()).collect::<Vec<_>>());
            prop_assert!(s.chosen.iter().all(|&i| c[i].leased_by.is_none()));
            prop_assert!(s.chosen.len() <= mode_count(mode, c.len()));
        }
    }
}
