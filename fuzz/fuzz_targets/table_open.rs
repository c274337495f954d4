//! The lease table behind a valid header.
//!
//! The target starts from real table files (small layouts built with `Table::create` and a few
//! leases written with `Table::update`, so the slots, free bitmap, summary bitmap and client
//! index are populated), and lets the fuzz input damage everything after the header: owner
//! records (intents), slots (raw words, or whole slot images with a valid checksum so the
//! decoder's field checks are reached), the free and summary bitmaps and the client index. The
//! header and range directory stay valid, so every input gets past `Table::open`.
//!
//! It then opens the file and exercises every reader and the repair path: `read` of every slot,
//! `check`, `count_free` and `next_free` over every range and subnet-like span, `find_client`
//! for every key found in a slot, `recover_owner` for every owner, `repair`, then `check`
//! again. Properties: nothing panics or hangs; `next_free` returns a slot inside the span it
//! was asked about; after `repair` no slot is corrupt or locked, every pool slot's free bit
//! agrees with its state, and `next_free` only returns slots whose bit is set.
//!
//! Input: byte 0 picks the template (`% TEMPLATES`), or with its top two bits set the rest of
//! the input is used as a whole table file (header included: the old, header-only target).
//! Then 12-byte operations: `op:u8 region:u8 offset:u16le value:u64le` (see [`apply`]).
//!
//! `FUZZ_TABLE_ALLOW_SPAN_ESCAPE=1` turns the next_free span check off (issue 7 defect 1,
//! `scan_free` returns a slot of the next span, is fixed on another branch; set it to fuzz past
//! that known defect).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shm_layout::layout::HEADER_WORDS;
use shm_layout::slot::SLOT_WORDS;
use shm_layout::{
    ChangeContext, ChangeReason, ClientKey, Geometry, LayoutSpec, LeaseState, RangeSpec, Ring,
    SlotImage, Table, SUPERVISOR_OWNER,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TEMPLATES: usize = 3;
const OWNER_WORDS: usize = shm_layout::layout::OWNER_WORDS;
const MAX_OWNERS: usize = shm_layout::layout::MAX_OWNERS;

struct Template {
    bytes: Vec<u8>,
    geo: Geometry,
}

struct Env {
    dir: tempfile::TempDir,
    templates: Vec<Template>,
    allow_span_escape: bool,
}

fn a(x: [u8; 4]) -> u32 {
    u32::from_be_bytes(x)
}

fn layouts() -> [LayoutSpec; TEMPLATES] {
    let r = |first: u32, last: u32, in_pool: bool| RangeSpec {
        first,
        last,
        in_pool,
    };
    [
        // One pool whose span does not end on a multiple of 64.
        LayoutSpec {
            ranges: vec![r(a([198, 18, 0, 10]), a([198, 18, 0, 110]), true)],
        },
        // Two pools and a reservation outside them (the reserved-only range has no free bits).
        LayoutSpec {
            ranges: vec![
                r(a([10, 0, 0, 0]), a([10, 0, 0, 199]), true),
                r(a([10, 0, 1, 5]), a([10, 0, 1, 5]), false),
                r(a([10, 0, 2, 0]), a([10, 0, 2, 63]), true),
            ],
        },
        // A single address.
        LayoutSpec {
            ranges: vec![r(a([192, 0, 2, 1]), a([192, 0, 2, 1]), true)],
        },
    ]
}

/// Builds a template table with some leases, offers, a release and a reservation written
/// through the real write protocol.
fn build_template(dir: &Path, n: usize, spec: &LayoutSpec) -> Template {
    let path = dir.join(format!("template-{n}.table"));
    let ring_path = dir.join(format!("template-{n}.ring"));
    let t = Table::create(&path, spec).expect("create template table");
    let ring = Ring::open_or_create(&ring_path, SUPERVISOR_OWNER, 64).expect("template ring");
    let ctx = ChangeContext {
        reason: ChangeReason::Commit,
        time_ms: 1_700_000_000_000,
        context: b"",
    };
    let slots = t.slot_count();
    for slot in 0..slots.min(40) {
        let old = t.read(slot).expect("template slot");
        let mut new = old;
        let mac = [2, 0, 0, 0, n as u8, slot as u8];
        new.set_hwaddr(1, &mac);
        new.key = match slot % 4 {
            0 => ClientKey::from_client_id(&[1, 2, 0, 0, 0, n as u8, slot as u8]),
            1 => ClientKey::from_client_id(&[0xff; 40][..30 + (slot as usize % 10)]),
            _ => ClientKey::from_hwaddr(1, &mac),
        };
        new.state = match slot % 5 {
            0 | 1 => LeaseState::Leased,
            2 => LeaseState::Offered,
            3 => LeaseState::Released,
            _ => LeaseState::Reserved,
        };
        new.expires = 1_700_000_000 + slot * 60;
        new.updated = 1_700_000_000;
        t.update(SUPERVISOR_OWNER, &ring, slot, &old, &new, &ctx)
            .expect("template update");
    }
    t.flush().expect("flush template");
    let geo = *t.geometry();
    drop(t);
    let bytes = std::fs::read(&path).expect("read template");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&ring_path);
    Template { bytes, geo }
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let templates = layouts()
            .iter()
            .enumerate()
            .map(|(n, spec)| build_template(dir.path(), n, spec))
            .collect();
        Env {
            dir,
            templates,
            allow_span_escape: std::env::var_os("FUZZ_TABLE_ALLOW_SPAN_ESCAPE").is_some(),
        }
    })
}

