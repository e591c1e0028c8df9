//! Running the maintainer scripts of many packages on all cores with the result of running
//! them one by one.
//!
//! Jobs come in a total order that respects the dependencies (the order dpkg could have used).
//! A job starts only when (a) every job it depends on has finished, (b) every earlier job that
//! claims one of its resources (a piece of shared state such as the debconf database or
//! /etc/passwd) has finished, unless both only read it, and (c) for a job that sees everything before it (one that reads
//! the dpkg database), every earlier job has finished, and (d) no job runs beside one that
//! must run alone (one that changes what every job uses, such as dash's postinst replacing
//! /bin/sh): that job waits for every earlier job and every running one, and no other job
//! starts until it has finished. Jobs that share no resource touch
//! disjoint state, so they commute, and every interleaving gives the state the total order
//! gives: the layer stays bit-for-bit reproducible whatever the timing. Hand-written because
//! this is a dozen lines of policy on top of a mutex and a condition variable; no job-graph
//! crate states (c) or the "lowest index first" rule that keeps failures deterministic.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, PoisonError};

/// One unit of work and what it must wait for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    /// Indices of earlier jobs that must finish first (later indices are ignored: a dependency
    /// cycle is broken by the order, as dpkg breaks it).
    pub after: Vec<usize>,
    /// Shared state the job touches; jobs sharing a resource run in index order.
    pub resources: BTreeSet<&'static str>,
    /// The part of `resources` the job only reads: jobs that only read a resource may run
    /// at once, since neither changes what the other sees.
    pub reads: BTreeSet<&'static str>,
    /// The job starts only after every job before it has finished.
    pub sees_all_earlier: bool,
    /// Nothing else runs while this job runs, and no later job starts before it finished.
    pub runs_alone: bool,
}

