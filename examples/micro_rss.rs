#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    if args.len() > 2 {
        let n: usize = args[2].parse().unwrap();
        let f = pollhook::bench::micro::diff_and_commit(n, 0, &dir)
            .await
            .unwrap();
        println!("{f:?}");
        return;
    }
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("before open: {}", rss());
    let t = std::time::Instant::now();
    let s = pollhook::store::Store::open(&dir.join("state")).unwrap();
    println!("after open ({:?}): {}", t.elapsed(), rss());
    let _ = s.get_state(b"x");
    println!("after get: {}", rss());
}
