//! What happens to each packet, decided as netem decides it: correlated random draws for
//! loss, duplication, corruption, jitter and reordering.

use std::time::Duration;

use ire_core::{NetworkFault, Probability};

/// A uniform random draw in [0, 1) that leans on the previous draw by `rho` (netem's
/// `get_crandom`: `(1 - rho) * fresh + rho * last`).
#[derive(Debug, Clone)]
struct Correlated {
    rho: f64,
    last: f64,
}

impl Correlated {
    fn new(correlation_percent: f64) -> Self {
        Correlated {
            rho: (correlation_percent / 100.0).clamp(0.0, 1.0),
            last: 0.5,
        }
    }

    fn next(&mut self, rng: &mut fastrand::Rng) -> f64 {
        let fresh = rng.f64();
        if self.rho == 0.0 {
            return fresh;
        }
        self.last = (1.0 - self.rho) * fresh + self.rho * self.last;
        self.last
    }
}

/// A chance per packet.
#[derive(Debug, Clone)]
struct Chance {
    p: f64,
    draw: Correlated,
}

impl Chance {
    fn new(p: &Probability) -> Self {
        Chance {
            p: p.percent / 100.0,
            draw: Correlated::new(p.correlation),
        }
    }

    fn happens(&mut self, rng: &mut fastrand::Rng) -> bool {
        self.draw.next(rng) < self.p
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// How many copies leave: 0 (dropped), 1, or 2 (duplicated).
    pub copies: u8,
    /// Flip one bit of it.
    pub corrupt: bool,
    /// How long to hold it.
    pub delay: Duration,
    /// It skipped the delay to overtake packets sent before it.
    pub reordered: bool,
}

/// The per-packet model of a fault's impairments.
#[derive(Debug, Clone)]
pub struct Model {
    rng: fastrand::Rng,
    latency: Duration,
    jitter: Duration,
    jitter_draw: Correlated,
    loss: Option<Chance>,
    corrupt: Option<Chance>,
    duplicate: Option<Chance>,
    reorder: Option<(Chance, u32)>,
    /// Packets delayed since the last reordered one (netem's `counter`).
    counter: u32,
}

impl Model {
    /// The model of `fault`'s impairments, with a random seed.
    pub fn new(fault: &NetworkFault) -> Self {
        Self::with_seed(fault, fastrand::u64(..))
    }

    /// The model with a given seed (tests).
    pub fn with_seed(fault: &NetworkFault, seed: u64) -> Self {
        let (latency, jitter, corr) = fault
            .delay
            .as_ref()
            .map(|d| (d.latency, d.jitter, d.correlation))
            .unwrap_or_default();
        Model {
            rng: fastrand::Rng::with_seed(seed),
            latency,
            jitter,
            jitter_draw: Correlated::new(corr),
            loss: fault.loss.as_ref().map(Chance::new),
            corrupt: fault.corrupt.as_ref().map(Chance::new),
            duplicate: fault.duplicate.as_ref().map(Chance::new),
            reorder: fault.reorder.as_ref().map(|r| {
                (
                    Chance::new(&Probability {
                        percent: r.percent,
                        correlation: r.correlation,
                    }),
                    r.gap.max(1),
                )
            }),
            counter: 0,
        }
    }

    /// Decides the fate of the next packet.
    pub fn decide(&mut self) -> Decision {
        let rng = &mut self.rng;
        let mut copies = 1u8;
        if self.duplicate.as_mut().is_some_and(|c| c.happens(rng)) {
            copies += 1;
        }
        if self.loss.as_mut().is_some_and(|c| c.happens(rng)) {
            copies -= 1;
        }
        if copies == 0 {
            return Decision {
                copies,
                corrupt: false,
                delay: Duration::ZERO,
                reordered: false,
            };
        }
        let corrupt = self.corrupt.as_mut().is_some_and(|c| c.happens(rng));
        // netem: a packet is sent at once (reordered) when reordering is on, at least
        // `gap - 1` packets were delayed since the last one, and the draw says so.
        let reordered = match &mut self.reorder {
            Some((chance, gap)) => self.counter + 1 >= *gap && chance.happens(rng),
            None => false,
        };
        if reordered {
            self.counter = 0;
        } else {
            self.counter = self.counter.saturating_add(1);
        }
        let delay = if reordered || (self.latency.is_zero() && self.jitter.is_zero()) {
            Duration::ZERO
        } else if self.jitter.is_zero() {
            self.latency
        } else {
            // Uniform in latency ± jitter, netem's distribution without a table.
            let u = self.jitter_draw.next(rng) * 2.0 - 1.0;
            let d = self.latency.as_secs_f64() + self.jitter.as_secs_f64() * u;
            Duration::from_secs_f64(d.max(0.0))
        };
        Decision {
            copies,
            corrupt,
            delay,
            reordered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::{Delay, Reorder};

    fn p(percent: f64) -> Option<Probability> {
        Some(Probability {
            percent,
            correlation: 0.0,
        })
    }

    fn share(n: usize, mut f: impl FnMut() -> bool) -> f64 {
        (0..n).filter(|_| f()).count() as f64 / n as f64
    }

    #[test]
    fn probabilities_hold_over_many_packets() {
        let mut m = Model::with_seed(
            &NetworkFault {
                loss: p(30.0),
                corrupt: p(10.0),
                ..Default::default()
            },
            7,
        );
        let lost = share(100_000, || m.decide().copies == 0);
        assert!((lost - 0.30).abs() < 0.01, "{lost}");
        let mut m = Model::with_seed(
            &NetworkFault {
                duplicate: p(20.0),
                corrupt: p(10.0),
                ..Default::default()
            },
            7,
        );
        let mut corrupt = 0;
        let dup = share(100_000, || {
            let d = m.decide();
            corrupt += usize::from(d.corrupt);
            d.copies == 2
        });
        assert!((dup - 0.20).abs() < 0.01, "{dup}");
        assert!(
            (corrupt as f64 / 100_000.0 - 0.10).abs() < 0.01,
            "{corrupt}"
        );
    }

    #[test]
    fn jitter_spreads_delays_around_the_latency_and_correlation_smooths_them() {
        let fault = |corr| NetworkFault {
            delay: Some(Delay {
                latency: Duration::from_millis(100),
                jitter: Duration::from_millis(20),
                correlation: corr,
            }),
            ..Default::default()
        };
        let delays = |corr| {
            let mut m = Model::with_seed(&fault(corr), 3);
            (0..20_000)
                .map(|_| m.decide().delay.as_secs_f64() * 1e3)
                .collect::<Vec<f64>>()
        };
        let d = delays(0.0);
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!((mean - 100.0).abs() < 0.5, "{mean}");
        assert!(d.iter().all(|x| (80.0..=120.0).contains(x)));
        let step =
            |d: &[f64]| d.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / d.len() as f64;
        assert!(step(&delays(75.0)) < step(&d) / 2.0);
    }

    #[test]
    fn reordered_packets_skip_the_delay_every_gap_at_most() {
        let mut m = Model::with_seed(
            &NetworkFault {
                delay: Some(Delay {
                    latency: Duration::from_millis(10),
                    jitter: Duration::ZERO,
                    correlation: 0.0,
                }),
                reorder: Some(Reorder {
                    percent: 100.0,
                    correlation: 0.0,
                    gap: 4,
                }),
                ..Default::default()
            },
            1,
        );
        let at_once: Vec<bool> = (0..12).map(|_| m.decide().delay.is_zero()).collect();
        let expect: Vec<bool> = (0..12).map(|i| i % 4 == 3).collect();
        assert_eq!(at_once, expect);
    }
}
