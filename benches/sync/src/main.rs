//! Helper of benches/sync/run.sh: makes test images and runs one
//! `failback::sync` operation per invocation, so that the shell times it
//! exactly like its peers (rsync, cat, dd). `phase2` times itself in process.

mod engine;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use failback::sync::{
    BLOCK, ChangeMap, Digests, PhaseTwo, SyncOptions, copy_blocks, delta_sync, digest_blocks,
    full_sync, refresh_digests, verify_against, verify_changes,
};

type R = Result<(), Box<dyn std::error::Error>>;

/// splitmix64: fast, seeded, good enough for incompressible test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn parse_size(s: &str) -> u64 {
    let (n, m) = match s.trim_end_matches('B') {
        x if x.ends_with("Ki") => (&x[..x.len() - 2], 1u64 << 10),
        x if x.ends_with("Mi") => (&x[..x.len() - 2], 1 << 20),
        x if x.ends_with("Gi") => (&x[..x.len() - 2], 1 << 30),
        x => (x, 1),
    };
    n.parse::<u64>().expect("size") * m
}

/// `gen PATH SIZE SEED`: a file of SIZE fully random bytes.
fn generate(path: &Path, size: u64, seed: u64) -> R {
    let mut f = File::create(path)?;
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// The blocks `mutate` picks: `count` distinct blocks out of `blocks`, seeded.
fn pick(blocks: u64, count: u64, seed: u64) -> ChangeMap {
    let mut rng = Rng(seed ^ 0xA5A5_5A5A);
    let mut map = ChangeMap::new();
    while map.count() < count {
        map.mark(rng.next() % blocks);
    }
    map
}

/// `mutate PATH COUNT SEED [MAP]`: overwrites COUNT random 4 KiB blocks with
/// seeded random bytes (the same blocks and bytes for the same seed, so it
/// also resets a target that was synced), fsyncs, optionally saves the map.
fn mutate(path: &Path, count: u64, seed: u64, map_out: Option<&Path>) -> R {
    let f = OpenOptions::new().write(true).open(path)?;
    let blocks = f.metadata()?.len() / BLOCK as u64;
    let map = pick(blocks, count, seed);
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; BLOCK];
    for b in map.iter() {
        rng.fill(&mut buf);
        f.write_all_at(&buf, b * BLOCK as u64)?;
    }
    f.sync_all()?;
    if let Some(p) = map_out {
        map.save(p)?;
    }
    Ok(())
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `phase2 DIR SIZE CHANGED_BYTES REPS`: source + target of SIZE, phase 1
/// (delta_sync, untimed), then REPS times: CHANGED_BYTES of random blocks
/// written to the source and marked in a ChangeMap, then timed, as the
/// lab's `complete` does it: phase 1's digests read in part from their file
/// and checked against the image digest phase 1 recorded, the source's
/// changed blocks hashed and its image digest found (PhaseTwo::from_file),
/// copy_blocks, and verification by the
/// changed blocks (PhaseTwo::verify). For comparison, also timed in the same round: the
/// whole-target verification (verify_against) that it replaces. Prints
/// medians.
fn phase2(dir: &Path, size: u64, changed: u64, reps: usize) -> R {
    let (src, dst) = (dir.join("p2-src.img"), dir.join("p2-dst.img"));
    generate(&src, size, 7)?;
    generate(&dst, size, 8)?;
    let mut before = delta_sync(&src, &dst, &SyncOptions::new())?.source_digests;
    let count = changed / BLOCK as u64;
    let (mut tr, mut tc, mut tv, mut tt, mut tw) = (vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..reps {
        mutate(&src, count, 100 + rep as u64, None)?;
        let map = pick(size / BLOCK as u64, count, 100 + rep as u64);
        // What phase 1 left: its digests file and the image digest it
        // recorded (untimed; reading the file is timed).
        let digests = dir.join("p2-dst.digests");
        before.save(&digests)?;
        let recorded = before.root();
        let changes = map.clone();
        let t0 = Instant::now();
        let phase2 = PhaseTwo::from_file(&src, &digests, recorded, changes)?;
        let r = secs(t0);
        let t1 = Instant::now();
        let st = copy_blocks(&src, &dst, phase2.changes(), &SyncOptions::new())?;
        let c = secs(t1);
        let t2 = Instant::now();
        let v = phase2.verify(&dst)?;
        let w = secs(t2);
        assert!(v.equal, "phase 2 verification failed");
        assert_eq!(st.blocks_copied, count);
        let mut expected = before.clone();
        refresh_digests(&src, &mut expected, &map)?;
        let t3 = Instant::now();
        let whole = verify_against(&dst, &expected)?;
        tw.push(secs(t3));
        assert_eq!(whole, v);
        assert_eq!(verify_changes(&dst, &before, &map, &expected)?, v);
        tr.push(r);
        tc.push(c);
        tv.push(w);
        tt.push(r + c + w);
        // The next round's phase 1 left the target as it is now.
        before = expected;
    }
    println!(
        "phase2 size={} changed={} source_digests={:.4} copy_blocks={:.4} verify={:.4} total={:.4}   (whole-target verify_against instead: {:.4})",
        size,
        changed,
        median(tr),
        median(tc),
        median(tv),
        median(tt),
        median(tw)
    );
    std::fs::remove_file(&src)?;
    std::fs::remove_file(&dst)?;
    std::fs::remove_file(dir.join("p2-dst.digests"))?;
    Ok(())
}

fn main() -> R {
    let a: Vec<String> = std::env::args().collect();
    let p = |i: usize| Path::new(&a[i]);
    match a.get(1).map(String::as_str) {
        Some("gen") => generate(p(2), parse_size(&a[3]), a[4].parse()?),
        Some("mutate") => mutate(p(2), a[3].parse()?, a[4].parse()?, a.get(5).map(Path::new)),
        Some("digests") => Ok(digest_blocks(p(2))?.save(p(3))?),
        Some("delta") => {
            let out = delta_sync(p(2), p(3), &SyncOptions::new())?;
            eprintln!("{:?}", out.stats);
            Ok(())
        }
        Some("delta-known") => {
            let known = Digests::load(p(4))?;
            let out = delta_sync(p(2), p(3), &SyncOptions::new().with_known_target(&known))?;
            eprintln!("{:?}", out.stats);
            Ok(())
        }
        Some("full") => {
            let st = full_sync(p(2), p(3), &SyncOptions::new())?;
            eprintln!("{st:?}");
            Ok(())
        }
        Some("engine") => engine::engine(p(2)),
        Some("phase2") => phase2(p(2), parse_size(&a[3]), parse_size(&a[4]), a[5].parse()?),
        _ => Err("usage: gen|mutate|digests|delta|delta-known|full|phase2|engine ...".into()),
    }
}
