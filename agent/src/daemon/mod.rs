//! `pgpreempt run`: the per-host exporter.
pub mod exposition;
pub mod findings;
pub mod heap;
pub mod server;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{agent::Agent, config::Config};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs until SIGINT or SIGTERM, then detaches everything.
pub fn run(cfg: Config, listen: SocketAddr) -> anyhow::Result<()> {
    // Bind first: a taken port must fail before anything is loaded.
    let listener = server::bind(listen)?;
    let agent = Agent::start(&cfg)?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log::info!(
        "pgpreempt {VERSION}: tracing comm {} ({} processes now), {} programs attached; metrics on http://{addr}/metrics, findings on http://{addr}/findings",
        cfg.comms.join(","),
        agent.tracker.procs.len(),
        agent.attached_programs().len(),
    );
    // The window of /findings starts now.
    let window = Arc::new(Mutex::new(findings::Window::default()));
    window
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Instant::now(), agent.snapshot());
    let agent = Arc::new(Mutex::new(agent));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // What loading parsed and copied is freed now: give it back.
    heap::release();
    let result = rt.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        let pages = server::Pages {
            metrics: {
                let agent = agent.clone();
                Arc::new(move || {
                    let a = agent.lock().unwrap_or_else(|p| p.into_inner());
                    exposition::render(&a.snapshot(), VERSION)
                })
            },
            findings: {
                let agent = agent.clone();
                let window = window.clone();
                Arc::new(move || {
                    let newest = agent.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
                    let w = window.lock().unwrap_or_else(|p| p.into_inner());
                    findings::render(&w, Instant::now(), &newest)
                })
            },
        };
        let server = tokio::spawn(server::serve(listener, pages, stop_rx.clone()));
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
                    ticks += 1;
                    if ticks.is_multiple_of(10) { a.refresh() } else { a.poll() }
                    // Scrapes free what they render; their pages go back.
                    if ticks.is_multiple_of(600) { heap::release(); }
                    let now = Instant::now();
                    let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
                    if w.due(now) { w.push(now, a.snapshot()) }
                }
                _ = sigint.recv() => { log::info!("SIGINT: detaching"); break; }
                _ = sigterm.recv() => { log::info!("SIGTERM: detaching"); break; }
            }
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        anyhow::Ok(())
    });
    // Dropping the agent detaches and unloads every program.
    drop(agent);
    result
}

/// `pgpreempt floor`: only a floor program, until SIGINT or SIGTERM.
pub fn floor(btf: bool) -> anyhow::Result<()> {
    use crate::kernel::probes::Hook;
    let mut probes = crate::kernel::probes::Probes::load(&Config::default())?;
    if btf {
        probes.attach_one("floor_sched_switch_btf", Hook::Btf("sched_switch"))?;
    } else {
        let hook = Hook::Tracepoint("sched", "sched_switch", true);
        probes.attach_one("floor_sched_switch", hook)?;
    }
    log::info!("benchmark floor attached to sched_switch (tp_btf: {btf})");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(probes);
    Ok(())
}
