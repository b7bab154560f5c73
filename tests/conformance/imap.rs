//! `imap`, `imap_unordered` and `Executor::map`: order, completeness,
//! endless inputs, and how much input they read ahead.

macro_rules! imap_tests {
    ($pool:expr, $executor:expr) => {
        use std::sync::atomic::Ordering;

        use crate::common::Counted;
        use crate::common::tasks::*;

        /// Chunks a lazy map keeps in flight per worker (`engine::Imap`'s
        /// window is `4 * workers`, at least 2).
        const WINDOW_PER_WORKER: usize = 4;

        #[test]
        fn next_timeout_times_out_and_the_result_still_comes() {
            let pool = $pool;
            let gate = crate::common::Gate::new();
            let mut it = pool.imap(gated_item, vec![(gate.key(), 7u64)]);
            let early = it.next_timeout(std::time::Duration::from_millis(1));
            assert!(early.unwrap().unwrap_err().is_timeout());
            gate.open();
            let later = it.next_timeout(crate::common::LONG);
            assert_eq!(later.unwrap().unwrap(), 7);
            assert!(it.next().is_none());
        }

        #[test]
        fn imap_yields_in_input_order() {
            let pool = $pool;
            let got: Vec<u64> = pool
                .imap(jitter, 0..300u64)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..300).collect::<Vec<u64>>());
        }

        #[test]
        fn imap_unordered_yields_every_result_exactly_once() {
            let pool = $pool;
            let mut got: Vec<u64> = pool
                .imap_unordered(jitter, 0..300u64)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got.len(), 300);
            got.sort_unstable();
            assert_eq!(got, (0..300).collect::<Vec<u64>>());
        }

        #[test]
        fn imap_over_endless_input_returns_taken_values() {
            let pool = $pool;
            let got: Vec<u64> = pool
                .imap(double, 0u64..)
                .take(1000)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..1000).map(|x| 2 * x).collect::<Vec<u64>>());
            let mut got: Vec<u64> = pool
                .imap_unordered(double, 0u64..)
                .take(1000)
                .collect::<Result<_, _>>()
                .unwrap();
            got.sort_unstable();
            assert_eq!(got.len(), 1000);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "no result twice");
            assert!(got.iter().all(|x| x % 2 == 0));
        }

        #[test]
        fn imap_reads_input_lazily_one_window_ahead() {
            let pool = $pool;
            let window = (WINDOW_PER_WORKER * pool.workers()).max(2);
            let n = 500;
            let (input, pulled) = Counted::new(0u64..);
            let got: Vec<u64> = pool
                .with_chunksize(1)
                .imap(double, input)
                .take(n)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..n as u64).map(|x| 2 * x).collect::<Vec<u64>>());
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(pulled >= n, "pulled {pulled} < {n}");
            assert!(
                pulled <= n + window,
                "pulled {pulled} items for {n} results (window {window})"
            );
        }

        #[test]
        fn imap_unordered_reads_input_lazily_one_window_ahead() {
            let pool = $pool;
            let window = (WINDOW_PER_WORKER * pool.workers()).max(2);
            let n = 500;
            let (input, pulled) = Counted::new(0u64..);
            let got = pool
                .with_chunksize(1)
                .imap_unordered(double, input)
                .take(n)
                .collect::<Result<Vec<u64>, _>>()
                .unwrap();
            assert_eq!(got.len(), n);
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(
                pulled <= n + window,
                "pulled {pulled} items for {n} results (window {window})"
            );
        }

        /// The engine's cap on an automatic chunk (`engine::MAX_CHUNK`).
        const MAX_CHUNK: usize = 1 << 16;

        #[test]
        fn imap_with_automatic_chunks_never_reads_everything() {
            let pool = $pool;
            let window = (WINDOW_PER_WORKER * pool.workers()).max(2);
            let n = 1000;
            let (input, pulled) = Counted::new(0u64..);
            let got: Vec<u64> = pool
                .imap(double, input)
                .take(n)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..n as u64).map(|x| 2 * x).collect::<Vec<u64>>());
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(
                pulled <= n + window * MAX_CHUNK,
                "pulled {pulled} items for {n} results"
            );
        }

        #[test]
        fn imap_with_automatic_chunks_reads_a_bounded_prefix() {
            let pool = $pool;
            let n = 1000;
            let (input, pulled) = Counted::new(0u64..);
            let got: Vec<u64> = pool
                .imap(double, input)
                .take(n)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..n as u64).map(|x| 2 * x).collect::<Vec<u64>>());
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(pulled < n + 10_000, "pulled {pulled} items for {n} results");
        }

        #[test]
        fn dropping_an_imap_early_leaves_the_pool_usable() {
            let pool = $pool;
            let first: Vec<u64> = pool
                .imap(jitter, 0u64..)
                .take(3)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(first, [0, 1, 2]);
            let mut it = pool.imap_unordered(jitter, 0u64..100);
            assert!(it.next().unwrap().is_ok());
            drop(it);
            assert_eq!(
                pool.map(double, 0..10u64).unwrap(),
                (0..10).map(|x| 2 * x).collect::<Vec<u64>>()
            );
        }

        #[test]
        fn executor_map_yields_in_input_order() {
            let ex = $executor;
            let got: Vec<u64> = ex.map(jitter, 0..300u64).collect::<Result<_, _>>().unwrap();
            assert_eq!(got, (0..300).collect::<Vec<u64>>());
            let got: Vec<u64> = ex
                .with_buffersize(8)
                .map(double, 0u64..)
                .take(100)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..100).map(|x| 2 * x).collect::<Vec<u64>>());
        }

        #[test]
        fn executor_map_with_buffersize_reads_input_lazily() {
            // Python 3.14: `map(fn, it, buffersize=n)` submits n calls
            // ahead of the results consumed.
            let ex = $executor;
            let n = 1000;
            let buffer = 8;
            let (input, pulled) = Counted::new(0u64..);
            let mut it = ex
                .with_chunksize(1)
                .with_buffersize(buffer)
                .map(double, input);
            assert_eq!(pulled.load(Ordering::Relaxed), buffer, "submitted up front");
            let got = it
                .by_ref()
                .take(n)
                .collect::<Result<Vec<u64>, _>>()
                .unwrap();
            assert_eq!(got.len(), n);
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(
                pulled <= n + buffer,
                "pulled {pulled} items for {n} results"
            );
        }
    };
}
