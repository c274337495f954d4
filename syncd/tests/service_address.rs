//! The service address in network namespaces this test creates (a `Lab` from the system-test
//! crate: unique names, removed on drop, 198.18.0.0/15 only). The code under test runs in a
//! thread that entered the appliance's namespace (setns affects only the calling thread, and a
//! socket keeps the namespace it was created in); the checks use `ip` from outside.
//!
//! Needs root (namespaces, CAP_NET_ADMIN, CAP_NET_RAW); `PRODHCP_SKIP_SYSTEM_TESTS=1` skips
//! with a printed reason, as every system test does.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_syncd::service_address::{
    Operation, Release, ServiceAddress, ServiceAddressError, GARP_ROUNDS,
};
use prodhcp_systests::lab::{sh, Lab};

const VIP: &str = "198.18.0.10";
const OLD_MAC: &str = "02:00:00:00:00:01";

/// False (skip, with the reason printed) when `PRODHCP_SKIP_SYSTEM_TESTS=1`; panics without
/// root, because the test cannot run.
fn preflight(test: &str) -> bool {
    if std::env::var_os(prodhcp_systests::SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {}=1", prodhcp_systests::SKIP_ENV);
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test}: needs root (network namespaces); run as root or set {}=1",
        prodhcp_systests::SKIP_ENV
    );
    true
}

/// Runs `f` in a thread that entered network namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = Path::new("/run/netns").join(ns);
    thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Two appliances' worth of namespaces on one bridge: `a` (the one taking the address, its
/// `lan0` at 198.18.0.1/24) and `p` (a relay-like peer, `lan0` at 198.18.0.2/24).
fn two_hosts(tag: &str) -> (Lab, String, String) {
    let lab = Lab::new(tag);
    lab.add_bridge("br0");
    lab.add_namespace("a");
    let a = lab.connect("a", "lan0", "br0", Some("198.18.0.1/24"));
    lab.add_namespace("p");
    let p = lab.connect("p", "lan0", "br0", Some("198.18.0.2/24"));
    (lab, a, p)
}

fn vip(prefix: u8) -> ServiceAddress {
    ServiceAddress {
        address: format!("{VIP}/{prefix}").parse().unwrap(),
        interface: "lan0".into(),
    }
}

