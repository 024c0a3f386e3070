//! Measurement: wall-clock timing of repeated runs ([`Timing`], [`Reps`], [`time_it`]) and waiting
//! for an idle machine ([`wait_idle`]). The same protocol drives our cases and, through
//! [`Reps`] passed to the anchor script, the Python anchors of `--anchors`.

use std::time::Instant;

use serde::Serialize;

use super::BenchOptions;
use super::machine::LoadMeter;

/// Redo a case when other processes took more than this share of the CPUs while it ran.
pub const LOAD_THRESHOLD: f64 = 0.1;
/// Most redos per case.
pub const RETRIES: usize = 2;
/// Most seconds a run waits for an idle machine, in all.
pub const WAIT_BUDGET_S: f64 = 180.0;

/// Waits until other processes use less than [`LOAD_THRESHOLD`] of the CPUs over one second, at
/// most `max_s` seconds; returns the seconds waited.
pub fn wait_idle(max_s: f64) -> f64 {
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < max_s {
        let meter = LoadMeter::start();
        std::thread::sleep(std::time::Duration::from_secs(1));
        if meter.fraction().is_none_or(|l| l < LOAD_THRESHOLD) {
            break;
        }
    }
    start.elapsed().as_secs_f64()
}

/// Wall-clock times of repeated runs.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Seconds of each timed run (warm-up runs excluded).
    pub times: Vec<f64>,
}

impl Timing {
    /// Runs `f` `warmup` times untimed, then `repeats` times timed (at least once).
    pub fn measure<R>(warmup: usize, repeats: usize, mut f: impl FnMut() -> R) -> (Self, R) {
        for _ in 0..warmup {
            std::hint::black_box(f());
        }
        let mut times = Vec::with_capacity(repeats.max(1));
        let mut last = None;
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            let r = std::hint::black_box(f());
            times.push(start.elapsed().as_secs_f64());
            last = Some(r);
        }
        (Self { times }, last.expect("at least one run"))
    }

    /// The median (mean of the two middle values for an even count).
    pub fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            0.5 * (t[n / 2 - 1] + t[n / 2])
        }
    }

    /// The fastest run.
    pub fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// How many runs a measurement makes: `warmup` untimed runs (the last one probes the time of
/// one run), then `clamp(budget / probe, min, max)` timed runs (`min` when `budget` is 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Reps {
    /// Untimed runs first.
    pub warmup: usize,
    /// Fewest timed runs.
    pub min: usize,
    /// Most timed runs.
    pub max: usize,
    /// Seconds the timed runs aim to take in all (between `min` and `max` runs).
    #[serde(rename = "budget_s")]
    pub budget: f64,
}

impl Reps {
    /// The repeats for these options: one run with `--check`, 1 + 3 with `--quick`, else the
    /// anchor protocol (2 warm-ups, 7..25 runs within about 1.5 s).
    pub fn for_options(o: &BenchOptions) -> Self {
        if o.check {
            Reps {
                warmup: 0,
                min: 1,
                max: 1,
                budget: 0.0,
            }
        } else if o.quick {
            Reps {
                warmup: 1,
                min: 3,
                max: 3,
                budget: 0.0,
            }
        } else {
            Reps {
                warmup: 2,
                min: 7,
                max: 25,
                budget: 1.5,
            }
        }
    }

    /// How many timed runs follow a probe run of `probe` seconds.
    pub fn count(&self, probe: Option<f64>) -> usize {
        let n = match probe {
            Some(p) if self.budget > 0.0 => {
                ((self.budget / p.max(1e-9)) as usize).clamp(self.min, self.max)
            }
            _ => self.min,
        };
        n.max(1)
    }
}

/// Times `run(setup())`: only `run` is timed; what it returns is dropped outside the timing.
pub fn time_it<S, R>(
    reps: Reps,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(S) -> Result<R, String>,
) -> Result<Timing, String> {
    let mut once = || -> Result<f64, String> {
        let s = setup();
        let start = Instant::now();
        let r = std::hint::black_box(run(s)?);
        let secs = start.elapsed().as_secs_f64();
        drop(r);
        Ok(secs)
    };
    let mut probe = None;
    for _ in 0..reps.warmup {
        probe = Some(once()?);
    }
    let times = (0..reps.count(probe))
        .map(|_| once())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Timing { times })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_min() {
        let t = Timing {
            times: vec![3.0, 1.0, 2.0],
        };
        assert_eq!((t.median(), t.min()), (2.0, 1.0));
        let t = Timing {
            times: vec![4.0, 1.0, 2.0, 3.0],
        };
        assert_eq!(t.median(), 2.5);
    }

    #[test]
    fn repeat_counts_follow_the_budget() {
        let full = Reps::for_options(&BenchOptions::default());
        assert_eq!(full.count(Some(1.0)), full.min);
        assert_eq!(full.count(Some(1e-6)), full.max);
        assert_eq!(full.count(Some(0.1)), 15);
        assert_eq!(full.count(None), full.min);
        let quick = Reps::for_options(&BenchOptions {
            quick: true,
            ..BenchOptions::default()
        });
        assert_eq!(quick.count(Some(1e-6)), 3);
    }

    #[test]
    fn time_it_runs_warmups_and_counts() {
        let reps = Reps {
            warmup: 2,
            min: 4,
            max: 4,
            budget: 0.0,
        };
        let mut calls = 0;
        let t = time_it(
            reps,
            || (),
            |_| {
                calls += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!((calls, t.times.len()), (6, 4));
        let failing = time_it(reps, || (), |_| Err::<(), _>("boom".to_string()));
        assert_eq!(failing.unwrap_err(), "boom");
    }
}
