//! Pipe: a duplex connection between processes.

use crew_shm::{Connection, Pipe};

use crate::common::{self, Child};

#[test]
fn ping_pong_across_processes() {
    const NAME: &str = concat!(module_path!(), "::ping_pong_across_processes");
    if common::role().is_some() {
        let end: Connection<u64> = common::arg();
        loop {
            match end.recv_timeout(common::PATIENCE) {
                Ok(n) => end.send(n + 1).unwrap(),
                Err(e) if e.is_closed() => return,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    let (parent, child_end) = Pipe::<u64>::new().unwrap();
    let child = Child::spawn(NAME, "echo", &child_end);
    drop(child_end); // the child holds it now; dropping ours closes nothing
    let mut n = 0;
    for _ in 0..1_000 {
        parent.send(n).unwrap();
        n = parent.recv_timeout(common::PATIENCE).unwrap();
    }
    assert_eq!(n, 1_000);
    parent.close();
    child.assert_success();
}
