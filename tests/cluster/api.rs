//! The cluster behind the other front doors: `Parallel`, and a Redis that
//! wants a user and a password (ACL).

use std::time::Duration;

use crew::cluster::{ClusterConfig, LocalRedis};
use crew::{Parallel, delayed};

use crate::common::cluster::{HEARTBEAT_MS, fresh_queue, redis};
use crate::common::eventually;

#[test]
fn parallel_runs_on_the_cluster() {
    let queue = fresh_queue();
    let node = redis()
        .spawn_node(&queue, 2, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .unwrap();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let squares = Parallel::new()
        .cluster(config.clone())
        .run((0..50u64).map(|i| delayed(|x: u64| x * x, (i,))))
        .unwrap();
    assert_eq!(squares, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    let mut lazy: Vec<u64> = Parallel::new()
        .cluster(config)
        .run_unordered((0..20u64).map(|i| delayed(|x: u64| x + 1, (i,))))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    lazy.sort_unstable();
    assert_eq!(lazy, (1..=20).collect::<Vec<u64>>());
    redis().kill_node(node);
}

#[test]
fn an_acl_user_with_a_password_gets_in_and_a_wrong_password_does_not() {
    let acl = LocalRedis::start_with_user("crew", "s3cret").unwrap();
    let queue = fresh_queue();
    let node = acl
        .spawn_node(&queue, 1, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .unwrap();
    // Over TCP with the credentials in the URL, as across machines.
    let pool = crew::Pool::builder()
        .cluster(&acl.tcp_url())
        .queue(&queue)
        .build()
        .unwrap();
    eventually("the node comes up", || pool.workers() >= 1);
    assert_eq!(pool.map(|x: u64| x * 7, 0..10u64).unwrap()[3], 21);
    let wrong = acl.tcp_url().replace("s3cret", "wrong");
    let started = std::time::Instant::now();
    let e = crew::Pool::builder()
        .cluster(&wrong)
        .queue(&queue)
        .build()
        .unwrap_err();
    assert!(e.is_io(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "wrong credentials are not retried until the deadline"
    );
    acl.kill_node(node);
}

#[test]
fn nodes_that_prefetch_run_every_task_once() {
    let queue = fresh_queue();
    let env = [
        ("CREW_HEARTBEAT_MS", HEARTBEAT_MS),
        (crew::cluster::ENV_PREFETCH, "16"),
    ];
    let nodes: Vec<_> = (0..2)
        .map(|_| redis().spawn_node(&queue, 1, &env).unwrap())
        .collect();
    let ex =
        crew::Executor::cluster_config(ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    eventually("the nodes come up", || ex.workers() >= 2);
    let futures: Vec<_> = (0..500u64)
        .map(|i| ex.submit(|x: u64| x * 2, (i,)))
        .collect();
    let got: Vec<u64> = futures
        .into_iter()
        .map(|f| f.result_timeout(crate::common::LONG).unwrap())
        .collect();
    assert_eq!(got, (0..500u64).map(|x| x * 2).collect::<Vec<_>>());
    for n in nodes {
        redis().kill_node(n);
    }
}

/// Makes a certificate authority and a certificate for `localhost` signed
/// by it, with the `openssl` command; returns (ca, cert, key) paths.
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the TLS test needs the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "2", "-subj", "/CN=crew test CA"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&a);
    let mut a = vec!["req", "-subj", "/CN=localhost"];
    a.extend(ec);
    a.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&a);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

#[test]
fn rediss_tls_carries_the_cluster() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let tls = LocalRedis::start_with(
        false,
        &[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    )
    .unwrap();
    let url = format!("rediss://localhost:{port}");
    let queue = fresh_queue();
    let node = tls
        .spawn_node(
            &queue,
            1,
            &[
                ("CREW_HEARTBEAT_MS", HEARTBEAT_MS),
                (crew::cluster::ENV_WORKER, &url),
                ("CREW_TLS_CA", &ca),
            ],
        )
        .unwrap();
    let pool = crew::Pool::builder()
        .cluster_config(ClusterConfig::new(&url).queue(&queue).tls_ca(&ca))
        .build()
        .unwrap();
    eventually("the node comes up over TLS", || pool.workers() >= 1);
    assert_eq!(
        pool.map(|x: u64| x + 100, 0..5u64).unwrap(),
        [100, 101, 102, 103, 104]
    );
    // Without our authority the server's certificate is not trusted.
    let untrusted = crew::Pool::builder().cluster(&url).queue(&queue).build();
    let e = untrusted.unwrap_err();
    assert!(format!("{e:?}").contains("certificate"), "{e:?}");
    tls.kill_node(node);
}

/// The `Done n out of total` counts of captured progress lines.
fn progress_counts(lines: &[String], label: &str) -> Vec<(usize, usize)> {
    lines
        .iter()
        .map(|l| {
            let rest = l
                .strip_prefix(&format!("[{label}]: Done "))
                .unwrap_or_else(|| panic!("{l:?} is not a progress line of {label}"));
            let (done, rest) = rest.split_once(" out of ").expect("out of");
            let total = rest.split(' ').find(|s| !s.is_empty()).expect("total");
            (done.trim().parse().unwrap(), total.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_progress_bar_reaches_its_total_on_the_cluster() {
    use std::sync::{Arc, Mutex};

    use crew::ProgressStyle;

    let pool = crate::common::cluster::pool();
    for chunksize in [1, 7, 100] {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let v = pool
            .with_chunksize(chunksize)
            .with_progress_style(Some(ProgressStyle::Capture(lines.clone())))
            .map(|x: u64| x + 1, 0..500u64)
            .unwrap();
        assert_eq!(v.len(), 500);
        let lines = lines.lock().unwrap().clone();
        let label = lines
            .first()
            .and_then(|l| l.strip_prefix('[')?.split_once("]:"))
            .map(|(label, _)| label.to_owned())
            .unwrap_or_else(|| panic!("no progress line: {lines:?}"));
        assert!(label.starts_with("Pool(cluster="), "{label}");
        let counts = progress_counts(&lines, &label);
        assert!(!counts.is_empty(), "no progress line: {lines:?}");
        assert!(counts.iter().all(|&(_, total)| total == 500), "{lines:?}");
        assert!(
            counts.windows(2).all(|w| w[0].0 <= w[1].0),
            "done counts never go back: {lines:?}"
        );
        assert_eq!(counts.last().unwrap().0, 500, "{lines:?}");
    }
    // joblib's lines, from `Parallel` on the cluster.
    let lines = Arc::new(Mutex::new(Vec::new()));
    let v = crate::common::cluster::parallel()
        .verbose(5)
        .progress_style(Some(ProgressStyle::Capture(lines.clone())))
        .run((0..40u64).map(|i| delayed(|x: u64| x * 3, (i,))))
        .unwrap();
    assert_eq!(v.len(), 40);
    let lines = lines.lock().unwrap().clone();
    let last = lines.last().expect("progress lines");
    assert!(last.contains(" finished | "), "{lines:?}");
    let counts = progress_counts(&lines, "Parallel(n_jobs=2)");
    assert_eq!(counts.last().unwrap(), &(40, 40), "{lines:?}");
}

/// With prefetch, the first node to read after a map was queued must not
/// take every chunk while another node idles: each takes a fair share of
/// what waits.
#[test]
fn nodes_that_prefetch_share_a_queued_map() {
    let queue = fresh_queue();
    // Heartbeats of 1 s: on a loaded machine a node that misses a few
    // 100 ms beats would have its tasks reclaimed and run twice.
    let env = [
        ("CREW_HEARTBEAT_MS", "1000"),
        (crew::cluster::ENV_PREFETCH, "64"),
    ];
    let nodes: Vec<_> = (0..2)
        .map(|_| redis().spawn_node(&queue, 1, &env).unwrap())
        .collect();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let pool = crew::Pool::builder()
        .cluster_config(config.clone())
        .build()
        .unwrap();
    eventually("the nodes come up", || pool.workers() >= 2);
    let v = pool
        .with_chunksize(1)
        .map(
            crate::common::tasks::sleep_ms,
            std::iter::repeat_n(20u64, 40),
        )
        .unwrap();
    assert_eq!(v.len(), 40);
    // At least 40: a task reclaimed from a node that stalled runs twice.
    eventually("both nodes report their counts", || {
        let s = crew::cluster::status(&config).unwrap();
        s.nodes.iter().map(|n| n.done).sum::<u64>() >= 40
    });
    let s = crew::cluster::status(&config).unwrap();
    let done: Vec<u64> = s.nodes.iter().map(|n| n.done).collect();
    assert!(
        done.iter().all(|&d| d >= 10),
        "each node ran a fair share of the 40 tasks: {done:?}"
    );
    for n in nodes {
        redis().kill_node(n);
    }
}
