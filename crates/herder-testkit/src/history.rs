//! A record of what a consistency test did (writes, reads, fault windows), and the check of
//! herder's invalidation contract against it.
//!
//! The model: a versioned "database" (see [`Database`](crate::Database)) whose rows carry a
//! version, bumped by every write; a writer bumps a row, then invalidates the key through one
//! instance and records when `invalidate` returned. A read records the instance, when it started
//! and ended, and the version it got (a value carries the version the loader read from the
//! database when its load started). The contract, per key:
//!
//! 1. **Read your invalidations.** On the invalidating instance, a read that starts after
//!    `invalidate` returned gets at least the version written before it.
//! 2. **Bounded propagation.** On any other instance, a read that starts more than
//!    `propagation` after `invalidate` returned gets at least that version, while the tier is
//!    healthy.
//! 3. **Recovery.** The tier is unhealthy from a fault window's start until `recovery` after its
//!    end (connections and subscriptions come back, the breaker closes). An invalidation whose
//!    `propagation` bound meets such a time must be visible everywhere by the time it ends; the
//!    deadline moves on to the end of every unhealthy time it meets in turn.
//!
//! ```
//! use herder_testkit::{Bounds, History};
//! use std::time::{Duration, Instant};
//!
//! let history = History::new();
//! let t0 = Instant::now();
//! history.write(1, 2, 0, t0);
//! history.read(0, 1, t0 + Duration::from_millis(1), t0 + Duration::from_millis(2), 1);
//! let report = history.check(Bounds::new(Duration::from_millis(10), Duration::from_secs(1)));
//! assert_eq!(report.violations.len(), 1, "instance 0 read version 1 after invalidating 2");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One write: `key` now holds `version`, and `invalidate` on `instance` returned at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: u64,
    /// The version the write bumped the row to.
    pub version: u64,
    /// The instance `invalidate` was called on.
    pub instance: usize,
    /// When `invalidate` returned.
    pub at: Instant,
}

/// One read that returned a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    /// The instance read.
    pub instance: usize,
    /// The key.
    pub key: u64,
    /// When the read was called.
    pub start: Instant,
    /// When it returned.
    pub end: Instant,
    /// The version of the value it returned.
    pub version: u64,
}

/// A time when the shared tier was not healthy (stalled, slow, down, partitioned...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// What the fault was, for the report.
    pub kind: String,
    /// When it began.
    pub start: Instant,
    /// When it ended (the tier answered again).
    pub end: Instant,
}

/// How long the contract gives an invalidation to reach the other instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// While the tier is healthy.
    pub propagation: Duration,
    /// After a fault window ends.
    pub recovery: Duration,
}

impl Bounds {
    /// `propagation` while healthy, `recovery` after a fault ends.
    pub fn new(propagation: Duration, recovery: Duration) -> Self {
        Bounds {
            propagation,
            recovery,
        }
    }
}

/// Which rule of the contract a read broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// On the invalidating instance.
    ReadYourInvalidations,
    /// On another instance, past the propagation bound.
    Propagation,
    /// After a fault window, past the recovery bound.
    Recovery,
}

/// A read that broke the contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The read.
    pub read: Read,
    /// The rule it broke.
    pub rule: Rule,
    /// The version the rule required.
    pub required: u64,
    /// The write that required it.
    pub write: Write,
    /// How long after that write's `invalidate` returned the read started.
    pub after: Duration,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: instance {} read key {} at version {} ({:?} after instance {} invalidated version {}; the read took {:?})",
            self.rule,
            self.read.instance,
            self.read.key,
            self.read.version,
            self.after,
            self.write.instance,
            self.required,
            self.read.end - self.read.start,
        )
    }
}

/// What [`History::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Reads checked.
    pub reads: usize,
    /// Reads that failed (errors, panics, timeouts, cancels): not checked.
    pub failed_reads: u64,
    /// Writes (invalidations) recorded.
    pub invalidations: usize,
    /// Fault windows recorded.
    pub faults: usize,
    /// Reads that broke the contract (at most 100 kept; see `violation_count`).
    pub violations: Vec<Violation>,
    /// Every violation found.
    pub violation_count: usize,
    /// The longest a read on another instance still got an older version than one whose
    /// invalidation had returned, measured from that return, over invalidations made while the
    /// tier was healthy (their propagation bound met no fault).
    pub worst_healthy_staleness: Duration,
    /// The same over every read, faults included.
    pub worst_staleness: Duration,
}

