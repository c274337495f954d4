//! Multi-process conformance test: writer processes hammer one shared table while the test
//! SIGKILLs them at random instants; after recovery every invariant must hold and no published
//! change may be missing from the table.
//!
//! The writers are this same test binary re-executed with `KILL_WRITERS_CHILD` set (forking a
//! multi-threaded test harness is not safe), running the ignored `writer_child` entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shm_layout::{
    ChangeContext, ChangeReason, ClientKey, LayoutSpec, LeaseState, RangeSpec, Ring, SlotImage,
    Table, Writer,
};

const SLOTS: u32 = 4096;
const WRITERS: u8 = 3;
const RING_CAPACITY: u64 = 1 << 16;

fn spec() -> LayoutSpec {
    LayoutSpec {
        ranges: vec![RangeSpec {
            first: 0x0a00_0000,
            last: 0x0a00_0000 + SLOTS - 1,
            in_pool: true,
        }],
    }
}

fn ring_path(dir: &Path, owner: u8) -> PathBuf {
    dir.join(format!("ring-{owner}"))
}

/// Tiny xorshift so the child needs no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
#[ignore = "child process of kill_writers_at_random_keeps_every_invariant; not a test by itself"]
fn writer_child() {
    let Ok(dir) = std::env::var("KILL_WRITERS_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let owner: u8 = std::env::var("KILL_WRITERS_OWNER")
        .unwrap()
        .parse()
        .unwrap();
    let table = Table::open(&dir.join("t")).unwrap();
    let ring = Ring::open_or_create(&ring_path(&dir, owner), owner, RING_CAPACITY).unwrap();
    let writer = Writer::new(&table, owner, &ring);
    let mut rng = Rng(u64::from(std::process::id()) << 8 | u64::from(owner) | 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut serial = 0u64;
    while Instant::now() < deadline {
        // Mostly allocate through the free bitmap, sometimes release or renew a random slot.
        let r = rng.next();
        let (slot, new_state) = if !r.is_multiple_of(3) {
            match table.next_free(0..SLOTS, (r >> 8) as u32 % SLOTS) {
                Some(s) => (s, LeaseState::Leased),
                None => ((r >> 8) as u32 % SLOTS, LeaseState::Released),
            }
        } else {
            ((r >> 8) as u32 % SLOTS, LeaseState::Released)
        };
        let Ok(cur) = table.read(slot) else { continue };
        if new_state == LeaseState::Leased && !cur.state.is_allocatable() {
            continue;
        }
        if new_state == LeaseState::Released && cur.state != LeaseState::Leased {
            continue;
        }
        serial += 1;
        let mut img = cur;
        img.state = new_state;
        img.expires = (serial & 0xffff_ffff) as u32;
        if new_state == LeaseState::Leased {
            let mut id = [0u8; 10];
            id[0] = owner;
            id[1..9].copy_from_slice(&(u64::from(std::process::id()) << 32 | serial).to_le_bytes());
            img.key = ClientKey::from_client_id(&id);
            img.set_hwaddr(1, &id[..6]);
        }
        let _ = writer.update(
            slot,
            &cur,
            &img,
            &ChangeContext {
                reason: ChangeReason::Commit,
                time_ms: serial,
                context: b"",
            },
        );
    }
}

fn spawn_writer(dir: &Path, owner: u8) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILL_WRITERS_CHILD", dir)
        .env("KILL_WRITERS_OWNER", owner.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_writers_at_random_keeps_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create(&dir.path().join("t"), &spec()).unwrap();
    let mut children: Vec<Child> = (1..=WRITERS).map(|o| spawn_writer(dir.path(), o)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut recoveries: HashMap<String, u32> = HashMap::new();
    let kills = 120;
    let deadline = Instant::now() + Duration::from_secs(45);
    // Let the writers map the table and start working.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..kills {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 25));
        let i = (rng.next() % u64::from(WRITERS)) as usize;
        let owner = i as u8 + 1;
        let _ = children[i].kill(); // SIGKILL
        let _ = children[i].wait();
        let ring =
            Ring::open_or_create(&ring_path(dir.path(), owner), owner, RING_CAPACITY).unwrap();
        let outcome = table.recover_owner(owner, Some(&ring));
        *recoveries
            .entry(
                format!("{outcome:?}")
                    .split('(')
                    .next()
                    .unwrap()
                    .to_string(),
            )
            .or_default() += 1;
        children[i] = spawn_writer(dir.path(), owner);
    }
    for (i, c) in children.iter_mut().enumerate() {
        let _ = c.kill();
        let _ = c.wait();
        let owner = i as u8 + 1;
        let ring =
            Ring::open_or_create(&ring_path(dir.path(), owner), owner, RING_CAPACITY).unwrap();
        table.recover_owner(owner, Some(&ring));
    }
    eprintln!("recoveries: {recoveries:?}");

    let report = table.check();
    assert!(report.is_clean(), "{report:?}");
    let leased = report.by_state[LeaseState::Leased as usize];
    assert!(leased > 0, "writers made progress: {report:?}");

    // Every published change is in the table: per slot the table's version is at least the
    // highest version any ring recorded for it, and equal versions mean equal images.
    let mut latest: HashMap<u32, SlotImage> = HashMap::new();
    let mut records = 0u64;
    for owner in 1..=WRITERS {
        let ring =
            Ring::open_or_create(&ring_path(dir.path(), owner), owner, RING_CAPACITY).unwrap();
        let head = ring.head();
        let first = head.saturating_sub(ring.capacity() - 1).max(1);
        for seq in first..=head {
            if let Some(r) = ring.read(seq) {
                records += 1;
                let e = latest.entry(r.slot).or_insert(r.image);
                if r.image.version > e.version {
                    *e = r.image;
                }
            }
        }
    }
    assert!(records > 1000, "only {records} records");
    for (slot, img) in &latest {
        let cur = table.read(*slot).unwrap();
        assert!(
            cur.version >= img.version,
            "slot {slot}: table v{} lost published v{}",
            cur.version,
            img.version
        );
        if cur.version == img.version {
            assert_eq!(&cur, img, "slot {slot}");
        }
    }
    // Rolled back and rolled forward changes both happened, so both paths were exercised.
    assert!(recoveries.values().sum::<u32>() >= 10, "{recoveries:?}");
}