struct State<E> {
    started: Vec<bool>,
    done: Vec<bool>,
    running: usize,
    /// A job that must run alone is running.
    alone: bool,
    failure: Option<(usize, E)>,
    /// A job panicked: every worker stops, and the panic continues in the caller.
    panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<E> State<E> {
    /// The lowest-numbered job that may start now, if any.
    fn next_ready(&self, jobs: &[Job]) -> Option<usize> {
        if self.alone {
            return None;
        }
        (0..jobs.len()).find(|&i| {
            let job = &jobs[i];
            let sees_all = job.sees_all_earlier || job.runs_alone;
            !self.started[i]
                && (!job.runs_alone || self.running == 0)
                && job.after.iter().all(|&d| d >= i || self.done[d])
                && (0..i).all(|j| {
                    self.done[j] || (!sees_all && !jobs[j].runs_alone && !conflict(&jobs[j], job))
                })
        })
    }
}

/// Whether two jobs share a resource that at least one of them changes.
fn conflict(a: &Job, b: &Job) -> bool {
    a.resources
        .intersection(&b.resources)
        .any(|r| !(a.reads.contains(r) && b.reads.contains(r)))
}

/// Runs every job with up to `workers` at once; returns the error of the lowest-numbered job
/// that failed (no job starts after a failure; those running are waited for).
pub fn run_jobs<E: Send>(
    jobs: &[Job],
    workers: usize,
    run: impl Fn(usize) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let state = Mutex::new(State {
        started: vec![false; jobs.len()],
        done: vec![false; jobs.len()],
        running: 0,
        alone: false,
        failure: None,
        panic: None,
    });
    let changed = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if s.failure.is_some() || s.panic.is_some() || s.started.iter().all(|&b| b) {
                        break;
                    }
                    let Some(i) = s.next_ready(jobs) else {
                        s = changed.wait(s).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    };
                    s.started[i] = true;
                    s.running += 1;
                    s.alone = jobs[i].runs_alone;
                    drop(s);
                    // A panicking job must not leave the other workers waiting for it forever.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(i)));
                    s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.done[i] = true;
                    s.running -= 1;
                    if jobs[i].runs_alone {
                        s.alone = false;
                    }
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            if s.failure.as_ref().is_none_or(|(f, _)| i < *f) {
                                s.failure = Some((i, e));
                            }
                        }
                        Err(p) => {
                            s.panic.get_or_insert(p);
                        }
                    }
                    changed.notify_all();
                }
                changed.notify_all();
            });
        }
    });
    let state = state.into_inner().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = state.panic {
        std::panic::resume_unwind(p);
    }
    match state.failure {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn job(after: &[usize], resources: &[&'static str], sees_all_earlier: bool) -> Job {
        Job {
            after: after.to_vec(),
            resources: resources.iter().copied().collect(),
            reads: BTreeSet::new(),
            sees_all_earlier,
            runs_alone: false,
        }
    }

    /// Jobs that only read a resource run together; one that changes it waits for the
    /// readers before it, and the readers after it wait for it.
    #[test]
    fn readers_of_a_resource_overlap_and_a_writer_keeps_its_place() {
        let reader = |after: &[usize]| Job {
            reads: ["accounts"].into_iter().collect(),
            ..job(after, &["accounts"], false)
        };
        let jobs = vec![
            reader(&[]),
            reader(&[]),
            job(&[], &["accounts"], false),
            reader(&[]),
        ];
        // Slow readers, so the two first are surely running at once.
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let finished = Mutex::new(Vec::new());
        let seen = Mutex::new(vec![Vec::new(); jobs.len()]);
        run_jobs::<()>(&jobs, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            seen.lock().unwrap()[i] = finished.lock().unwrap().clone();
            std::thread::sleep(Duration::from_millis(60));
            finished.lock().unwrap().push(i);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let seen = seen.into_inner().unwrap();
        assert!(peak.into_inner() >= 2, "the two readers overlapped");
        assert!(
            seen[2].contains(&0) && seen[2].contains(&1),
            "the writer after both readers"
        );
        assert!(seen[3].contains(&2), "the last reader after the writer");
        assert!(!conflict(&jobs[0], &jobs[1]) && conflict(&jobs[0], &jobs[2]));
    }

    /// Records, for every job, which jobs had finished when it started and how many ran with
    /// it, so the tests can state the ordering rules directly.
    fn trace(jobs: &[Job], workers: usize) -> (Vec<Vec<usize>>, usize) {
        let finished = Mutex::new(Vec::new());
        let seen = Mutex::new(vec![Vec::new(); jobs.len()]);
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        run_jobs::<()>(jobs, workers, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            seen.lock().unwrap()[i] = finished.lock().unwrap().clone();
            std::thread::sleep(Duration::from_millis(5 + (i as u64 * 7) % 11));
            finished.lock().unwrap().push(i);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        (seen.into_inner().unwrap(), peak.into_inner())
    }

    #[test]
    fn dependencies_and_shared_resources_finish_first_independent_jobs_overlap() {
        let jobs = vec![
            job(&[], &["debconf"], false),
            job(&[], &[], false),
            job(&[0], &[], false),
            job(&[], &["debconf", "accounts"], false),
            job(&[], &["accounts"], false),
            job(&[], &[], false),
        ];
        let (seen, peak) = trace(&jobs, 3);
        assert!(seen[2].contains(&0), "dependency 0 before 2");
        assert!(seen[3].contains(&0), "debconf: 0 before 3");
        assert!(seen[4].contains(&3), "accounts: 3 before 4");
        assert!(peak >= 2, "independent jobs ran together (peak {peak})");
    }

    #[test]
    fn a_job_that_sees_all_earlier_ones_waits_for_them_and_later_independent_jobs_overlap_it() {
        let jobs = vec![
            job(&[], &[], false),
            job(&[], &[], false),
            job(&[], &["r"], true),
            job(&[], &[], false),
            job(&[], &["r"], false),
        ];
        let (seen, _) = trace(&jobs, 3);
        assert!(
            seen[2].contains(&0) && seen[2].contains(&1),
            "job 2 started before all earlier jobs finished: {:?}",
            seen[2]
        );
        assert!(seen[4].contains(&2), "4 shares r with 2");
        // Job 3 is independent and later: it never waits for job 2.
        assert!(
            !seen[3].contains(&2),
            "job 3 waited for job 2: {:?}",
            seen[3]
        );
    }

    #[test]
    fn a_job_that_runs_alone_has_nothing_beside_it_and_later_jobs_wait_for_it() {
        let mut jobs = vec![job(&[], &[], false); 7];
        jobs[3].runs_alone = true;
        jobs[3].after = vec![0];
        let running = AtomicUsize::new(0);
        let beside_alone = AtomicUsize::new(0);
        let finished = Mutex::new(Vec::new());
        let seen = Mutex::new(vec![Vec::new(); jobs.len()]);
        run_jobs::<()>(&jobs, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            seen.lock().unwrap()[i] = finished.lock().unwrap().clone();
            std::thread::sleep(Duration::from_millis(if i == 0 { 30 } else { 8 }));
            if i == 3 {
                beside_alone.fetch_max(now.max(running.load(Ordering::SeqCst)), Ordering::SeqCst);
            }
            finished.lock().unwrap().push(i);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(beside_alone.into_inner(), 1, "another job ran beside job 3");
        assert_eq!(seen[3].len(), 3, "job 3 waited for 0, 1, 2: {:?}", seen[3]);
        for (later, before) in seen.iter().enumerate().skip(4) {
            assert!(
                before.contains(&3),
                "job {later} started before job 3 ended"
            );
        }
    }

    #[test]
    fn a_panicking_job_stops_the_others_and_the_panic_reaches_the_caller() {
        let jobs = vec![job(&[], &[], false); 8];
        let result = std::panic::catch_unwind(|| {
            run_jobs::<()>(&jobs, 3, |i| {
                if i == 1 {
                    panic!("job 1 broke");
                }
                std::thread::sleep(Duration::from_millis(5));
                Ok(())
            })
        });
        assert!(result.is_err(), "the panic propagates instead of hanging");
    }

    #[test]
    fn one_worker_runs_in_index_order() {
        let jobs = vec![job(&[], &[], false); 5];
        let (seen, peak) = trace(&jobs, 1);
        assert_eq!(peak, 1);
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s, &(0..i).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_lowest_failing_job_is_reported_and_nothing_starts_after_a_failure() {
        let jobs = vec![job(&[], &["r"], false); 6];
        let started = Mutex::new(Vec::new());
        let result = run_jobs(&jobs, 2, |i| {
            started.lock().unwrap().push(i);
            if i == 2 || i == 4 {
                Err(i)
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err(2));
        assert!(!started.lock().unwrap().contains(&3));
    }

    #[test]
    fn a_backward_dependency_from_a_cycle_does_not_deadlock() {
        let jobs = vec![job(&[1], &[], false), job(&[0], &[], false)];
        let (seen, _) = trace(&jobs, 2);
        assert!(seen[1].contains(&0));
    }
}
