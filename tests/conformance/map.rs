//! `map`, `starmap` and `apply`: order, arity, empty inputs, size, chunking.

macro_rules! map_tests {
    ($pool:expr) => {
        use crate::common::tasks::*;

        #[test]
        fn map_preserves_input_order() {
            let pool = $pool;
            let got = pool.map(jitter, 0..300u64).unwrap();
            assert_eq!(got, (0..300).collect::<Vec<u64>>());
            let got = pool.map(square, vec![5u64, 3, 9, 1]).unwrap();
            assert_eq!(got, [25, 9, 81, 1]);
        }

        #[test]
        fn starmap_preserves_input_order() {
            let pool = $pool;
            let got = pool.starmap(add, (0..1000u64).map(|i| (i, 2 * i))).unwrap();
            assert_eq!(got, (0..1000).map(|i| 3 * i).collect::<Vec<u64>>());
        }

        #[test]
        fn starmap_takes_one_to_six_arguments() {
            let pool = $pool;
            assert_eq!(pool.starmap(one, vec![(1u64,), (2,)]).unwrap(), [2, 3]);
            assert_eq!(
                pool.starmap(two, vec![(1u64, "a".to_string()), (2, "b".to_string())])
                    .unwrap(),
                ["1:a", "2:b"]
            );
            assert_eq!(
                pool.starmap(
                    three,
                    vec![("ab".to_string(), 3usize, '!'), (String::new(), 9, '?')]
                )
                .unwrap(),
                ["ababab!", "?"]
            );
            assert_eq!(
                pool.starmap(four, vec![(1u8, 2u16, 3u32, 4u64), (9, 0, 0, 1)])
                    .unwrap(),
                [1234, 9001]
            );
            assert_eq!(
                pool.starmap(
                    five,
                    vec![
                        (vec![1i64, 5, 9, 4, 7], 4i64, 8i64, 10i64, false),
                        (vec![0, 4, 8], 4, 8, 1, true)
                    ]
                )
                .unwrap(),
                [30, -2]
            );
            assert_eq!(
                pool.starmap(
                    six,
                    vec![(1u64, 2u64, 3u64, 4u64, 5u64, 6u64), (6, 5, 4, 3, 2, 1)]
                )
                .unwrap(),
                [123_456, 654_321]
            );
        }

        #[test]
        fn apply_runs_one_call() {
            let pool = $pool;
            assert_eq!(pool.apply(answer, ()).unwrap(), 42);
            assert_eq!(pool.apply(one, (41u64,)).unwrap(), 42);
            assert_eq!(
                pool.apply(three, ("ab".to_string(), 2usize, '.')).unwrap(),
                "abab."
            );
            assert_eq!(
                pool.apply(six, (9u64, 8u64, 7u64, 6u64, 5u64, 4u64))
                    .unwrap(),
                987_654
            );
            // A non-capturing closure is a task too.
            assert_eq!(
                pool.apply(|a: u64, b: u64| a * b, (6u64, 7u64)).unwrap(),
                42
            );
        }

        #[test]
        fn empty_inputs_give_empty_results() {
            let pool = $pool;
            assert!(pool.map(double, Vec::<u64>::new()).unwrap().is_empty());
            assert!(
                pool.starmap(add, Vec::<(u64, u64)>::new())
                    .unwrap()
                    .is_empty()
            );
            assert!(
                pool.map_async(double, Vec::<u64>::new())
                    .get_timeout(crate::common::LONG)
                    .unwrap()
                    .is_empty()
            );
            assert!(
                pool.starmap_async(add, Vec::<(u64, u64)>::new())
                    .get_timeout(crate::common::LONG)
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(pool.imap(double, Vec::<u64>::new()).count(), 0);
            assert_eq!(pool.imap_unordered(double, Vec::<u64>::new()).count(), 0);
            assert!(
                pool.with_chunksize(1)
                    .map(double, Vec::<u64>::new())
                    .unwrap()
                    .is_empty()
            );
        }

        #[test]
        fn million_element_map_is_correct() {
            let pool = $pool;
            let n = 1_000_000u64;
            let got = pool.map(scramble, 0..n).unwrap();
            assert_eq!(got.len(), n as usize);
            let checksum = got.iter().enumerate().fold(0u64, |acc, (i, v)| {
                acc.wrapping_mul(31).wrapping_add(*v ^ i as u64)
            });
            let expected = (0..n).fold(0u64, |acc, i| {
                acc.wrapping_mul(31).wrapping_add(scramble(i) ^ i)
            });
            assert_eq!(checksum, expected);
        }

        #[test]
        fn chunksize_does_not_change_results() {
            let pool = $pool;
            let n = 10_000u64;
            let expected: Vec<u64> = (0..n).map(scramble).collect();
            let expected_sums: Vec<u64> = (0..n).map(|i| i + 7).collect();
            for size in [1, 7, 1000, n as usize + 1, usize::MAX] {
                let p = pool.with_chunksize(size);
                assert_eq!(
                    p.map(scramble, 0..n).unwrap(),
                    expected,
                    "map, chunksize {size}"
                );
                assert_eq!(
                    p.starmap(add, (0..n).map(|i| (i, 7))).unwrap(),
                    expected_sums,
                    "starmap, chunksize {size}"
                );
                assert_eq!(
                    p.map_async(scramble, 0..n)
                        .get_timeout(crate::common::LONG)
                        .unwrap(),
                    expected,
                    "map_async, chunksize {size}"
                );
                let lazy: Vec<u64> = p.imap(scramble, 0..n).collect::<Result<_, _>>().unwrap();
                assert_eq!(lazy, expected, "imap, chunksize {size}");
                let mut unordered: Vec<u64> = p
                    .imap_unordered(scramble, 0..n)
                    .collect::<Result<_, _>>()
                    .unwrap();
                unordered.sort_unstable();
                let mut sorted = expected.clone();
                sorted.sort_unstable();
                assert_eq!(unordered, sorted, "imap_unordered, chunksize {size}");
            }
        }

        #[test]
        fn map_takes_owned_strings_and_vectors() {
            let pool = $pool;
            let words: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
            let lens = pool.map(|w: String| w.len(), words).unwrap();
            assert_eq!(lens, [1, 2, 3]);
            let rows = vec![vec![1u32, 2, 3], vec![], vec![10]];
            let sums = pool.map(|r: Vec<u32>| r.iter().sum::<u32>(), rows).unwrap();
            assert_eq!(sums, [6, 0, 10]);
        }
    };
}
