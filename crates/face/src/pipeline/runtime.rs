//! Inference off the async executor, on a bounded number of blocking threads.
//!
//! Two semaphores: `admission` (workers + queue permits) decides at once whether a call may
//! wait at all, `workers` bounds how many run. A call that cannot be admitted fails with
//! `Overloaded` instead of joining an unbounded queue (the server answers 503 `overloaded`
//! with a Retry-After).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::FaceError;
use crate::pipeline::engine::FaceEngine;

pub struct FaceRuntime {
    engine: Arc<FaceEngine>,
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    counters: Arc<Counters>,
    worker_count: usize,
    queue_len: usize,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    queued: AtomicUsize,
}

/// Decrements a counter when dropped, so cancelled callers and panics keep the counts right.
struct CountGuard<'a>(&'a AtomicUsize);

impl<'a> CountGuard<'a> {
    fn enter(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        CountGuard(c)
    }
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FaceRuntime {
    /// `workers` concurrent inferences (at least 1), `queue` more callers may wait.
    pub fn new(engine: Arc<FaceEngine>, workers: usize, queue: usize) -> FaceRuntime {
        let workers = workers.max(1);
        FaceRuntime {
            engine,
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Arc::new(Semaphore::new(workers)),
            counters: Arc::default(),
            worker_count: workers,
            queue_len: queue,
        }
    }

    pub fn engine(&self) -> &Arc<FaceEngine> {
        &self.engine
    }

    /// Calls running on a blocking thread now.
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// Calls admitted and waiting for a worker.
    pub fn queued(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    pub fn workers(&self) -> usize {
        self.worker_count
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue_len
    }

    /// Runs `f` on a blocking thread inside the caller's tracing span.
    pub async fn run<T, F>(&self, f: F) -> Result<T, FaceError>
    where
        T: Send + 'static,
        F: FnOnce(&FaceEngine) -> Result<T, FaceError> + Send + 'static,
    {
        let admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| FaceError::Overloaded)?;

        let worker = {
            let _queued = CountGuard::enter(&self.counters.queued);
            self.workers
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| FaceError::Internal("face runtime closed".into()))?
        };

        let engine = self.engine.clone();
        let counters = self.counters.clone();
        let span = tracing::Span::current();
        // The permits move into the blocking task: if the caller stops waiting, the work still
        // counts against the limits until it really ends.
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, worker);
            let _running = CountGuard::enter(&counters.in_flight);
            span.in_scope(|| f(&engine))
        });
        task.await.map_err(|e| {
            if e.is_panic() {
                tracing::error!("face worker panicked");
                FaceError::Internal("face worker panicked".into())
            } else {
                FaceError::Internal("face worker cancelled".into())
            }
        })?
    }
}