fn put_word(bytes: &mut [u8], word: usize, v: u64) {
    if let Some(b) = bytes.get_mut(word * 8..word * 8 + 8) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

fn get_word(bytes: &[u8], word: usize) -> u64 {
    bytes
        .get(word * 8..word * 8 + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .unwrap_or(0)
}

/// A slot image with a valid checksum, its fields taken from `v` and `off`.
fn crafted_slot(v: u64, off: u16, extra: u8) -> [u64; SLOT_WORDS] {
    let b = v.to_le_bytes();
    let mut img = SlotImage::PRISTINE;
    img.version = u64::from(off) | (u64::from(extra) << 16);
    img.state = LeaseState::ALL[usize::from(b[0] & 7)];
    img.expires = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
    img.updated = u32::from(b[5]);
    let hlen = usize::from(b[6] % 17);
    let mut hw = [0u8; 16];
    for (i, x) in hw.iter_mut().enumerate().take(hlen) {
        *x = b[i % 8] ^ (i as u8);
    }
    img.set_hwaddr(b[7], &hw[..hlen]);
    img.key = match (b[0] >> 3) & 3 {
        0 => ClientKey::NONE,
        1 => ClientKey::from_hwaddr(b[7], &hw[..hlen]),
        2 => ClientKey::from_client_id(&b[..usize::from(b[6] % 9)]),
        _ => ClientKey::from_client_id(&[b[1]; 40][..24 + usize::from(b[2] % 16)]),
    };
    img.encode()
}

/// Applies one operation. Regions (`region % 6`): 0 owner records, 1 slots, 2 free bitmap,
/// 3 summary bitmap, 4 client index, 5 a slot's lock byte. Ops (`op % 4`): 0 store the word,
/// 1 xor the word, 2 write a whole slot image with a valid checksum (slot `offset`), 3 copy
/// another index/bitmap word over this one (duplicates, stale entries).
fn apply(bytes: &mut [u8], geo: &Geometry, op: u8, region: u8, offset: u16, value: u64) {
    let slot_words = geo.slot_count as usize * SLOT_WORDS;
    let (start, len) = match region % 6 {
        0 => (geo.owners_off, MAX_OWNERS * OWNER_WORDS),
        1 | 5 => (geo.slots_off, slot_words),
        2 => (geo.bitmap_off, geo.summary_off - geo.bitmap_off),
        3 => (geo.summary_off, geo.index_off - geo.summary_off),
        _ => (geo.index_off, geo.index_capacity),
    };
    if len == 0 {
        return;
    }
    let off = usize::from(offset) % len;
    let word = start + off;
    if region % 6 == 5 {
        // Lock byte of slot `offset`: a slot left locked by a dead writer.
        let w0 = geo.slots_off + (usize::from(offset) % geo.slot_count as usize) * SLOT_WORDS;
        let v = (get_word(bytes, w0) & !0xff) | (value & 0xff);
        put_word(bytes, w0, v);
        return;
    }
    match op % 4 {
        0 => put_word(bytes, word, value),
        1 => put_word(bytes, word, get_word(bytes, word) ^ value),
        2 => {
            let slot = usize::from(offset) % geo.slot_count as usize;
            let img = crafted_slot(value, offset, op >> 2);
            for (i, w) in img.iter().enumerate() {
                put_word(bytes, geo.slots_off + slot * SLOT_WORDS + i, *w);
            }
        }
        _ => {
            let from = start + (value as usize % len);
            let v = get_word(bytes, from);
            put_word(bytes, word, v);
        }
    }
}

fn write_file(path: &PathBuf, bytes: &[u8]) -> bool {
    let _ = std::fs::remove_file(path);
    if std::fs::write(path, bytes).is_err() {
        return false;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).is_ok()
}

/// Every span the server could ask about: each range, the whole table, subnet-like spans cut
/// at addresses that are not multiples of 64, and one given by the input.
fn spans(t: &Table, hint: u64) -> Vec<std::ops::Range<u32>> {
    let mut out: Vec<std::ops::Range<u32>> = Vec::new();
    for r in t.ranges() {
        out.push(t.slot_span(r.spec.first, r.spec.last));
        let mid = r.spec.first + (r.spec.last - r.spec.first) / 3;
        out.push(t.slot_span(r.spec.first, mid));
        out.push(t.slot_span(mid, r.spec.last));
    }
    out.push(0..t.slot_count());
    let n = t.slot_count();
    let x = (hint as u32) % (n + 1);
    let y = ((hint >> 32) as u32) % (n + 1);
    out.push(x.min(y)..x.max(y));
    out
}

fn exercise(t: &Table, ring: &Ring, hint: u64, allow_span_escape: bool) {
    let n = t.slot_count();
    let mut keys = Vec::new();
    for slot in 0..n {
        if let Ok(img) = t.read(slot) {
            if !img.key.is_none() {
                keys.push(img.key);
            }
        }
        let _ = t.lock_owner(slot);
        let _ = t.addr_of_slot(slot);
    }
    keys.push(ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, 1]));
    keys.push(ClientKey::from_client_id(&[0xff; 40][..31]));
    let _ = t.check();
    for span in spans(t, hint) {
        let _ = t.count_free(span.clone());
        for start in [span.start, span.start + (span.end - span.start) / 2, hint as u32] {
            if let Some(s) = t.next_free(span.clone(), start) {
                assert!(
                    allow_span_escape || span.contains(&s),
                    "next_free({span:?}, {start}) = {s}: outside the span"
                );
            }
        }
    }
    for k in &keys {
        if let Some((slot, img)) = t.find_client(k) {
            assert!(slot < n, "find_client returned slot {slot} of {n}");
            assert_eq!(&img.key, k, "find_client returned another client's slot");
        }
    }
    for owner in 1..=u8::MAX {
        let _ = t.recover_owner(owner, if owner % 2 == 0 { Some(ring) } else { None });
    }
    let before = t.repair(SUPERVISOR_OWNER, ring);
    let after = t.check();
    assert!(
        after.corrupt.is_empty() && after.locked.is_empty(),
        "repair left corrupt {:?} / locked {:?} slots (before: {before:?})",
        after.corrupt,
        after.locked
    );
    assert!(
        after.bitmap_mismatch.is_empty(),
        "repair left bitmap mismatches {:?}",
        after.bitmap_mismatch
    );
    for span in spans(t, hint) {
        if let Some(s) = t.next_free(span.clone(), span.start) {
            if span.contains(&s) {
                assert!(t.is_free(s), "next_free gave {s} whose bit is clear");
            }
        }
    }
    for k in &keys {
        let _ = t.find_client(k);
    }
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let path = env.dir.path().join("leases.table");
    let ring_path = env.dir.path().join("fuzz.ring");
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let _ = std::fs::remove_file(&ring_path);
    let Ok(ring) = Ring::open_or_create(&ring_path, SUPERVISOR_OWNER, 16) else {
        return;
    };
    if sel >> 6 == 3 {
        // Whole file from the input (header fuzzing), padded past the header size.
        let mut bytes = rest.to_vec();
        if bytes.len() < HEADER_WORDS * 8 * 2 {
            bytes.resize(HEADER_WORDS * 8 * 2, 0);
        }
        if !write_file(&path, &bytes) {
            return;
        }
        if let Ok(t) = Table::open(&path) {
            if t.slot_count() <= 4096 {
                exercise(&t, &ring, 0, true);
            }
        }
        return;
    }
    let tpl = &env.templates[usize::from(sel) % TEMPLATES];
    let mut bytes = tpl.bytes.clone();
    let mut hint = 0u64;
    for op in rest.chunks_exact(12) {
        let offset = u16::from_le_bytes([op[2], op[3]]);
        let value = u64::from_le_bytes(op[4..12].try_into().unwrap_or([0; 8]));
        hint ^= value;
        apply(&mut bytes, &tpl.geo, op[0], op[1], offset, value);
    }
    if !write_file(&path, &bytes) {
        return;
    }
    let t = Table::open(&path).expect("a table with a valid header must open");
    exercise(&t, &ring, hint, env.allow_span_escape);
});
