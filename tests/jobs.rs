//! The durable job queue on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL: retries
//! with backoff, dead jobs, leases and the reaper, several workers, graceful shutdown. Time is
//! a manual clock: tests move it instead of sleeping.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use common::spawn_app;
use muster::jobs::{Clock, Handler, JobFailure, ManualClock, Outcome, Worker, WorkerConfig};
use muster::store::{NewJob, Store};
use serde_json::json;

/// Jobs enqueued now are due at `Utc::now()`; the manual clock starts just after.
fn clock_after_enqueue() -> ManualClock {
    ManualClock::new(Utc::now() + Duration::seconds(1))
}

fn config() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::seconds(60),
        poll_interval: std::time::Duration::from_millis(20),
        backoff_base: Duration::seconds(10),
        backoff_max: Duration::seconds(120),
    }
}

fn worker(
    store: &Store,
    clock: &ManualClock,
    handlers: HashMap<String, Handler>,
    id: &str,
) -> Worker {
    Worker::new(
        store.clone(),
        Arc::new(clock.clone()),
        handlers,
        id,
        config(),
    )
}

fn job(kind: &str, n: i64) -> NewJob {
    NewJob::now(kind, json!({"n": n}), format!("{kind}:{n}"))
}

/// A handler that fails with `failure` the first `failures` times, then succeeds.
fn flaky(failures: usize, failure: JobFailure) -> (Handler, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handler: Handler = Arc::new(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let failure = failure.clone();
        Box::pin(async move { if n < failures { Err(failure) } else { Ok(()) } })
    });
    (handler, calls)
}