impl Report {
    /// `true` when no read broke the contract.
    pub fn is_ok(&self) -> bool {
        self.violation_count == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reads {} (+{} failed), invalidations {}, fault windows {}, violations {}, worst staleness {:?} healthy / {:?} overall",
            self.reads,
            self.failed_reads,
            self.invalidations,
            self.faults,
            self.violation_count,
            self.worst_healthy_staleness,
            self.worst_staleness,
        )?;
        for violation in self.violations.iter().take(10) {
            writeln!(f, "  {violation}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Records {
    writes: Vec<Write>,
    reads: Vec<Read>,
    faults: Vec<FaultWindow>,
    failed_reads: u64,
}

/// The record of a consistency test; cheap to share behind an `Arc`, safe to write from many
/// threads.
#[derive(Debug, Default)]
pub struct History {
    records: Mutex<Records>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Records that `invalidate(key)` on `instance`, made after the row was bumped to `version`,
    /// returned at `at`. A key's writes must be recorded in the order of their versions (hold
    /// the row's lock, [`Database::lock`](crate::Database::lock), while writing and recording).
    pub fn write(&self, key: u64, version: u64, instance: usize, at: Instant) {
        self.records.lock().unwrap().writes.push(Write {
            key,
            version,
            instance,
            at,
        });
    }

    /// Records a read of `key` on `instance`, called at `start`, that returned a value of
    /// `version` at `end`.
    pub fn read(&self, instance: usize, key: u64, start: Instant, end: Instant, version: u64) {
        self.records.lock().unwrap().reads.push(Read {
            instance,
            key,
            start,
            end,
            version,
        });
    }

    /// Counts a read that failed or was cancelled (not checked).
    pub fn failed_read(&self) {
        self.records.lock().unwrap().failed_reads += 1;
    }

    /// Records a time when the tier was not healthy.
    pub fn fault(&self, kind: impl Into<String>, start: Instant, end: Instant) {
        self.records.lock().unwrap().faults.push(FaultWindow {
            kind: kind.into(),
            start,
            end,
        });
    }

    /// Reads recorded so far.
    pub fn reads(&self) -> usize {
        self.records.lock().unwrap().reads.len()
    }

    /// Checks every recorded read against the contract.
    pub fn check(&self, bounds: Bounds) -> Report {
        let records = self.records.lock().unwrap();
        let mut faults: Vec<&FaultWindow> = records.faults.iter().collect();
        faults.sort_by_key(|f| f.start);
        // Each write with the time by which every instance must see it, and whether that time
        // was moved by a fault.
        let mut by_key: HashMap<u64, Vec<(Write, Instant, bool)>> = HashMap::new();
        for write in &records.writes {
            let mut deadline = write.at + bounds.propagation;
            let mut moved = false;
            for fault in &faults {
                let unhealthy_until = fault.end + bounds.recovery;
                if fault.start <= deadline
                    && write.at <= unhealthy_until
                    && unhealthy_until > deadline
                {
                    deadline = unhealthy_until;
                    moved = true;
                }
            }
            by_key
                .entry(write.key)
                .or_default()
                .push((*write, deadline, moved));
        }
        for writes in by_key.values_mut() {
            writes.sort_by_key(|(w, _, _)| w.at);
        }
        let mut report = Report {
            reads: records.reads.len(),
            failed_reads: records.failed_reads,
            invalidations: records.writes.len(),
            faults: faults.len(),
            ..Report::default()
        };
        for read in &records.reads {
            let Some(writes) = by_key.get(&read.key) else {
                continue;
            };
            // Writes whose invalidation returned before the read started.
            let before = writes.partition_point(|(w, _, _)| w.at < read.start);
            let mut worst: Option<Violation> = None;
            let mut stalest: Option<(&Write, bool)> = None;
            // Versions rise with each key's writes (a row's writes are serialized), so the
            // writes of a newer version than the read got are the last ones.
            let newer = writes[..before].partition_point(|(w, _, _)| w.version <= read.version);
            for (write, deadline, moved) in &writes[newer..before] {
                let after = read.start - write.at;
                if write.instance != read.instance && stalest.is_none_or(|(s, _)| write.at < s.at) {
                    stalest = Some((write, *moved));
                }
                let rule = if write.instance == read.instance {
                    Some(Rule::ReadYourInvalidations)
                } else if read.start > *deadline {
                    Some(if *moved {
                        Rule::Recovery
                    } else {
                        Rule::Propagation
                    })
                } else {
                    None
                };
                if let Some(rule) = rule
                    && worst.as_ref().is_none_or(|w| write.version > w.required)
                {
                    worst = Some(Violation {
                        read: *read,
                        rule,
                        required: write.version,
                        write: *write,
                        after,
                    });
                }
            }
            if let Some((write, moved)) = stalest {
                let staleness = read.start - write.at;
                report.worst_staleness = report.worst_staleness.max(staleness);
                if !moved {
                    report.worst_healthy_staleness = report.worst_healthy_staleness.max(staleness);
                }
            }
            if let Some(violation) = worst {
                report.violation_count += 1;
                if report.violations.len() < 100 {
                    report.violations.push(violation);
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bounds() -> Bounds {
        Bounds::new(10 * MS, 100 * MS)
    }

    #[test]
    fn the_invalidating_instance_must_read_its_invalidation_at_once() {
        let t = Instant::now();
        let history = History::new();
        history.write(7, 3, 1, t);
        history.read(1, 7, t - MS, t + MS, 2); // started before: fine
        history.read(1, 7, t + MS, t + 2 * MS, 3); // fine
        history.read(1, 7, t + MS, t + 2 * MS, 2); // broken
        let report = history.check(bounds());
        assert_eq!(report.violation_count, 1, "{report}");
        let v = &report.violations[0];
        assert_eq!(
            (v.rule, v.required, v.read.version),
            (Rule::ReadYourInvalidations, 3, 2)
        );
    }

    #[test]
    fn other_instances_get_the_propagation_bound() {
        let t = Instant::now();
        let history = History::new();
        history.write(7, 3, 1, t);
        history.read(2, 7, t + 5 * MS, t + 6 * MS, 2); // within the bound
        history.read(2, 7, t + 20 * MS, t + 21 * MS, 2); // past it
        let report = history.check(bounds());
        assert_eq!(report.violation_count, 1, "{report}");
        assert_eq!(report.violations[0].rule, Rule::Propagation);
        assert_eq!(report.worst_healthy_staleness, 20 * MS);
    }

    #[test]
    fn a_fault_suspends_propagation_until_the_recovery_bound() {
        let t = Instant::now();
        let history = History::new();
        history.fault("stall", t - MS, t + 50 * MS);
        history.write(7, 3, 1, t);
        history.read(2, 7, t + 40 * MS, t + 41 * MS, 2); // in the fault
        history.read(2, 7, t + 120 * MS, t + 121 * MS, 2); // within recovery
        history.read(2, 7, t + 160 * MS, t + 161 * MS, 2); // past recovery
        // A write just after the fault, while the tier is still recovering.
        history.write(8, 1, 1, t + 60 * MS);
        history.read(2, 8, t + 100 * MS, t + 101 * MS, 0); // past propagation, within recovery
        let report = history.check(bounds());
        assert_eq!(report.violation_count, 1, "{report}");
        assert_eq!(report.violations[0].rule, Rule::Recovery);
        assert_eq!(report.violations[0].read.key, 7);
        assert_eq!(report.worst_staleness, 160 * MS);
        assert_eq!(report.worst_healthy_staleness, Duration::ZERO);
    }

    #[test]
    fn older_writes_and_other_keys_do_not_count() {
        let t = Instant::now();
        let history = History::new();
        history.write(7, 2, 2, t);
        history.write(7, 3, 1, t + MS);
        history.write(8, 9, 1, t); // another key
        history.read(2, 7, t + 50 * MS, t + 51 * MS, 3);
        history.read(1, 7, t + 50 * MS, t + 51 * MS, 4);
        history.failed_read();
        let report = history.check(bounds());
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            (report.reads, report.failed_reads, report.invalidations),
            (2, 1, 3)
        );
    }
}
