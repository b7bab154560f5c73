use super::*;

#[test]
fn display_is_lowercase_without_period() {
    for e in [
        Error::panic("x"),
        Error::timeout(),
        Error::cancelled(),
        Error::worker_lost("exited with code 1"),
        Error::shutdown(),
        Error::invalid_input("y"),
        Error::protocol("z"),
    ] {
        let s = e.to_string();
        assert!(!s.ends_with('.'), "{s}");
        assert!(s.chars().next().unwrap().is_lowercase(), "{s}");
    }
}

#[test]
fn annotations_survive_clones() {
    let e = Error::panic("p");
    let shared = e.clone();
    let annotated = shared.with_index(3).with_worker(1);
    assert_eq!(annotated.index(), Some(3));
    assert_eq!(annotated.worker(), Some(1));
    assert_eq!(e.index(), None);
    assert_eq!(annotated.to_string(), "task 3: task panicked: p (worker 1)");
}

#[test]
fn map_error_converts_to_its_first_failure() {
    let err: MapError<u8> =
        MapError::new(vec![Ok(1), Err(Error::timeout()), Err(Error::cancelled())]);
    assert_eq!(err.failed(), 2);
    assert_eq!(err.errors().map(|(i, _)| i).collect::<Vec<_>>(), [1, 2]);
    let e: Error = err.into();
    assert!(e.is_timeout());
}
