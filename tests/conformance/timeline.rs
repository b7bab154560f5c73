//! The timeline: one span per task, exported as Chrome trace-event JSON.

macro_rules! timeline_tests {
    (
        $pool:expr,
        $timeline_pool:expr,
        span_per_task: [$(#[$span_per_task:meta])?],
    ) => {
        use crate::common::tasks::*;

        #[test]
        $(#[$span_per_task])?
        fn timeline_records_one_span_per_task() {
            let pool = $timeline_pool;
            pool.map(double, 0..40u64).unwrap();
            let timeline = pool.timeline().expect("built with timeline(true)");
            let spans = timeline.spans();
            assert_eq!(spans.len(), 40);
            let mut tasks: Vec<usize> = spans.iter().map(|s| s.task).collect();
            tasks.sort_unstable();
            assert_eq!(tasks, (0..40).collect::<Vec<usize>>());
            for s in &spans {
                assert!(s.start <= s.end);
                assert!(s.worker < pool.workers());
            }
            pool.starmap(add, vec![(1u64, 2u64); 5]).unwrap();
            assert_eq!(timeline.spans().len(), 45);
        }

        #[test]
        $(#[$span_per_task])?
        fn chrome_trace_is_json_with_one_complete_event_per_task() {
            let pool = $timeline_pool;
            pool.with_chunksize(3).map(jitter, 0..25u64).unwrap();
            let trace = pool.timeline().unwrap().to_chrome_trace();
            let doc: serde_json::Value = serde_json::from_str(&trace).expect("valid JSON");
            let events = doc["traceEvents"].as_array().expect("a traceEvents array");
            let complete: Vec<&serde_json::Value> =
                events.iter().filter(|e| e["ph"] == "X").collect();
            assert_eq!(complete.len(), 25);
            let mut tasks: Vec<u64> = complete
                .iter()
                .map(|e| {
                    assert!(e["ts"].as_f64().unwrap() >= 0.0);
                    assert!(e["dur"].as_f64().unwrap() >= 0.0);
                    assert!(e["tid"].as_u64().unwrap() < pool.workers() as u64);
                    e["args"]["task"].as_u64().unwrap()
                })
                .collect();
            tasks.sort_unstable();
            assert_eq!(tasks, (0..25).collect::<Vec<u64>>());
        }

        /// In Perfetto, a span says which function ran; the item's
        /// position is its `task` argument.
        #[test]
        $(#[$span_per_task])?
        fn spans_are_named_after_the_task_function() {
            let pool = $timeline_pool;
            pool.map(double, 0..6u64).unwrap();
            pool.apply(answer, ()).unwrap();
            let spans = pool.timeline().unwrap().spans();
            let mut names: Vec<&str> = spans.iter().map(|s| s.name).collect();
            names.sort_unstable();
            assert_eq!(names, ["answer", "double", "double", "double", "double", "double", "double"]);
            let trace = pool.timeline().unwrap().to_chrome_trace();
            let doc: serde_json::Value = serde_json::from_str(&trace).expect("valid JSON");
            let events = doc["traceEvents"].as_array().expect("a traceEvents array");
            let mut items: Vec<u64> = events
                .iter()
                .filter(|e| e["ph"] == "X" && e["name"] == "double")
                .map(|e| e["args"]["task"].as_u64().unwrap())
                .collect();
            items.sort_unstable();
            assert_eq!(items, (0..6).collect::<Vec<u64>>());
        }

        #[test]
        fn calls_outside_maps_are_recorded_too() {
            let pool = $timeline_pool;
            pool.apply(answer, ()).unwrap();
            pool.apply_async(double, (1u64,))
                .get_timeout(crate::common::LONG)
                .unwrap();
            assert_eq!(pool.timeline().unwrap().spans().len(), 2);
        }

        #[test]
        fn a_pool_without_timeline_has_none() {
            let pool = $pool;
            pool.map(double, 0..4u64).unwrap();
            assert!(pool.timeline().is_none());
        }

        /// `Span::task` is "the task's position in its map, or its
        /// submission number".
        #[test]
        fn calls_outside_maps_get_distinct_task_numbers() {
            let pool = $timeline_pool;
            for i in 0..3u64 {
                pool.apply(double, (i,)).unwrap();
            }
            let mut tasks: Vec<usize> = pool.timeline().unwrap().spans().iter().map(|s| s.task).collect();
            tasks.sort_unstable();
            tasks.dedup();
            assert_eq!(tasks.len(), 3, "task numbers {tasks:?}");
        }
    };
}
