//! SIGHUP reloads the configuration in place: same PID, `config_generation` + 1 once every
//! worker has applied it (with the time), a changed option shows in the very next OFFER of
//! every worker; a bad file keeps the old configuration serving and `last_reload.ok` turns
//! false.

use std::net::Ipv4Addr;

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::{opt, test_mac, MessageType};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};

fn offered_routers(agent: &TestClient, n: u32) -> Option<Vec<Ipv4Addr>> {
    let ex = Extras {
        params: Some(vec![opt::ROUTERS]),
        ..Default::default()
    };
    let r = agent
        .discover(&Identity::mac(test_mac(0x40, n)), &ex)
        .expect("OFFER");
    assert_eq!(r.msg_type, Some(MessageType::Offer));
    r.option_addrs(opt::ROUTERS)
}

#[test]
fn sighup_applies_a_good_config_and_keeps_serving_on_a_bad_one() {
    if !preflight("reload", &[]) {
        return;
    }
    let t = Topology::new("reload");
    let mut cfg = t.standard_config();
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let pid = d.pid();
    let gen0 = d.status()["config_generation"]
        .as_u64()
        .expect("config_generation");
    assert_eq!(offered_routers(&agent, 1), Some(vec![RELAY1_IP]));

    // A good change.
    let new_router = Ipv4Addr::new(198, 18, 1, 254);
    for s in cfg.subnets.iter_mut().filter(|s| s.network == NET1) {
        s.options = vec![("routers".into(), new_router.to_string())];
    }
    cfg.write(d.config_path());
    let st = d.reload();
    assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)), "{st}");
    assert_eq!(st["config_generation"].as_u64(), Some(gen0 + 1), "{st}");
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    assert_eq!(st["last_reload"]["pending"], false, "{st}");
    assert!(
        st["last_reload"]["applied_at"].as_u64().is_some()
            && st["last_reload"]["applied_in_ms"].as_u64().is_some(),
        "a finished reload says when every worker applied it: {st}"
    );
    assert!(
        st["last_reload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("applied by every worker")),
        "{st}"
    );
    assert_eq!(d.pid(), pid);
    // Done means done: every worker (clients are spread over them by MAC) offers the new
    // router right away, with no wait or retry.
    for n in 2..12 {
        assert_eq!(
            offered_routers(&agent, n),
            Some(vec![new_router]),
            "client {n}"
        );
    }

    // A bad file: the running configuration stays.
    std::fs::write(
        d.config_path(),
        "(\n    workers: 2,\n    subnets: [ (network: \"not a network\") ],\n)\n",
    )
    .expect("write bad config");
    let st = d.reload();
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    assert!(
        st["last_reload"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a failed reload must say why: {st}"
    );
    assert_eq!(st["config_generation"].as_u64(), Some(gen0 + 1), "{st}");
    assert!(
        d.process().is_running(),
        "prodhcpd died on a bad reload: {}",
        d.process().stderr()
    );
    assert_eq!(d.pid(), pid);
    assert_eq!(offered_routers(&agent, 30), Some(vec![new_router]));
}

#[test]
fn a_reload_waits_for_a_stopped_worker_and_completes_after_its_restart() {
    if !preflight("reload_stopped", &[]) {
        return;
    }
    let t = Topology::new("reloadst");
    let mut cfg = t.standard_config();
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let gen0 = d.status()["config_generation"]
        .as_u64()
        .expect("generation");
    let stopped = d.worker_pids()[0];
    let pid = nix::unistd::Pid::from_raw(stopped as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");

    let new_router = Ipv4Addr::new(198, 18, 1, 253);
    for s in cfg.subnets.iter_mut().filter(|s| s.network == NET1) {
        s.options = vec![("routers".into(), new_router.to_string())];
    }
    cfg.write(d.config_path());
    assert!(d.signal(nix::sys::signal::Signal::SIGHUP));
    // While the stopped worker has not answered, the reload is pending, not done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let st = d.status();
        if st["last_reload"]["pending"] == true {
            assert_eq!(st["config_generation"].as_u64(), Some(gen0), "{st}");
            assert_eq!(st["last_reload"]["ok"], false, "{st}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never pending: {st}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The heartbeat check kills the stopped worker; its replacement starts with the new
    // configuration, and then the reload is done.
    let st = d.reload_wait();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    assert_eq!(st["config_generation"].as_u64(), Some(gen0 + 1), "{st}");
    assert!(!d.worker_pids().contains(&stopped));
    for n in 40..50 {
        assert_eq!(
            offered_routers(&agent, n),
            Some(vec![new_router]),
            "client {n}"
        );
    }
}

#[test]
fn back_to_back_reloads_end_with_the_last_configuration_everywhere() {
    if !preflight("reload_twice", &[]) {
        return;
    }
    let t = Topology::new("reload2x");
    let mut cfg = t.standard_config();
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let gen0 = d.status()["config_generation"]
        .as_u64()
        .expect("generation");
    for last in [251u8, 252] {
        let router = Ipv4Addr::new(198, 18, 1, last);
        for s in cfg.subnets.iter_mut().filter(|s| s.network == NET1) {
            s.options = vec![("routers".into(), router.to_string())];
        }
        cfg.write(d.config_path());
        assert!(d.signal(nix::sys::signal::Signal::SIGHUP));
        // Give the supervisor the signal before the file changes again (it reads the file
        // when it handles the signal): wait until it has acted on it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while d.status()["last_reload"]["message"]
            .as_str()
            .is_some_and(|m| !m.contains(&format!("generation {}", gen0 + u64::from(last - 250))))
        {
            assert!(std::time::Instant::now() < deadline, "SIGHUP not handled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let st = d.reload_wait();
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    assert_eq!(st["config_generation"].as_u64(), Some(gen0 + 2), "{st}");
    for n in 60..70 {
        assert_eq!(
            offered_routers(&agent, n),
            Some(vec![Ipv4Addr::new(198, 18, 1, 252)]),
            "client {n}"
        );
    }
}