backend_tests! {
    async fn retries_back_off_and_give_up(db: TestDb) {
        let store = &db.store;
        let clock = clock_after_enqueue();
        let (flaky_handler, calls) = flaky(2, JobFailure::Retry("SMTP server busy".into()));
        let (broken, _) = flaky(usize::MAX, JobFailure::Retry("still down".into()));
        let (refused, _) = flaky(usize::MAX, JobFailure::Permanent("no such mailbox x@y.cn".into()));
        let handlers = HashMap::from([
            ("test.flaky".to_string(), flaky_handler),
            ("test.broken".to_string(), broken),
            ("test.refused".to_string(), refused),
        ]);
        let w = worker(store, &clock, handlers, "w1");
        store.enqueue(&[job("test.flaky", 1)]).await.unwrap();

        let first = w.run_once().await.unwrap().unwrap();
        assert!(matches!(first, Outcome::Retrying { ref error, .. } if error == "SMTP server busy"), "{first:?}");
        let row = &store.jobs(Some("test.flaky")).await.unwrap()[0];
        assert_eq!((row.status.as_str(), row.attempts), ("queued", 1));
        let wait = row.run_at - clock.now();
        assert!(wait >= Duration::seconds(10) && wait <= Duration::seconds(15), "first backoff {wait}");
        assert!(w.run_once().await.unwrap().is_none(), "not due before its backoff");

        clock.advance(Duration::seconds(16));
        assert!(matches!(w.run_once().await.unwrap(), Some(Outcome::Retrying { .. })));
        let wait = store.jobs(Some("test.flaky")).await.unwrap()[0].run_at - clock.now();
        assert!(wait >= Duration::seconds(20) && wait <= Duration::seconds(30), "second backoff doubles: {wait}");
        clock.advance(Duration::seconds(31));
        assert!(matches!(w.run_once().await.unwrap(), Some(Outcome::Done { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let row = &store.jobs(Some("test.flaky")).await.unwrap()[0];
        assert_eq!((row.status.as_str(), row.attempts, row.last_error.as_deref()), ("done", 3, None));

        // Always failing: dead after max_attempts (8), and it stays visible.
        store.enqueue(&[job("test.broken", 1)]).await.unwrap();
        let mut last = None;
        for _ in 0..20 {
            clock.advance(Duration::seconds(200));
            if let Some(outcome) = w.run_once().await.unwrap() {
                last = Some(outcome);
            }
        }
        assert!(matches!(last, Some(Outcome::Dead { ref error, .. }) if error.contains("gave up after 8 attempts")), "{last:?}");
        let row = &store.jobs(Some("test.broken")).await.unwrap()[0];
        assert_eq!((row.status.as_str(), row.attempts), ("dead", 8));

        // A permanent failure is dead at once; so is a job nobody handles.
        store.enqueue(&[job("test.refused", 1), job("test.unknown", 1)]).await.unwrap();
        let outcomes = w.run_until_idle().await.unwrap();
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Dead { .. })), "{outcomes:?}");
        let dead = store.jobs_by_status(Some("dead"), 10).await.unwrap();
        assert!(dead.iter().any(|j| j.last_error.as_deref() == Some("no such mailbox x@y.cn")));
        assert!(dead.iter().any(|j| j.last_error.as_deref().unwrap().contains("no handler for job kind \"test.unknown\"")));

        // Retried by an operator: queued again with fresh attempts.
        let retried = store.retry_job(row.id, clock.now()).await.unwrap();
        assert_eq!((retried.status.as_str(), retried.attempts), ("queued", 0));
        assert!(store.retry_job(retried.id, clock.now()).await.is_err(), "a queued job is not retried");
        let cancelled = store.cancel_job(retried.id, clock.now()).await.unwrap();
        assert_eq!(cancelled.status, "cancelled");
    }

    async fn an_abandoned_job_is_taken_over_after_its_lease(db: TestDb) {
        let store = &db.store;
        let clock = clock_after_enqueue();
        let (handler, calls) = flaky(0, JobFailure::Retry(String::new()));
        let handlers = HashMap::from([("test.work".to_string(), handler)]);
        store.enqueue(&[job("test.work", 1)]).await.unwrap();
        // Worker A claims the job and dies before finishing it.
        let now = clock.now();
        let claimed = store.claim_job("worker-a", now, now + Duration::seconds(60)).await.unwrap().unwrap();
        let b = worker(store, &clock, handlers, "worker-b");
        assert!(b.run_until_idle().await.unwrap().is_empty(), "the lease still holds");
        clock.advance(Duration::seconds(61));
        let outcomes = b.run_until_idle().await.unwrap();
        assert_eq!(outcomes, [Outcome::Done { id: claimed.id, kind: "test.work".into() }]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let row = store.job(claimed.id).await.unwrap();
        assert_eq!((row.status.as_str(), row.attempts), ("done", 2));
        // A's late report changes nothing.
        assert!(!store.complete_job(claimed.id, "worker-a", clock.now()).await.unwrap());
    }

    async fn several_workers_run_each_job_exactly_once(db: TestDb) {
        let jobs: Vec<NewJob> = (0..1000).map(|n| job("test.count", n)).collect();
        db.store.enqueue(&jobs).await.unwrap();
        db.store.enqueue(&jobs[..10]).await.unwrap(); // same dedupe keys: not enqueued twice
        assert_eq!(db.store.jobs(Some("test.count")).await.unwrap().len(), 1000);
        let runs: Arc<Mutex<HashMap<i64, Vec<String>>>> = Arc::default();
        let clock = clock_after_enqueue();
        let mut tasks = Vec::new();
        for w in 0..4 {
            // Each worker has its own pool, as separate muster processes would.
            let store = Store::connect(&db.url, 3).await.unwrap();
            let runs = Arc::clone(&runs);
            let name = format!("worker-{w}");
            let me = name.clone();
            let handler: Handler = Arc::new(move |payload| {
                let runs = Arc::clone(&runs);
                let me = me.clone();
                Box::pin(async move {
                    let n = payload["n"].as_i64().unwrap();
                    runs.lock().unwrap().entry(n).or_default().push(me);
                    tokio::task::yield_now().await;
                    Ok(())
                })
            });
            let worker = worker(&store, &clock, HashMap::from([("test.count".to_string(), handler)]), &name);
            tasks.push(tokio::spawn(async move { worker.run_until_idle().await.unwrap().len() }));
        }
        let mut per_worker = Vec::new();
        for task in tasks {
            per_worker.push(task.await.unwrap());
        }
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1000, "every job ran");
        let twice: Vec<_> = runs.iter().filter(|(_, by)| by.len() != 1).collect();
        assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
        assert_eq!(per_worker.iter().sum::<usize>(), 1000);
        let done = db.store.jobs(Some("test.count")).await.unwrap();
        assert!(done.iter().all(|j| j.status == "done" && j.attempts == 1));
        if db.backend == common::Backend::Postgres {
            assert!(per_worker.iter().filter(|n| **n > 0).count() >= 2, "workers shared the work: {per_worker:?}");
        }
    }

    async fn shutdown_lets_the_running_job_finish(db: TestDb) {
        let clock = clock_after_enqueue();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let handler: Handler = Arc::new(move |_| {
            let started_tx = Arc::clone(&started_tx);
            Box::pin(async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                Ok(())
            })
        });
        let w = worker(&db.store, &clock, HashMap::from([("test.slow".to_string(), handler)]), "w");
        db.store.enqueue(&[job("test.slow", 1)]).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(w.run(stopped));
        tokio::time::timeout(std::time::Duration::from_secs(20), started_rx)
            .await
            .expect("the worker picked up the job")
            .unwrap();
        stop.send(true).unwrap();
        running.await.unwrap();
        let row = &db.store.jobs(Some("test.slow")).await.unwrap()[0];
        assert_eq!(row.status, "done", "the job in hand was finished before the worker stopped");
    }

    async fn admins_see_and_retry_failures(db: TestDb) {
        common::seed(&db.store).await;
        db.store.enqueue(&[job("test.nobody", 1)]).await.unwrap();
        let clock = clock_after_enqueue();
        worker(&db.store, &clock, HashMap::new(), "w").run_until_idle().await.unwrap();
        let app = spawn_app(db).await;
        let admin = app.client_for("admin").await;
        let dead: serde_json::Value = admin.get(app.url("/api/v1/jobs")).send().await.unwrap().json().await.unwrap();
        assert_eq!(dead[0]["kind"], "test.nobody");
        assert_eq!(dead[0]["status"], "dead");
        let id = dead[0]["id"].as_i64().unwrap();
        let retried: serde_json::Value = admin.post(app.url(&format!("/api/v1/jobs/{id}/retry"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(retried["status"], "queued");
        let again = admin.post(app.url(&format!("/api/v1/jobs/{id}/retry"))).send().await.unwrap();
        assert_eq!(again.status(), 409);
        let bad = admin.get(app.url("/api/v1/jobs?status=broken")).send().await.unwrap();
        assert_eq!(bad.status(), 422);
        let bureau = app.client_for("tangshan").await;
        assert_eq!(bureau.get(app.url("/api/v1/jobs")).send().await.unwrap().status(), 403);
        app.stop().await;
    }
}
