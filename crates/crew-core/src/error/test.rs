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

#[test]
fn a_map_refused_as_a_whole_shows_as_its_error() {
    use std::error::Error as _;
    // Refused before any task ran: "1 of 1 tasks failed" would mislead.
    let refused: MapError<u8> = Error::invalid_input("chunksize must be at least 1").into();
    assert_eq!(
        refused.to_string(),
        "invalid input: chunksize must be at least 1"
    );
    assert!(refused.source().is_none());
    let io: MapError<u8> =
        Error::io("creating the queue", std::io::ErrorKind::TimedOut.into()).into();
    assert_eq!(io.to_string(), "i/o error while creating the queue");
    assert_eq!(
        io.source().unwrap().to_string(),
        std::io::Error::from(std::io::ErrorKind::TimedOut).to_string()
    );
    // A task that failed is still counted, with the failure as the source.
    let failed = MapError::new(vec![Err::<u8, _>(Error::panic("boom").with_index(0))]);
    assert_eq!(
        failed.to_string(),
        "1 of 1 tasks failed, the first at position 0"
    );
    assert_eq!(
        failed.source().unwrap().to_string(),
        "task 0: task panicked: boom"
    );
}