/// `ip -br addr show dev IF` in namespace `ns`.
fn addresses(ns: &str, ifname: &str) -> String {
    let out = sh(&["ip", "-n", ns, "-br", "addr", "show", "dev", ifname]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MAC of `ifname` in namespace `ns`.
fn mac_of(ns: &str, ifname: &str) -> String {
    let out = sh(&["ip", "-n", ns, "-br", "link", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"))
        .to_string()
}

/// The peer's neighbour entry for the service address (`ip neigh show`).
fn neighbour(ns: &str) -> String {
    let out = sh(&["ip", "-n", ns, "neigh", "show", VIP, "dev", "lan0"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn take_adds_the_address_release_removes_it_and_both_are_idempotent() {
    if !preflight("take_adds_the_address_release_removes_it_and_both_are_idempotent") {
        return;
    }
    let (_lab, a, _p) = two_hosts("viptk");
    let sa = vip(24);
    let listed = format!("{VIP}/24");
    assert!(!addresses(&a, "lan0").contains(&listed));

    in_ns(&a, || assert!(!sa.is_present().unwrap()));
    let first = in_ns(&a, || sa.take()).unwrap();
    assert!(!first.was_present);
    let shown = addresses(&a, "lan0");
    assert!(shown.contains(&listed), "after take: {shown}");
    in_ns(&a, || assert!(sa.is_present().unwrap()));

    // Taking it again is fine (EEXIST) and says so; the address is there once.
    let second = in_ns(&a, || sa.take()).unwrap();
    assert!(second.was_present);
    let shown = addresses(&a, "lan0");
    assert_eq!(shown.matches(&listed).count(), 1, "{shown}");

    assert_eq!(in_ns(&a, || sa.release()).unwrap(), Release::Removed);
    let shown = addresses(&a, "lan0");
    assert!(!shown.contains(VIP), "after release: {shown}");
    assert!(
        shown.contains("198.18.0.1/24"),
        "the primary stays: {shown}"
    );
    in_ns(&a, || assert!(!sa.is_present().unwrap()));

    // Releasing an address that is not there is fine too.
    assert_eq!(in_ns(&a, || sa.release()).unwrap(), Release::WasAbsent);

    // An address added by hand with another prefix length is seen and released all the same.
    sh(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        &format!("{VIP}/32"),
        "dev",
        "lan0",
    ]);
    in_ns(&a, || assert!(sa.is_present().unwrap()));
    assert_eq!(in_ns(&a, || sa.release()).unwrap(), Release::Removed);
    let shown = addresses(&a, "lan0");
    assert!(!shown.contains(VIP), "after releasing the /32: {shown}");
}

#[test]
fn a_slash_32_service_address_outside_the_interface_subnet_works() {
    if !preflight("a_slash_32_service_address_outside_the_interface_subnet_works") {
        return;
    }
    let (_lab, a, _p) = two_hosts("vip32");
    let sa = ServiceAddress {
        address: "198.19.7.7/32".parse().unwrap(),
        interface: "lan0".into(),
    };
    assert!(!in_ns(&a, || sa.take()).unwrap().was_present);
    let shown = addresses(&a, "lan0");
    assert!(shown.contains("198.19.7.7/32"), "{shown}");
    assert_eq!(in_ns(&a, || sa.release()).unwrap(), Release::Removed);
    assert!(!addresses(&a, "lan0").contains("198.19.7.7"));
}

#[test]
fn gratuitous_arp_moves_the_peers_stale_entry_to_our_mac() {
    if !preflight("gratuitous_arp_moves_the_peers_stale_entry_to_our_mac") {
        return;
    }
    let (_lab, a, p) = two_hosts("vipga");
    let our_mac = mac_of(&a, "lan0");
    assert_ne!(our_mac, OLD_MAC);
    // The peer (a relay) still believes the service address is at the old active's MAC.
    sh(&[
        "ip", "-n", &p, "neigh", "replace", VIP, "lladdr", OLD_MAC, "nud", "stale", "dev", "lan0",
    ]);
    let before = neighbour(&p);
    assert!(before.contains(OLD_MAC), "{before}");

    let sa = vip(24);
    let (sent, errors) = in_ns(&a, || {
        let mut taken = sa.take().unwrap();
        assert!(!taken.was_present);
        let garp = &mut taken.garp;
        let first = garp
            .next_deadline()
            .expect("a fresh schedule has a round due");
        assert!(first <= Instant::now(), "the first round is due at once");
        // Drive the schedule as syncd's loop would: wait until the next deadline, send.
        let mut errors = Vec::new();
        let mut rounds = 0;
        let give_up = Instant::now() + Duration::from_secs(5);
        while let Some(at) = garp.next_deadline() {
            assert!(Instant::now() < give_up, "the schedule did not finish");
            thread::sleep(at.saturating_duration_since(Instant::now()));
            match garp.send_due(Instant::now()) {
                Ok(0) => {}
                Ok(n) => {
                    assert_eq!(n, 2, "a round is a request and a reply");
                    rounds += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        assert!(garp.is_done());
        assert_eq!(rounds, GARP_ROUNDS);
        (garp.frames_sent(), errors)
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(sent, 2 * GARP_ROUNDS);

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut now_shown = neighbour(&p);
    while !now_shown.contains(&our_mac) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        now_shown = neighbour(&p);
    }
    assert!(
        now_shown.contains(&our_mac),
        "the peer's entry for {VIP} should name {our_mac}: {now_shown}"
    );
}

#[test]
fn a_missing_or_unsuitable_interface_is_a_clear_error_and_changes_nothing() {
    if !preflight("a_missing_or_unsuitable_interface_is_a_clear_error_and_changes_nothing") {
        return;
    }
    let (_lab, a, _p) = two_hosts("vipif");
    let missing = ServiceAddress {
        address: format!("{VIP}/24").parse().unwrap(),
        interface: "nosuch0".into(),
    };
    for (what, result) in in_ns(&a, || {
        [
            ("take", missing.take().map(|_| ())),
            ("release", missing.release().map(|_| ())),
            ("is_present", missing.is_present().map(|_| ())),
        ]
    }) {
        let e = result.expect_err(what);
        assert!(
            matches!(e, ServiceAddressError::NoSuchInterface { .. }),
            "{what}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("service address {VIP}/24: interface \"nosuch0\" does not exist"),
            "{what}"
        );
    }

    // Loopback has no Ethernet address: refused before the address is added.
    let lo = ServiceAddress {
        address: format!("{VIP}/32").parse().unwrap(),
        interface: "lo".into(),
    };
    let e = in_ns(&a, || lo.take()).expect_err("take on lo");
    assert!(
        matches!(e, ServiceAddressError::NotEthernet { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("not an Ethernet interface"), "{e}");
    assert!(!addresses(&a, "lo").contains(VIP));
    assert!(!addresses(&a, "lan0").contains(VIP));
}

#[test]
fn without_the_capabilities_the_errors_say_which_one_is_missing() {
    if !preflight("without_the_capabilities_the_errors_say_which_one_is_missing") {
        return;
    }
    let (_lab, a, _p) = two_hosts("vipcp");
    let sa = vip(24);
    use caps::{CapSet, Capability};

    // Without CAP_NET_RAW: the GARP socket is refused, before the address is added.
    let e = in_ns(&a, || {
        caps::drop(None, CapSet::Effective, Capability::CAP_NET_RAW).unwrap();
        sa.take()
    })
    .expect_err("take without CAP_NET_RAW");
    assert!(
        matches!(
            e,
            ServiceAddressError::PermissionDenied {
                operation: Operation::OpenPacketSocket,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("needs CAP_NET_RAW"), "{e}");
    assert!(!addresses(&a, "lan0").contains(VIP));

    // Without CAP_NET_ADMIN: adding and removing are refused; looking is allowed.
    let (take, release, present) = in_ns(&a, || {
        caps::drop(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap();
        (sa.take().map(|_| ()), sa.release(), sa.is_present())
    });
    let e = take.expect_err("take without CAP_NET_ADMIN");
    assert!(
        matches!(
            e,
            ServiceAddressError::PermissionDenied {
                operation: Operation::AddAddress,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("needs CAP_NET_ADMIN"), "{e}");
    let e = release.expect_err("release without CAP_NET_ADMIN");
    assert!(
        matches!(
            e,
            ServiceAddressError::PermissionDenied {
                operation: Operation::RemoveAddress,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!present.unwrap());
    assert!(!addresses(&a, "lan0").contains(VIP));
}
